"""`flipsearch report`: from a sweep's output directory to fronts, tables, plots and files.

`build_report(out)` reads the rows (`flipsearch.results.read_results`), `sweep.json` and,
when present, `scheduler.json`, and computes everything in memory. Selection happens on
VALIDATION metrics only (`selection.selection_frame`): per scenario the Pareto front over
the objectives (ok search trials; stopped, failed, diverged and replicate rows never enter),
feasibility under the constraints, the hypervolume after each trial, the recommendation and
the paper-1 table's operating points. Then the report shows TEST values: for every front
point its test values next to its validation ones, mean ± std and the 95 % interval over
its seeds (the trial and its replicates), the `ce` baseline and the noise floor, and the
optimism gap (what choosing on test would have claimed). With `flips` it re-runs the
recommendation and the `ce` baseline of each scenario and audits their flips
(`flips.compare_flips`). Only `Report.write` touches the report directory, so a bad
objective or an empty directory leaves nothing behind.

Files (`Report.files`): index.html (self-contained: plotly.js inlined once, plots and
thumbnails embedded), summary.md, front.parquet (every front point of every scenario, all
columns, plus `scenario`), trials.csv (every row of the sweep), front-<scenario>.png,
hypervolume.png.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..metrics import is_known_metric
from ..objectives import DEFAULT_OBJECTIVES, Constraint, Objective, parse_constraint, parse_objective
from ..results import read_results
from ..storage import Storage
from .baselines import Band, Baseline, find_baseline, m1_value, noise_floor, noise_metrics
from .configs import aggregate_seeds, config_keys, hparams_of, scenario_keys, searched_or_changed
from .early import ConvergenceCurve, EarlyStopping, convergence, early_stopping, read_scheduler_state
from .flips import FlipComparison, compare_flips
from .optimism import Optimism, optimism
from .pareto import default_reference, hypervolume_history, pareto_front
from .plots import FrontPlotData, Panel, convergence_png, front_png, method_colors
from .recommend import Recommendation, feasible_mask, recommend, rule_text
from .selection import (finishing_order, is_replicate, missing_selection, reported_frame, runs_with_replicates,
                        search_mask, selection_frame)
from .stats import Stat, stats_of
from .tables import config_runs, paper1_table, table_metrics

SWEEP_FILE = "sweep.json"
REPORT_SUBDIR = "report"
ROWS_FILE = "trials.csv"
MAX_OBJECTIVES = 3
# Test metrics every front point, baseline and recommendation reports (with the objectives
# and constraints), when the rows have them.
REPORTED = ("accuracy_old", "accuracy_new", "accuracy_gain", "nfr", "br", "bec", "accuracy_ratio")

Progress = Callable[[str, int, int], None]


@dataclass
class FrontPoint:
    """One point of a validation-chosen front: the trial's row, its validation and test
    values, and its runs (the trial and its replicates, test values) with their statistics."""

    index: Any
    row: pd.Series                 # every column, as read
    val: pd.Series                 # validation values under the plain names
    test: pd.Series                # test values under the plain names
    runs: pd.DataFrame             # test values of the trial and its replicates
    stats: dict[str, Stat]
    searched_hparams: dict[str, Any]
    within_noise_of: list[str] = field(default_factory=list)   # dominating points it is not told apart from
    beyond_noise_of: list[str] = field(default_factory=list)   # dominating points beyond the seed spread
    kept: bool | None = None       # whether OUT/models/ holds its M2 (None: the sweep keeps none)

    @property
    def label(self) -> str:
        return f"#{_int(self.row.get('trial_number'))}"

    @property
    def n_seeds(self) -> int:
        return len(self.runs)


@dataclass
class ScenarioReport:
    """One scenario (dataset × arrangement × model) of the sweep."""

    key: str
    dataset: str
    arrangement: str
    model: str
    counts: dict[str, int]
    rows: pd.DataFrame             # every row of the scenario, as read
    val: pd.DataFrame              # the same rows, validation values under the plain names
    test: pd.DataFrame             # the same rows, test values under the plain names
    front: pd.DataFrame            # the front's rows, every column (validation-chosen)
    points: list[FrontPoint]
    m1: dict[str, float]           # objective metric -> M1's value (test)
    m1_val: dict[str, float]
    baseline: Baseline | None
    noise: dict[str, Band]         # nfr-like metric -> ce noise band (test, over seeds)
    hypervolume: list[float]       # validation hypervolume after each search trial, finishing order
    reference: list[float]
    curve: ConvergenceCurve
    recommendation: Recommendation
    rec_runs: pd.DataFrame         # test values of the recommended configuration's runs
    rec_stats: dict[str, Stat]
    optimism: Optimism
    costs: pd.DataFrame            # per method: trials, timed, median seconds
    plot: FrontPlotData
    notes: list[str] = field(default_factory=list)
    flips: FlipComparison | None = None
    _png: bytes | None = None

    @property
    def png(self) -> bytes:
        """The front plot as PNG (drawn on first use: only the files need it)."""
        if self._png is None:
            self._png = front_png(self.plot)
        return self._png

    @property
    def n_trials(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def png_name(self) -> str:
        return f"front-{safe_name(self.key)}.png"

    @property
    def n_search(self) -> int:
        return int((~is_replicate(self.rows)).sum())


@dataclass
class Report:
    out: str
    name: str
    objectives: list[Objective]
    constraints: list[Constraint]
    scenarios: list[ScenarioReport]
    table: pd.DataFrame
    counts: dict[str, int]
    searched: dict[str, Any] = field(default_factory=dict)
    report_dir: str = ""
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    early: EarlyStopping | None = None
    reported: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    flips_requested: bool = True

    HYPERVOLUME_PNG = "hypervolume.png"

    @property
    def hypervolume_png(self) -> bytes:
        """Validation hypervolume against cumulative update epochs, every scenario (drawn on first use)."""
        if getattr(self, "_hv_png", None) is None:
            self._hv_png = convergence_png(
                {s.key: (s.curve.epochs, s.curve.hypervolume) for s in self.scenarios},
                "cumulative update epochs (search trials in finishing order)",
                "Validation hypervolume against compute: " + " × ".join(str(o) for o in self.objectives))
        return self._hv_png

    @property
    def rule(self) -> str:
        return rule_text(self.objectives, self.constraints) + " (on validation metrics)"

    @property
    def n_replicates(self) -> int:
        return int(is_replicate(self.rows).sum()) if len(self.rows) else 0

    @property
    def journal(self) -> str:
        return Storage.open(self.out).path("optuna.journal")

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
        out[ROWS_FILE] = self.rows.to_csv(index=False).encode()
        out["summary.md"] = render_markdown(self).encode()
        out["index.html"] = render_html(self).encode()
        return out

    def write(self, report_dir: str) -> list[str]:
        """Write `files()` under `report_dir` (a path or URI); returns their paths."""
        storage = Storage.open(report_dir)
        self.report_dir = storage.uri                        # the page links to files relative to it
        files = self.files()                                 # render everything before writing
        storage.makedirs()
        for name, data in files.items():
            storage.write_bytes(data, name)
        return [storage.path(n) for n in files]

    def to_json(self) -> dict:
        """The report as plain JSON-able data (NaN -> null)."""
        return _jsonable({
            "sweep": self.name, "out": self.out, "report_dir": self.report_dir,
            "selection": "validation", "reported": "test",
            "objectives": [str(o) for o in self.objectives], "constraints": [str(c) for c in self.constraints],
            "rule": self.rule, "counts": self.counts, "replicate_runs": self.n_replicates,
            "reported_metrics": self.reported,
            "journal": self.journal, "dashboard_command": f"optuna-dashboard {self.journal}",
            "rows_file": ROWS_FILE,
            "early_stopping": self.early.to_json() if self.early else None,
            "scenarios": [_scenario_json(self, s) for s in self.scenarios],
            "table": [_table_row_json(r, self.objectives, self.constraints) for _, r in self.table.iterrows()],
        })


# ---------------------------------------------------------------------------- build


def safe_name(text: str) -> str:
    """A file-name-safe form of a scenario key (letters, digits, . _ - only)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(text))


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
    """Every objective and constraint needs its test column and, since fronts are chosen on
    validation, validation values in some search row."""
    for what, metrics in (("objective", [o.metric for o in objectives]), ("constraint", [c.metric for c in constraints])):
        missing = [m for m in metrics if m not in df.columns]
        if missing:
            have = [c for c in df.columns if is_known_metric(str(c)) and not str(c).startswith("val_")]
            hint = " (critical_* metrics need a sweep with scenario.critical_classes)" \
                if any(m.startswith("critical_") for m in missing) else ""
            raise UsageError(f"the sweep has no {what} metric {', '.join(map(repr, missing))}{hint}; "
                             f"metrics present: {', '.join(have) or 'none'}")
        if (df["status"] == "ok").any():
            no_val = missing_selection(df, metrics)
            if no_val:
                raise UsageError(f"no search trial has a validation value of {what} "
                                 f"{', '.join(repr(m) for m in no_val)} ({', '.join('val_' + m for m in no_val)}); "
                                 "a report chooses fronts on validation metrics only — pick another "
                                 f"{what} or rerun the sweep with a validation split")


