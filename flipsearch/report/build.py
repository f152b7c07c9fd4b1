"""`flipsearch report`: from a sweep's output directory to fronts, tables, plots and files.

`build_report(out)` reads the rows (`flipsearch.results.read_results`) and `sweep.json`,
and computes everything in memory — per scenario the Pareto front over the objectives
(failed/diverged rows excluded, constraints respected), M1's accuracy, the `ce` baseline
and noise floor, the hypervolume after each trial, the recommendation and its front plot;
across scenarios the paper-1 table and the convergence plot. Only `Report.write` touches
the disk, so a bad objective or an empty directory leaves nothing behind.

Files (`Report.files`): index.html (self-contained: plots embedded as data URIs),
summary.md, front.parquet (every front point of every scenario, all columns, plus
`scenario`), front-<scenario>.png, hypervolume.png.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..metrics import is_known_metric
from ..objectives import DEFAULT_OBJECTIVES, Constraint, Objective, parse_constraint, parse_objective
from ..results import read_results
from ..storage import Storage
from .baselines import Band, ce_baseline, m1_value, noise_floor, noise_metrics
from .configs import STD_SUFFIX, aggregate_seeds, hparams_of, metric_columns, scenario_keys
from .pareto import default_reference, hypervolume_history, pareto_front
from .plots import FrontPlotData, front_png, hypervolume_png, method_colors
from .recommend import Recommendation, feasible_mask, recommend, rule_text
from .tables import front_listing, paper1_table, table_metrics

SWEEP_FILE = "sweep.json"
REPORT_SUBDIR = "report"
MAX_OBJECTIVES = 3


@dataclass
class ScenarioReport:
    """One scenario (dataset × arrangement × model) of the sweep."""

    key: str
    dataset: str
    arrangement: str
    model: str
    counts: dict[str, int]
    front: pd.DataFrame                       # the front's rows, every column
    listing: pd.DataFrame                     # `tables.front_listing` of the front
    m1: dict[str, float]                      # objective metric -> M1's value
    noise: dict[str, Band]                    # nfr-like metric -> ce noise band
    baseline: pd.Series | None                # the ce baseline's seed-mean row
    hypervolume: list[float]
    reference: list[float]
    recommendation: Recommendation
    png: bytes

    @property
    def n_trials(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def png_name(self) -> str:
        return f"front-{self.key}.png"


@dataclass
class Report:
    out: str
    name: str
    objectives: list[Objective]
    constraints: list[Constraint]
    scenarios: list[ScenarioReport]
    table: pd.DataFrame
    hypervolume_png: bytes
    counts: dict[str, int]
    searched: dict[str, Any] = field(default_factory=dict)
    report_dir: str = ""

    HYPERVOLUME_PNG = "hypervolume.png"

    @property
    def rule(self) -> str:
        return rule_text(self.objectives, self.constraints)

    def front_frame(self) -> pd.DataFrame:
        """Every front point of every scenario, all columns, `scenario` first."""
        parts = [s.front.assign(scenario=s.key) for s in self.scenarios if len(s.front)]
        if not parts:
            return pd.DataFrame({"scenario": pd.Series(dtype=str)})
        df = pd.concat(parts, ignore_index=True, sort=False)
        return df[["scenario"] + [c for c in df.columns if c != "scenario"]]

    def files(self) -> dict[str, bytes]:
        """Name -> content of every file the report writes."""
        from .html import render_html
        from .render import render_markdown

        out = {s.png_name: s.png for s in self.scenarios}
        out[self.HYPERVOLUME_PNG] = self.hypervolume_png
        out["front.parquet"] = _parquet_bytes(self.front_frame())
        out["summary.md"] = render_markdown(self).encode()
        out["index.html"] = render_html(self).encode()
        return out

    def write(self, report_dir: str) -> list[str]:
        """Write `files()` under `report_dir` (a path or URI); returns their paths."""
        files = self.files()                                 # render everything before writing
        storage = Storage.open(report_dir)
        storage.makedirs()
        for name, data in files.items():
            storage.write_bytes(data, name)
        self.report_dir = storage.uri
        return [storage.path(n) for n in files]

    def to_json(self) -> dict:
        """The report as plain JSON-able data (NaN -> null)."""
        return _jsonable({
            "sweep": self.name, "out": self.out, "report_dir": self.report_dir,
            "objectives": [str(o) for o in self.objectives], "constraints": [str(c) for c in self.constraints],
            "rule": self.rule, "counts": self.counts,
            "scenarios": [_scenario_json(s) for s in self.scenarios],
            "table": [_table_row_json(r, self.objectives) for _, r in self.table.iterrows()],
        })


# ---------------------------------------------------------------------------- build


def read_sweep_meta(out: Storage) -> dict:
    """sweep.json as a dict ({} when absent, e.g. rows copied without it)."""
    if not out.exists(SWEEP_FILE):
        return {}
    try:
        return json.loads(out.read_bytes(SWEEP_FILE))
    except (ValueError, OSError) as e:
        raise UsageError(f"{out.uri}/{SWEEP_FILE} is not valid JSON ({e}); restore it or pass "
                         "--objective/--constraint explicitly") from None


def _objectives(given: Iterable[Objective | str] | None, meta: dict) -> list[Objective]:
    objs = [parse_objective(o) for o in (given or ())] or [parse_objective(o) for o in meta.get("objectives") or ()] \
        or list(DEFAULT_OBJECTIVES)
    if len(objs) > MAX_OBJECTIVES:
        raise UsageError(f"{len(objs)} objectives given; a report plots one, two or three — "
                         "pick them with --objective METRIC:max|min")
    if len({o.metric for o in objs}) != len(objs):
        raise UsageError(f"objectives {', '.join(map(str, objs))} name a metric twice; give each metric once")
    return objs


def _check_columns(df: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> None:
    for what, metrics in (("objective", [o.metric for o in objectives]), ("constraint", [c.metric for c in constraints])):
        missing = [m for m in metrics if m not in df.columns]
        if missing:
            have = [c for c in df.columns if is_known_metric(str(c))]
            hint = " (critical_* metrics need a sweep with scenario.critical_classes)" \
                if any(m.startswith("critical_") for m in missing) else ""
            raise UsageError(f"the sweep has no {what} metric {', '.join(map(repr, missing))}{hint}; "
                             f"metrics present: {', '.join(have) or 'none'}")


def build_report(out: str, objectives: Iterable[Objective | str] | None = None,
                 constraints: Iterable[Constraint | str] | None = None,
                 progress=None) -> Report:
    """Compute the whole report of the sweep in `out` (a path or URI), writing nothing.

    `objectives` / `constraints` default to the sweep's (sweep.json); given ones replace
    them. `progress(step, done, total)` is told how far it is.
    Raises a one-line `UsageError` for an empty or non-sweep directory or a metric the
    results do not have."""
    storage = Storage.open(out)
    df = read_results(storage)                                  # UsageError when there is no sweep
    meta = read_sweep_meta(storage)
    objs = _objectives(objectives, meta)
    cons = [parse_constraint(c) for c in (constraints if constraints else meta.get("constraints") or ())]
    _check_columns(df, objs, cons)
    if "status" not in df.columns:
        df = df.assign(status="ok")
    if "method" not in df.columns:
        raise UsageError(f"{storage.uri}: the result rows have no 'method' column; is this a flipsearch sweep?")
    keys = scenario_keys(df)
    order = list(dict.fromkeys([k for k in meta.get("scenarios") or () if (keys == k).any()] + sorted(set(keys))))
    searched = meta.get("methods") or {}
    colors = method_colors(list(searched) + sorted(set(df["method"].astype(str))))
    scenarios = [_scenario(key, df[keys == key], objs, cons, searched, colors) for key in order]
    table = paper1_table(df, objs, cons, searched, order)
    hv = hypervolume_png({s.key: s.hypervolume for s in scenarios}, objs)
    counts = {k: int(v) for k, v in df["status"].value_counts().items()}
    return Report(storage.uri, str(meta.get("name") or storage.uri.rstrip("/").rsplit("/", 1)[-1]), objs, cons,
                  scenarios, table, hv, counts, searched)


def _scenario(key: str, rows: pd.DataFrame, objectives, constraints, searched, colors) -> ScenarioReport:
    first = rows.iloc[0]
    ok = rows[rows["status"] == "ok"]
    front = pareto_front(rows, objectives, constraints)
    configs = aggregate_seeds(rows)
    baseline = ce_baseline(configs)
    metrics = [o.metric for o in objectives]
    m1 = {m: v for m in metrics if (v := m1_value(ok, m)) is not None}
    noise = {m: b for m in noise_metrics(metrics + ["nfr"]) if (b := noise_floor(ok, baseline, m)) is not None}
    ordered = rows.sort_values("trial_number", kind="stable") if "trial_number" in rows.columns else rows
    reference = default_reference(rows, objectives)
    hv = hypervolume_history(ordered, objectives, reference, constraints=constraints)
    rec = recommend(key, configs, objectives, constraints)
    title = f"{first.get('dataset')} / {first.get('arrangement')} / {first.get('model')}"
    plot = FrontPlotData(title, ok, front.index, feasible_mask(ok, constraints), objectives, constraints, m1,
                         {m: b for m, b in noise.items() if m in metrics}, baseline, colors, len(rows))
    extra = [m for m in ("accuracy_old", "accuracy_gain", "br", "bec", "nfr") if m in rows.columns]
    extra += [c.metric for c in constraints]
    counts = {k: int(v) for k, v in rows["status"].value_counts().items()}
    return ScenarioReport(key, str(first.get("dataset")), str(first.get("arrangement")), str(first.get("model")),
                          counts, front, front_listing(front, objectives, extra, searched), m1, noise, baseline,
                          [float(h) for h in hv], [float(r) for r in reference], rec, front_png(plot))


# ----------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is pd.NA:
        return None
    return str(value)


def _metrics_of(row: pd.Series, with_std: bool = False) -> dict:
    out = {}
    for m in metric_columns(row.to_frame().T):
        v = row[m]
        if pd.isna(v):
            continue
        if with_std:
            out[m] = {"mean": float(v), "std": float(row.get(m + STD_SUFFIX, float("nan")))}
        else:
            out[m] = float(v)
    return out


def _scenario_json(s: ScenarioReport) -> dict:
    rec = s.recommendation
    point = rec.point
    rec_json = {"feasible": rec.feasible, "rule": rec.rule, "binding": [str(c) for c in rec.binding],
                "command": rec.command, "notes": rec.notes}
    if point is not None:
        rec_json.update(method=point["method"], hparams=hparams_of(point), seed=point.get("seed"),
                        seeds=point.get("seeds"), n_runs=point.get("n_runs"), trial_number=point.get("trial_number"),
                        metrics=_metrics_of(point, with_std=True))
    return {
        "scenario": s.key, "dataset": s.dataset, "arrangement": s.arrangement, "model": s.model,
        "trials": s.n_trials, "counts": s.counts, "m1": s.m1,
        "noise_floor": {m: b.to_json() for m, b in s.noise.items()},
        "baseline": None if s.baseline is None else {"hparams": hparams_of(s.baseline),
                                                     "metrics": _metrics_of(s.baseline, with_std=True)},
        "hypervolume": {"final": s.hypervolume[-1] if s.hypervolume else 0.0, "reference": s.reference,
                        "history": s.hypervolume},
        "front": [{"method": r["method"], "seed": r.get("seed"), "trial_number": r.get("trial_number"),
                   "status": r.get("status"), "hparams": hparams_of(r), "metrics": _metrics_of(r)}
                  for _, r in s.front.iterrows()],
        "recommendation": rec_json,
    }


def _table_row_json(r: pd.Series, objectives) -> dict:
    out = {k: r[k] for k in ("scenario", "dataset", "arrangement", "model", "method", "feasible", "n_runs",
                             "seeds", "hparams", "trial_number") if k in r.index}
    out["metrics"] = {m: {"mean": r[m], "std": r[m + STD_SUFFIX]} for m in table_metrics(objectives) if m in r.index}
    return out


# -------------------------------------------------------------------------- parquet


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    """`df` as Parquet. Object columns mixing types (a hyperparameter that is a bool for one
    method and missing for another) are written as their text, missing stays null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            try:
                pa.array(df[c], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def default_report_dir(out: str) -> str:
    """Where `flipsearch report OUT` writes by default: OUT/report (a path or URI)."""
    return Storage.open(out).sub(REPORT_SUBDIR).uri
