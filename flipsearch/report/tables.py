"""The paper-1 table (Tokui-style comparison, one row per scenario × method).

Each method's best operating point is chosen by the rule of `recommend` ("best first
objective subject to the constraints") on VALIDATION seed means of its search trials
(`selection.selection_frame`); the table then reports that configuration's TEST values:
`accuracy_ratio` (acc M1 / acc M2, as paper 1 prints its "accuracy improvement rate"),
`accuracy_gain` (acc M2 − acc M1), BR, BEC and NFR, each as the mean over the
configuration's runs — its search trials and their replicates (other seeds) — with the
sample std, the 95 % t-interval and the counts behind it. A method with no feasible
configuration shows its closest one, flagged `feasible = False`. After the methods, each
scenario's `ce` baseline (`baselines.find_baseline`, role "baseline"; not chosen, defined)
with its test values over its seeds: what every method is compared with.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..objectives import SELECTION_PREFIX, Constraint, Objective
from ._format import counts_text
from .configs import CONFIG_KEY, aggregate_seeds, config_keys, scenario_keys, searched_or_changed
from .pareto import closest_to_feasible
from .recommend import best_operating_point
from .baselines import find_baseline
from .selection import runs_with_replicates, search_mask, selection_frame, reported_frame
from .stats import metric_bounds, seed_stat

PAPER1_METRICS = ("accuracy_ratio", "accuracy_gain", "br", "bec", "nfr")
LOW, HIGH, COUNTS, VAL = "_low", "_high", "_counts", SELECTION_PREFIX


def table_metrics(objectives: Sequence[Objective]) -> list[str]:
    """The paper-1 metrics, then any objective not among them (so the rule's pick is visible)."""
    return list(PAPER1_METRICS) + [o.metric for o in objectives if o.metric not in PAPER1_METRICS]


def config_runs(rows: pd.DataFrame, search_keys: pd.Series, point: pd.Series) -> pd.Index:
    """The runs of the configuration `point` (a seed-mean row of `aggregate_seeds`): its ok
    search trials (`search_keys`: their config keys) and their replicates."""
    originals = search_keys.index[search_keys == point[CONFIG_KEY]]
    return runs_with_replicates(rows, originals)


def paper1_table(rows: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint],
                 searched: dict[str, Any] | None = None, scenario_order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (scenario, method) present in `rows` (every status; methods in the order
    of `searched`, sweep.json's `methods`, then of appearance), with columns scenario,
    dataset, arrangement, model, method, role ("best", or "baseline" for the ce baseline's
    row after the methods), feasible, n_runs (search trials of the chosen
    configuration), seeds, hparams (the searched or non-default ones), trial_number,
    n_seeds and run_seeds (with the replicates), then per `table_metrics(objectives)`
    metric the test mean `<m>`, `<m>_std`, `<m>_low`/`<m>_high` (95 % interval) and
    `<m>_counts`, and `val_<m>` for the objectives and constraints (what chose it).
    Metrics are NaN for a method without an ok search trial in that scenario."""
    metrics = table_metrics(objectives)
    if len(rows) == 0:
        return pd.DataFrame(columns=["scenario", "method", *metrics])
    val, test = selection_frame(rows), reported_frame(rows)
    search = search_mask(rows)
    keys = scenario_keys(rows)
    order = list(dict.fromkeys([*scenario_order, *keys]))
    chosen_by = list(dict.fromkeys([o.metric for o in objectives] + [c.metric for c in constraints]))
    out = []
    for scenario in order:
        in_scen = keys == scenario
        if not in_scen.any():
            continue
        sel = val[in_scen.to_numpy() & search]
        configs = aggregate_seeds(sel)
        skeys = config_keys(sel) if len(sel) else pd.Series(dtype=str)
        first = rows[in_scen].iloc[0]
        present = rows.loc[in_scen, "method"]
        for method in dict.fromkeys([m for m in (searched or {}) if m in set(present)] + list(present)):
            group = configs[configs["method"] == method] if len(configs) else configs
            point = best_operating_point(group, objectives, constraints) if len(group) else None
            feasible = point is not None
            if point is None and len(group) and constraints:
                point = closest_to_feasible(group, constraints)
            entry = {"scenario": scenario, "dataset": first.get("dataset"), "arrangement": first.get("arrangement"),
                     "model": first.get("model"), "method": method, "role": "best", "feasible": feasible,
                     "n_runs": 0, "seeds": "", "hparams": {}, "trial_number": None, "n_seeds": 0, "run_seeds": ""}
            runs = test.iloc[0:0]
            if point is not None:
                runs = test.loc[config_runs(rows, skeys, point)]
                entry.update(n_runs=int(point["n_runs"]), seeds=point["seeds"],
                             hparams=searched_or_changed(point, searched), trial_number=point.get("trial_number"),
                             n_seeds=len(runs), run_seeds=",".join(str(int(s)) for s in runs["seed"]))
            for m in metrics:
                s = seed_stat(runs[m], metric_bounds(m)) if m in runs.columns and len(runs) else seed_stat([])
                entry.update({m: s.mean, m + "_std": s.std, m + LOW: s.low, m + HIGH: s.high,
                              m + COUNTS: counts_text(runs, m) if len(runs) else ""})
            for m in chosen_by:
                entry[VAL + m] = float(point[m]) if point is not None and m in point.index else np.nan
            out.append(entry)
        baseline = find_baseline(test[in_scen], val[in_scen], scenario, metrics)
        if baseline is not None:
            runs = baseline.runs
            entry = {"scenario": scenario, "dataset": first.get("dataset"), "arrangement": first.get("arrangement"),
                     "model": first.get("model"), "method": "ce", "role": "baseline", "feasible": True,
                     "n_runs": len(baseline.trial_numbers), "seeds": "", "hparams": baseline.hparams,
                     "trial_number": baseline.trial_numbers[0] if baseline.trial_numbers else None,
                     "n_seeds": baseline.n, "run_seeds": ",".join(str(s) for s in baseline.seeds),
                     "source": baseline.source}
            for m in metrics:
                st = baseline.test.get(m) or seed_stat([])
                entry.update({m: st.mean, m + "_std": st.std, m + LOW: st.low, m + HIGH: st.high,
                              m + COUNTS: counts_text(runs, m)})
            for m in chosen_by:
                entry[VAL + m] = baseline.val[m].mean if m in baseline.val else np.nan
            out.append(entry)
    return pd.DataFrame(out)