def build_report(out: str, objectives: Iterable[Objective | str] | None = None,
                 constraints: Iterable[Constraint | str] | None = None,
                 progress: Progress | None = None, flips: bool = True) -> Report:
    """Compute the whole report of the sweep in `out` (a path or URI), writing nothing in
    the report directory (with `flips`, re-running two trials per scenario may add a missing
    reference model to `OUT/references`).

    `objectives` / `constraints` default to the sweep's (sweep.json); given ones replace
    them. `progress(step, done, total)` is told each step (reading, each scenario, each
    flip re-run with its expected cost). `flips=False` skips the re-runs.
    Raises a one-line `UsageError` for an empty or non-sweep directory or a metric the
    results do not have."""
    tell = progress or (lambda step, done, total: None)
    storage = Storage.open(out)
    df = read_results(storage)                                  # UsageError when there is no sweep
    meta = read_sweep_meta(storage)
    state = read_scheduler_state(storage)
    objs = _objectives(objectives, meta)
    cons = [parse_constraint(c) for c in (constraints if constraints else meta.get("constraints") or ())]
    if "status" not in df.columns:
        df = df.assign(status="ok")
    if "method" not in df.columns:
        raise UsageError(f"{storage.uri}: the result rows have no 'method' column; is this a flipsearch sweep?")
    _check_columns(df, objs, cons)
    reported = [m for m in dict.fromkeys([o.metric for o in objs] + [c.metric for c in cons] + list(REPORTED))
                if m in df.columns]
    keys = scenario_keys(df)
    order = list(dict.fromkeys([k for k in meta.get("scenarios") or () if (keys == k).any()] + sorted(set(keys))))
    searched = meta.get("methods") or {}
    colors = method_colors(list(searched) + sorted(set(df["method"].astype(str))))
    steps = len(order) * (2 if flips else 1) + 1
    tell(f"read {len(df)} rows in {len(order)} scenario{'s' if len(order) != 1 else ''}"
         + ("; the flip comparison will re-run 2 trials per scenario" if flips else ""), 0, steps)
    scenarios = []
    for i, key in enumerate(order):
        tell(f"scenario {key}", i + 1, steps)
        scenarios.append(_scenario(key, df[keys == key], objs, cons, searched, colors, reported))
    _mark_kept(storage, meta, scenarios)
    if flips:
        for i, s in enumerate(scenarios):
            if s.recommendation.point is None:
                continue
            cost = _expected_seconds(s)
            tell(f"flips {s.key}: the recommendation against the ce baseline (a kept model is loaded, "
                 f"a side without one re-run: at most about {cost:.0f} s)",
                 len(order) + i + 1, steps)
            s.flips = compare_flips(storage.uri, s.key, s.recommendation.point, s.test,
                                    threads=int(float((meta.get("search") or {}).get("cpus_per_trial")
                                                      or meta.get("cpus_per_trial") or 1)))
    tell("tables and plots", steps, steps)
    table = paper1_table(df, objs, cons, searched, order)
    counts = {k: int(v) for k, v in df["status"].value_counts().items()}
    search_rows = df[~is_replicate(df)]
    early = early_stopping(search_rows, state, keys[~is_replicate(df)])
    return Report(storage.uri, str(meta.get("name") or storage.uri.rstrip("/").rsplit("/", 1)[-1]), objs, cons,
                  scenarios, table, counts, searched, rows=df, early=early, reported=reported, meta=meta,
                  flips_requested=flips)


