"""Early stopping (MO-ASHA) in a report: what it saved and what it cost the front.

- saved: update epochs the search trials ran against the epochs the same trials would have
  run at full budget (each row's `update_epochs`); failed trials are left out (they ran
  no update to speak of, and would have failed at any budget).
- rungs: per rung, the trials recorded there, told to continue and stopped — from the
  scheduler's saved state (`OUT/scheduler.json`, its `state_dict`), split by scenario through
  the rows' `ray_trial_id`; without that file, from the epochs of the `stopped` rows (a
  trial is stopped right after the epoch of its rung).
- the convergence curve of each scenario, hypervolume of the validation front against
  cumulative compute in finishing order (`ConvergenceCurve`), is computed for every report
  and drawn in this section when early stopping was on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..rundir import RunDir
from ..storage import Storage

SCHEDULER_FILE = RunDir.SCHEDULER


@dataclass
class ConvergenceCurve:
    """After each search trial in finishing order: cumulative update epochs, cumulative
    update seconds (trials without a recorded time add 0; `untimed` counts them) and the
    validation hypervolume of the front so far."""

    epochs: list[float]
    seconds: list[float]
    hypervolume: list[float]
    status: list[str]
    untimed: int = 0

    def to_json(self) -> dict:
        return {"cumulative_epochs": self.epochs, "cumulative_seconds_update": self.seconds,
                "hypervolume": self.hypervolume, "status": self.status, "untimed_trials": self.untimed}


def convergence(ordered_search_rows: pd.DataFrame, hv_history: list[float]) -> ConvergenceCurve:
    """The convergence curve of a scenario: cumulative update epochs and seconds and the hypervolume after
    each search trial (rows in finishing order)."""
    rows = ordered_search_rows
    ep = rows["epochs"].to_numpy(dtype=float, na_value=np.nan) if "epochs" in rows else np.zeros(len(rows))
    sec = rows["seconds_update"].to_numpy(dtype=float, na_value=np.nan) if "seconds_update" in rows \
        else np.full(len(rows), np.nan)
    status = [str(s) for s in rows["status"]] if "status" in rows else ["ok"] * len(rows)
    return ConvergenceCurve([float(x) for x in np.cumsum(np.nan_to_num(ep))],
                            [float(x) for x in np.cumsum(np.nan_to_num(sec))], [float(h) for h in hv_history],
                            status, int(np.isnan(sec).sum()))


@dataclass
class RungCounts:
    """One rung's trials: recorded there, told to continue, stopped."""
    recorded: int = 0
    continued: int = 0
    stopped: int = 0

    def to_json(self) -> dict:
        return {"recorded": self.recorded, "continued": self.continued, "stopped": self.stopped}


@dataclass
class EarlyStopping:
    """The early-stopping section: the scheduler's settings, update epochs run against the full budget, and
    the rung counts (all scenarios and per scenario)."""
    source: str                                           # "scheduler.json" or "rows"
    settings: dict[str, Any]                              # max_t, grace_period, reduction_factor, rungs
    epochs_run: int
    epochs_full: int
    rungs: dict[float, RungCounts]                        # every scenario
    per_scenario: dict[str, dict] = field(default_factory=dict)   # key -> epochs_run, epochs_full, rungs, stopped

    @property
    def saved(self) -> float:
        return 1.0 - self.epochs_run / self.epochs_full if self.epochs_full else math.nan

    def to_json(self) -> dict:
        return {"source": self.source, "settings": self.settings, "epochs_run": self.epochs_run,
                "epochs_full": self.epochs_full, "saved": self.saved,
                "rungs": {_k(r): c.to_json() for r, c in self.rungs.items()},
                "scenarios": {k: {"epochs_run": v["epochs_run"], "epochs_full": v["epochs_full"],
                                  "saved": v["saved"], "stopped": v["stopped"],
                                  "rungs": {_k(r): c.to_json() for r, c in v["rungs"].items()}}
                              for k, v in self.per_scenario.items()}}


