"""The report's tables as DataFrames: the paper-1 table and the Pareto-front listing.

Paper-1 table (Tokui-style comparison, one row per scenario × method): each method's best
operating point under the rule of `recommend` ("best first objective subject to the
constraints", on seed means), showing `accuracy_ratio` (acc M1 / acc M2, as paper 1 prints
its "accuracy improvement rate"), `accuracy_gain` (acc M2 − acc M1), BR, BEC and NFR, each
with its standard deviation over seeds when the configuration ran with several. A method
with no feasible configuration shows its closest one, flagged `feasible = False`.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from ..objectives import Constraint, Objective
from .configs import STD_SUFFIX, aggregate_seeds, hparams_of, scenario_keys, searched_or_changed
from .pareto import closest_to_feasible
from .recommend import best_operating_point

PAPER1_METRICS = ("accuracy_ratio", "accuracy_gain", "br", "bec", "nfr")


def table_metrics(objectives: Sequence[Objective]) -> list[str]:
    """The paper-1 metrics, then any objective not among them (so the rule's pick is visible)."""
    return list(PAPER1_METRICS) + [o.metric for o in objectives if o.metric not in PAPER1_METRICS]


def paper1_table(rows: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint],
                 searched: dict[str, Any] | None = None, scenario_order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (scenario, method) present in `rows` (every status; methods in the order
    of `searched`, sweep.json's `methods`, then of appearance), with columns
    scenario, dataset, arrangement, model, method, feasible, n_runs, seeds, hparams (the
    searched or non-default ones, as a dict), trial_number, then `<metric>` and
    `<metric>_std` for `table_metrics(objectives)`. Metrics are NaN for a method without an
    ok trial in that scenario."""
    metrics = table_metrics(objectives)
    if len(rows) == 0:
        return pd.DataFrame(columns=["scenario", "method", *metrics])
    keys = scenario_keys(rows)
    order = list(dict.fromkeys([*scenario_order, *keys]))
    out = []
    for scenario in order:
        in_scen = rows[keys == scenario]
        if len(in_scen) == 0:
            continue
        configs = aggregate_seeds(in_scen)
        first = in_scen.iloc[0]
        present = set(in_scen["method"])
        for method in dict.fromkeys([m for m in (searched or {}) if m in present] + list(in_scen["method"])):
            group = configs[configs["method"] == method] if len(configs) else configs
            point = best_operating_point(group, objectives, constraints) if len(group) else None
            feasible = point is not None
            if point is None and len(group) and constraints:
                point = closest_to_feasible(group, constraints)
            entry = {"scenario": scenario, "dataset": first.get("dataset"), "arrangement": first.get("arrangement"),
                     "model": first.get("model"), "method": method, "feasible": feasible,
                     "n_runs": 0, "seeds": "", "hparams": {}, "trial_number": None}
            if point is not None:
                entry.update(n_runs=int(point["n_runs"]), seeds=point["seeds"],
                             hparams=searched_or_changed(point, searched), trial_number=point.get("trial_number"))
            for m in metrics:
                entry[m] = float(point[m]) if point is not None and m in point.index else float("nan")
                std_key = m + STD_SUFFIX
                entry[std_key] = float(point[std_key]) if point is not None and std_key in point.index else float("nan")
            out.append(entry)
    return pd.DataFrame(out)


def front_listing(front: pd.DataFrame, objectives: Sequence[Objective], extra: Sequence[str] = (),
                  searched: dict[str, Any] | None = None) -> pd.DataFrame:
    """The front's points for display: method, seed, trial_number, hparams (searched or
    non-default), all hyperparameters (`all_hparams`), then the objectives and `extra` metrics."""
    metrics = list(dict.fromkeys([o.metric for o in objectives] + [m for m in extra if m in front.columns]))
    out = pd.DataFrame({
        "method": front["method"].to_numpy() if "method" in front else [],
        "seed": front["seed"].to_numpy() if "seed" in front else None,
        "trial_number": front["trial_number"].to_numpy() if "trial_number" in front else None,
        "hparams": [searched_or_changed(r, searched) for _, r in front.iterrows()],
        "all_hparams": [hparams_of(r) for _, r in front.iterrows()],
    }, index=front.index)
    for m in metrics:
        out[m] = front[m].to_numpy(dtype=float)
    return out