def _mark_kept(storage: Storage, meta: dict, scenarios: list[ScenarioReport]) -> None:
    """Which front points have a kept model; a note names those without one (a report on
    other objectives or constraints than the sweep kept its front for)."""
    from ..kept_models import kept_uids

    keep = meta.get("keep") or "none"
    if keep == "none":
        return
    kept = kept_uids(storage)
    for s in scenarios:
        for p in s.points:
            p.kept = str(p.row.get("trial_uid")) in kept
        missing = [p.label for p in s.points if not p.kept]
        if missing:
            what = (f"the front of {', '.join(meta.get('objectives') or [])}"
                    + (f" under {', '.join(meta['constraints'])}" if meta.get("constraints") else "")
                    if keep == "front" else "every finished trial")
            s.notes.append(f"front point{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                           f"{'have' if len(missing) > 1 else 'has'} no kept model (the sweep kept {what}); "
                           "`flipsearch export` cannot ship it: rerun it with its command and --save-model")


def _expected_seconds(s: ScenarioReport) -> float:
    """What the two flip re-runs should take: twice the median update time of the scenario's
    trials (M1 and the other references are cache hits), plus a little for the audit."""
    sec = s.rows["seconds_update"].to_numpy(dtype=float, na_value=np.nan) if "seconds_update" in s.rows \
        else np.array([np.nan])
    med = float(np.nanmedian(sec)) if np.isfinite(sec).any() else 5.0
    return 2 * med + 2