def _k(r: float) -> str:
    return str(int(r)) if float(r).is_integer() else str(r)


def read_scheduler_state(out: Storage) -> dict | None:
    """The sweep's scheduler.json (None when it ran FIFO); unreadable JSON is a one-line UsageError."""
    try:
        return RunDir(out).read_scheduler_state()
    except (ValueError, OSError) as e:
        raise UsageError(f"{out.uri}/{SCHEDULER_FILE} is not valid JSON ({e}); move it away to report "
                         "without the early-stopping section's rung counts") from None


def _budget(rows: pd.DataFrame) -> tuple[int, int]:
    rows = rows[rows["status"] != "failed"] if "status" in rows else rows
    run = rows["epochs"].to_numpy(dtype=float, na_value=np.nan) if "epochs" in rows else np.zeros(len(rows))
    full = rows["update_epochs"].to_numpy(dtype=float, na_value=np.nan) if "update_epochs" in rows \
        else np.full(len(rows), np.nan)
    full = np.fmax(np.where(np.isnan(full), run, full), np.nan_to_num(run))     # a trial never runs past its budget
    return int(np.nansum(run)), int(np.nansum(full))


def _rungs_from_state(state: dict, trial_ids: set[str] | None) -> dict[float, RungCounts]:
    core = state.get("core", state)
    stopped = {str(t): float(r) for t, r in (core.get("stopped") or {}).items()}
    decisions = core.get("decisions") or {}
    out: dict[float, RungCounts] = {}
    for r, recorded in core.get("recorded") or []:
        r = float(r)
        c = RungCounts()
        for tid, *_ in recorded:
            if trial_ids is not None and str(tid) not in trial_ids:
                continue
            c.recorded += 1
            c.stopped += int(stopped.get(str(tid)) == r)
            c.continued += int(any(float(dr) == r and d == "continue" for dr, d in decisions.get(tid, ())))
        out[r] = c
    return out


def _rungs_from_rows(rows: pd.DataFrame) -> dict[float, RungCounts]:
    out: dict[float, RungCounts] = {}
    stopped = rows[rows["status"] == "stopped"] if "status" in rows else rows.iloc[0:0]
    for e, n in stopped["epochs"].value_counts().sort_index().items() if len(stopped) else ():
        out[float(e)] = RungCounts(recorded=int(n), stopped=int(n))
    return out


def early_stopping(search_rows: pd.DataFrame, state: dict | None, scenario_keys: pd.Series) -> EarlyStopping | None:
    """The section's numbers over the search rows (replicates excluded), or None when the
    sweep used no early stopping (no scheduler state and no stopped row)."""
    has_stopped = "status" in search_rows and (search_rows["status"] == "stopped").any()
    if state is None and not has_stopped:
        return None
    core = (state or {}).get("core", state or {})
    settings = {k: core.get(k) for k in ("max_t", "grace_period", "reduction_factor", "rungs") if k in core}
    run, full = _budget(search_rows)
    es = EarlyStopping(SCHEDULER_FILE if state is not None else "rows", settings, run, full,
                       _rungs_from_state(state, None) if state is not None else _rungs_from_rows(search_rows))
    for key in dict.fromkeys(scenario_keys):
        rows = search_rows[scenario_keys == key]
        r, f = _budget(rows)
        if state is not None and "ray_trial_id" in rows:
            rungs = _rungs_from_state(state, {str(t) for t in rows["ray_trial_id"].dropna()})
        else:
            rungs = _rungs_from_rows(rows)
        n_stopped = int((rows["status"] == "stopped").sum()) if "status" in rows else 0
        es.per_scenario[key] = {"epochs_run": r, "epochs_full": f, "saved": 1.0 - r / f if f else math.nan,
                                "rungs": rungs, "stopped": n_stopped}
    return es
