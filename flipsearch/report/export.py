"""The report's files and JSON: `Report` is the report's data (`model.ReportData`) with
`files()`, `write(dir)` and `to_json()`.

Files (`Report.files`): index.html (self-contained: plotly.js inlined once, plots and
thumbnails embedded), summary.md, front.parquet (every front point of every scenario, all
columns, plus `scenario`), trials.csv (every row of the sweep), front-<scenario>.png,
hypervolume.png. Only `Report.write` touches the report directory, so a report that fails
to build leaves nothing behind.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd

from .._json import jsonable
from ..rundir import RunDir
from ..errors import UsageError
from ..storage import Storage
from ._format import counts_text, rate_of
from .configs import hparams_of
from .html import render_html
from .model import ReportData, ScenarioReport
from .markdown import render_markdown
from .stats import Stat
from .tables import COUNTS, HIGH, LOW, VAL, table_metrics

__all__ = ["Report", "ROWS_FILE", "check_report_dir", "default_report_dir", "metric_json"]

ROWS_FILE = "trials.csv"


class Report(ReportData):
    """A sweep's report (`build.build_report`), with its files and its JSON."""

    def files(self) -> dict[str, bytes]:
        """Name -> content of every file the report writes."""
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
        return jsonable({
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


# ----------------------------------------------------------------------------- JSON


def metric_json(row: pd.Series, metrics: Sequence[str]) -> dict:
    """{metric: {"value", "count", "denominator"}} ({"value"} alone when the row has no
    counts for it) for the metrics `row` has a value of."""
    out = {}
    for m in metrics:
        if m not in row.index or pd.isna(row[m]):
            continue
        r = rate_of(row, m)
        out[m] = r.to_json() if r is not None else {"value": float(row[m])}
    return out


def _stats_json(stats: dict[str, Stat], runs: pd.DataFrame) -> dict:
    return {m: {**s.to_json(), "counts": counts_text(runs, m) if len(runs) else ""} for m, s in stats.items()}


def _scenario_json(rep: ReportData, s: ScenarioReport) -> dict:
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


def check_report_dir(report_dir: str) -> str:
    """`report_dir` (a path or URI) if a report can be written there; a one-line `UsageError`
    when it is an existing file (checked before any work, so nothing is written)."""
    storage = Storage.open(report_dir)
    if storage.is_local:
        import os

        if os.path.exists(storage.root) and not os.path.isdir(storage.root):
            raise UsageError(f"--out {storage.uri} is an existing file, not a directory; choose a directory")
    return storage.uri


def default_report_dir(out: str) -> str:
    """Where `flipsearch report OUT` writes by default: OUT/report (a path or URI)."""
    return RunDir(out).sub(RunDir.REPORT).uri