def _int(v) -> str:
    return "" if v is None or pd.isna(v) else str(int(v))


def _scenario(key: str, rows: pd.DataFrame, objectives, constraints, searched, colors, reported) -> ScenarioReport:
    first = rows.iloc[0]
    val, test = selection_frame(rows), reported_frame(rows)
    search = search_mask(rows)
    sval, stest = val[search], test[search]
    notes = []
    no_val = missing_selection(rows, [o.metric for o in objectives])
    if no_val:
        notes.append(f"no search trial of this scenario has validation values of {', '.join(no_val)}, "
                     "so its front is empty")
    # --- selection: validation values only
    front_sel = pareto_front(sval, objectives, constraints) if len(sval) else sval
    reference = default_reference(sval, objectives)
    ordered = finishing_order(val[~is_replicate(rows)])
    hv = hypervolume_history(ordered, objectives, reference, constraints=constraints)
    configs = aggregate_seeds(sval)
    rec = recommend(key, configs, objectives, constraints)
    # --- reporting: test values of what validation chose
    baseline = find_baseline(test, val, str(first.get("study")) if "study" in rows else None, reported)
    metrics = [o.metric for o in objectives]
    points = []
    for idx in front_sel.index:
        runs = test.loc[runs_with_replicates(rows, pd.Index([idx]))]
        points.append(FrontPoint(idx, rows.loc[idx], val.loc[idx], test.loc[idx], runs, stats_of(runs, reported),
                                 searched_or_changed(rows.loc[idx], searched)))
    _mark_noise(points, baseline, objectives)
    rec_runs = test.iloc[0:0]
    if rec.point is not None:
        rec_runs = test.loc[config_runs(rows, config_keys(sval), rec.point)]
    m1 = {m: v for m in metrics if (v := m1_value(stest, m)) is not None}
    m1_val = {m: v for m in metrics if (v := m1_value(sval, m)) is not None}
    noise = {m: b for m in noise_metrics(metrics + ["nfr"]) if (b := noise_floor(baseline, m)) is not None}
    opt = optimism(sval, stest, front_sel.index, objectives, constraints, reference)
    claimed = pareto_front(stest, objectives, constraints).index if len(stest) else pd.Index([])
    title = f"{first.get('dataset')} / {first.get('arrangement')} / {first.get('model')}"
    point_stats = {p.index: p.stats for p in points if p.n_seeds > 1}
    panels = [
        Panel("validation (chooses the front)", sval, front_sel.index, feasible_mask(sval, constraints), m1_val,
              baseline.mean_row("val") if baseline else None, baseline.val if baseline else {}),
        Panel("test (reported)", stest, front_sel.index, feasible_mask(stest, constraints), m1,
              baseline.mean_row("test") if baseline else None, baseline.test if baseline else {},
              {m: b for m, b in noise.items() if m in metrics}, claimed, point_stats),
    ]
    plot = FrontPlotData(title, panels, objectives, constraints, colors, len(rows))
    counts = {k: int(v) for k, v in rows["status"].value_counts().items()}
    curve = convergence(ordered, hv)
    return ScenarioReport(key, str(first.get("dataset")), str(first.get("arrangement")), str(first.get("model")),
                          counts, rows, val, test, rows.loc[front_sel.index], points, m1, m1_val, baseline, noise,
                          [float(h) for h in hv], [float(r) for r in reference], curve, rec, rec_runs,
                          stats_of(rec_runs, reported), opt, cost_table(rows[~is_replicate(rows)]), plot, notes)


