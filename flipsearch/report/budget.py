"""What each method of a scenario was given and what broke: the fairness view of a sweep.

A comparison of methods is fair only if no method wins on budget. Per (scenario, method)
`method_budgets` gives the search trials it had (and the update epochs they ran), how they
ended, its best validation point under the report's rule (the lexicographic order of the
objectives among the feasible configurations, `recommend.best_operating_point`) and the
trial (in finishing order, counted within the method) that first reached it — a best found
at the method's last trial suggests its budget was binding — and its diverged trials with
the settings each ran at, so instability reads as instability, not as a gap in a table.

The sweep's budget mode (`search.budget`, sweep.json) says how the trials were shared:
`per-method`, each method an equal share; `per-scenario`, the sampler chose the method of
every trial, so the counts may differ.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import pandas as pd

from ..objectives import Constraint, Objective
from ..rundir import SweepRecord
from ._format import fmt_unit, header
from .blocks import GroupRow, Heading, Table, cell, para
from .configs import aggregate_seeds, config_keys, scenario_keys, searched_or_changed
from .recommend import best_operating_point
from .selection import finishing_order, is_replicate, selection_frame

STATUSES = ("ok", "stopped", "diverged", "failed")
_EPOCH = re.compile(r"in epoch (\d+)")


def budget_mode(record: SweepRecord | None) -> str:
    """The sweep's `search.budget` ("per-scenario" for sweeps from before the setting)."""
    return str((record.budget if record is not None else None) or "per-scenario")


def diverged_settings(row: pd.Series, searched: dict[str, Any] | None) -> str:
    """A diverged row's settings as `name=value` pairs (the searched or non-default ones),
    with the epoch its loss became NaN/inf when the error says."""
    hp = searched_or_changed(row, searched)
    text = " ".join(f"{k}={_short(v)}" for k, v in hp.items()) or "defaults"
    m = _EPOCH.search(str(row.get("error") or ""))
    return text + (f" (epoch {m.group(1)})" if m else "")


def method_budgets(rows: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint],
                   searched: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per (scenario, method) of the search rows (replicates left out): scenario,
    method, trials, epochs (update epochs run), one count per status, `best_<objective>`
    (validation values of its best configuration; NaN without one), best_at (1-based
    position of its first trial of that configuration among the method's trials, finishing
    order), feasible, diverged_settings (one text per diverged trial)."""
    cols = ["scenario", "method", "trials", "epochs", *STATUSES,
            *(f"best_{o.metric}" for o in objectives), "best_at", "feasible", "diverged_settings"]
    if len(rows) == 0:
        return pd.DataFrame(columns=cols)
    search = rows[~is_replicate(rows)]
    search = search.assign(status=search["status"] if "status" in search else "ok")
    keys = scenario_keys(search)
    out = []
    for scenario in dict.fromkeys(keys):
        in_scen = search[keys == scenario]
        methods = list(dict.fromkeys([m for m in (searched or {}) if (in_scen["method"] == m).any()]
                                     + list(in_scen["method"].astype(str))))
        for method in methods:
            mine = finishing_order(in_scen[in_scen["method"].astype(str) == method])
            entry: dict[str, Any] = {"scenario": scenario, "method": method, "trials": len(mine),
                                     "epochs": int(pd.to_numeric(mine.get("epochs"), errors="coerce").fillna(0).sum())
                                     if "epochs" in mine else 0}
            entry.update({s: int((mine["status"] == s).sum()) for s in STATUSES})
            val = selection_frame(mine)
            configs = aggregate_seeds(val)
            point = best_operating_point(configs, objectives, constraints) if len(configs) else None
            entry["feasible"] = point is not None
            for o in objectives:
                entry[f"best_{o.metric}"] = float(point[o.metric]) if point is not None else math.nan
            entry["best_at"] = None
            if point is not None:
                same = (config_keys(val) == point["config_key"]).to_numpy()
                entry["best_at"] = int(same.argmax()) + 1
            entry["diverged_settings"] = [diverged_settings(r, searched)
                                          for _, r in mine[mine["status"] == "diverged"].iterrows()]
            out.append(entry)
    return pd.DataFrame(out, columns=cols)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def budget_blocks(report) -> list:
    """The report's "Budget and instability per method" section (`document.document`)."""

    table = method_budgets(report.rows, report.objectives, report.constraints, report.searched)
    mode = budget_mode(report.record)
    how = ("each method of a scenario had an equal share of its trials (search.budget: per-method)"
           if mode == "per-method" else
           "the sampler chose the method of every trial, so the methods' trial counts differ "
           "(search.budget: per-scenario; per-method gives each method an equal share)")
    blocks: list = [Heading(2, "Budget and instability per method", "budget"),
                    para(f"Budget mode {mode}: {how}. Per method: the search trials it had and the update epochs they "
                      "ran (neurecover and interp, which reuse the shared CE update, count the epochs of that update, "
                      "trained once per scenario and recipe), how they ended, its best validation point under the report's rule and the trial (in "
                      "finishing order, of the method's own) that first reached it — a best found at the last trial "
                      "suggests the budget was binding — and every diverged trial with its settings.")]
    heads = ["method", "trials", "update epochs", "ok / stopped / diverged / failed",
             *(f"best {header(o.metric)} (validation)" for o in report.objectives), "best at trial", "diverged at"]
    rows: list = []
    scenario = None
    for _, r in table.iterrows():
        if r["scenario"] != scenario:
            scenario = r["scenario"]
            rows.append(GroupRow(str(scenario)))
        best = [cell(fmt_unit(o.metric, r[f"best_{o.metric}"]) if r["feasible"] else "—", "",
                     r[f"best_{o.metric}"], True) for o in report.objectives]
        at = f"{int(r['best_at'])} of {int(r['trials'])}" if r["best_at"] is not None and r["feasible"] else "—"
        rows.append([cell(str(r["method"])), cell(str(r["trials"]), "", r["trials"], True),
                     cell(str(r["epochs"]), "", r["epochs"], True),
                     cell(" / ".join(str(r[s]) for s in STATUSES), "", r["diverged"], True), *best,
                     cell(at), cell("; ".join(r["diverged_settings"]) or "—", cls="wrap")])
    blocks.append(Table(heads, rows, id="budget-table", cls="budget"))
    return blocks