def _dominates(a: dict[str, float], b: dict[str, float], objectives) -> bool:
    better = False
    for o in objectives:
        x, y = a.get(o.metric, math.nan), b.get(o.metric, math.nan)
        if not (math.isfinite(x) and math.isfinite(y)):
            return False
        if (x < y) if o.direction == "max" else (x > y):
            return False
        better |= x != y
    return better


def _mark_noise(points: list[FrontPoint], baseline: Baseline | None, objectives) -> None:
    """Per front point: the points (and the ce baseline) whose seed mean dominates its seed
    mean on test, split into those whose 95 % intervals overlap it in every objective
    ("within noise": the seeds cannot tell them apart) and those beyond the noise."""
    others = [(p.label, p.stats) for p in points]
    if baseline is not None:
        others.append(("ce", baseline.test))
    for p in points:
        mine = {o.metric: p.stats[o.metric].mean for o in objectives if o.metric in p.stats}
        for label, stats in others:
            if label == p.label:
                continue
            theirs = {o.metric: stats[o.metric].mean for o in objectives if o.metric in stats}
            if not _dominates(theirs, mine, objectives):
                continue
            spread = all(o.metric in stats and stats[o.metric].has_spread and p.stats[o.metric].has_spread
                         for o in objectives)
            if not spread:
                continue
            if all(p.stats[o.metric].overlaps(stats[o.metric]) for o in objectives):
                p.within_noise_of.append(label)
            else:
                p.beyond_noise_of.append(label)


def cost_table(search_rows: pd.DataFrame) -> pd.DataFrame:
    """Per method: trials, trials with a recorded time, median total and update seconds per trial."""
    out = []
    for method, g in search_rows.groupby("method", sort=False):
        total = g["seconds_total"].to_numpy(dtype=float, na_value=np.nan) if "seconds_total" in g \
            else np.full(len(g), np.nan)
        upd = g["seconds_update"].to_numpy(dtype=float, na_value=np.nan) if "seconds_update" in g \
            else np.full(len(g), np.nan)
        timed = np.isfinite(total)
        out.append({"method": method, "trials": len(g), "timed": int(timed.sum()),
                    "median_seconds": float(np.median(total[timed])) if timed.any() else math.nan,
                    "median_update_seconds": float(np.nanmedian(upd)) if np.isfinite(upd).any() else math.nan})
    return pd.DataFrame(out, columns=["method", "trials", "timed", "median_seconds", "median_update_seconds"])


# ----------------------------------------------------------------------------- JSON


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_json") and not isinstance(value, (pd.DataFrame, pd.Series)):
        return _jsonable(value.to_json())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def metric_json(row: pd.Series, metrics: Sequence[str]) -> dict:
    """{metric: {"value", "count", "denominator"}} ({"value"} alone when the row has no
    counts for it) for the metrics `row` has a value of."""
    from ._format import rate_of

    out = {}
    for m in metrics:
        if m not in row.index or pd.isna(row[m]):
            continue
        r = rate_of(row, m)
        out[m] = r.to_json() if r is not None else {"value": float(row[m])}
    return out


def _stats_json(stats: dict[str, Stat], runs: pd.DataFrame) -> dict:
    from ._format import counts_text

    return {m: {**s.to_json(), "counts": counts_text(runs, m) if len(runs) else ""} for m, s in stats.items()}


def _scenario_json(rep: Report, s: ScenarioReport) -> dict:
    rec = s.recommendation
    point = rec.point
    shown = rep.reported
    chosen_by = list(dict.fromkeys([o.metric for o in rep.objectives] + [c.metric for c in rep.constraints]))
    rec_json = {"feasible": rec.feasible, "rule": rec.rule, "binding": [str(c) for c in rec.binding],
                "command": rec.command, "notes": rec.notes}
    if point is not None:
        rec_json.update(method=point["method"], hparams=hparams_of(point), seed=point.get("seed"),
                        seeds=point.get("seeds"), n_runs=point.get("n_runs"), trial_number=point.get("trial_number"),
                        trial_uid=point.get("trial_uid"),
                        val={m: float(point[m]) for m in chosen_by if m in point.index and pd.notna(point[m])},
                        test=_stats_json(s.rec_stats, s.rec_runs),
                        run_seeds=[int(x) for x in s.rec_runs["seed"]] if len(s.rec_runs) else [])
    b = s.baseline
    baseline = {"definition": "ce with default hyperparameters (init=old) on the scenario's training recipe",
                "available": b is not None}
    if b is not None:
        baseline.update(source=b.source, runs=b.describe(), seeds=b.seeds, trial_numbers=b.trial_numbers,
                        hparams=b.hparams, test=_stats_json(b.test, b.runs), val={m: st.mean for m, st in b.val.items()})
    front = []
    for p in s.points:
        front.append({
            "trial_number": p.row.get("trial_number"), "trial_uid": p.row.get("trial_uid"), "method": p.row["method"],
            "seed": p.row.get("seed"), "status": p.row.get("status"), "hparams": hparams_of(p.row),
            "val": metric_json(p.val, shown), "test": metric_json(p.test, shown),
            "seeds": {"n": p.n_seeds, "seeds": [int(x) for x in p.runs["seed"]] if "seed" in p.runs else [],
                      "test": _stats_json(p.stats, p.runs) if p.n_seeds > 1 else {}},
            "within_noise_of": p.within_noise_of, "beyond_noise_of": p.beyond_noise_of, "kept_model": p.kept,
        })
    return {
        "scenario": s.key, "dataset": s.dataset, "arrangement": s.arrangement, "model": s.model,
        "trials": s.n_trials, "search_trials": s.n_search, "counts": s.counts, "m1": s.m1, "m1_val": s.m1_val,
        "notes": s.notes,
        "noise_floor": {m: band.to_json() for m, band in s.noise.items()},
        "seed_spread_available": any(p.n_seeds > 1 for p in s.points) or bool(b is not None and b.n > 1),
        "baseline": baseline,
        "hypervolume": {"final": s.hypervolume[-1] if s.hypervolume else 0.0, "reference": s.reference,
                        "history": s.hypervolume, "split": "validation"},
        "convergence": s.curve.to_json(),
        "optimism": s.optimism.to_json(),
        "front": front,
        "recommendation": rec_json,
        "costs": s.costs.to_dict("records"),
        "flips": s.flips.to_json() if s.flips is not None else None,
    }


def _table_row_json(r: pd.Series, objectives, constraints) -> dict:
    from .tables import COUNTS, HIGH, LOW, VAL

    out = {k: r[k] for k in ("scenario", "dataset", "arrangement", "model", "method", "feasible", "n_runs",
                             "seeds", "hparams", "trial_number", "n_seeds", "run_seeds") if k in r.index}
    out["test"] = {m: {"mean": r[m], "std": r[m + "_std"], "ci95": [r[m + LOW], r[m + HIGH]],
                       "counts": r[m + COUNTS]} for m in table_metrics(objectives) if m in r.index}
    out["val"] = {c[len(VAL):]: r[c] for c in r.index if str(c).startswith(VAL)}
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
