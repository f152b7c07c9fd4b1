"""Replicates: after the search, re-run each scenario's front and the `ce` baseline with
other seeds, so a report shows seed-to-seed spread instead of one lucky draw.

A replicate changes the trial's `seed`, and a seed drives everything random in a trial: the
validation split, the D_train / D_update split, M1's initial weights and batch order, and
the update's (seed + 1). The k-th replicate (k = 0 … K−1) of every point uses seed
`max(scenario seeds) + 1 + k`, so replicates of different points share their M1 and split
(their differences are the method's, not the draw's). The front is chosen on validation
metrics, like the search. Replicate rows carry `replicate_of` (the search trial's
`trial_uid`) and `replicate`; they are never told to Optuna and never on a front. A front
point whose configuration is the ce baseline's shares the baseline's replicates
(`replicate_of = "baseline:<study>"`). The baseline also runs at each scenario seed where no
search trial ran it (`replicate` −1, −2, …): a search that samples ce's own update recipe
never runs the scenario's. Rows already written are not re-run on `--resume`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.search import Searcher

from .._pareto import pareto_mask
from ..objectives import selection_view
from ..baseline import config as baseline_config
from ..baseline import same_run
from ..results import ResultsWriter, decode_config, new_trial_uid, read_results
from ..storage import Storage
from .space import SearchSpace

BASELINE = "baseline"  # replicate_of of the ce baseline's replicates: "baseline:<study>"


def replicate_seeds(space: SearchSpace) -> list[int]:
    """The seeds of the replicate runs: max(scenario seeds) + 1 + k for k < `space.replicates`."""
    return [max(space.seeds) + 1 + k for k in range(space.replicates)]


def front_rows(space: SearchSpace, rows: pd.DataFrame) -> pd.DataFrame:
    """The feasible non-dominated search trials of one study, on validation metrics."""
    ok = rows[(rows["status"] == "ok")]
    if not len(ok):
        return ok
    views = [selection_view(r) for r in ok.to_dict("records")]
    feasible = np.array([all(c.satisfied(v) for c in space.constraints) for v in views], dtype=bool)
    ok, views = ok[feasible], [v for v, f in zip(views, feasible) if f]
    if not len(ok):
        return ok
    values = np.array([[v.get(o.metric, np.nan) for o in space.objectives] for v in views], dtype=float)
    return ok[pareto_mask(values, [o.direction for o in space.objectives])]


def plan(space: SearchSpace, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Replicate tasks not yet run: (study, trial number, origin uid, k, config dict)."""
    searched = rows[rows["replicate_of"].isna()] if "replicate_of" in rows else rows
    done = set()
    if "replicate_of" in rows:
        done = {(r["replicate_of"], int(r["replicate"])) for _, r in rows[rows["replicate_of"].notna()].iterrows()}
    tasks = []
    seeds = replicate_seeds(space)
    for key, template in space.templates.items():
        mine = searched[searched["study"] == key] if len(searched) else searched
        baseline = baseline_config(template)
        origins = [(f"{BASELINE}:{key}", -1, baseline)]
        # The baseline's replicates serve a front point with its configuration, at whichever
        # search seed it ran (`same_run`: equal up to seed and device). A row records the device
        # its trial resolved ("cpu" for "auto"); a replicate runs under the sweep's own setting,
        # wherever Ray places it.
        origins += [(str(r["trial_uid"]), int(r["trial_number"]), cfg) for _, r in front_rows(space, mine).iterrows()
                    if not same_run(cfg := decode_config(r).replace(device=template.device), baseline)]
        runs = [(uid, number, cfg, k, seed) for uid, number, cfg in origins for k, seed in enumerate(seeds)]
        # The baseline at a search seed no search trial ran it at: when ce's recipe is searched
        # (update.lr in its block), its search trials run other recipes than the baseline's.
        ran = {int(r["seed"]) for _, r in mine.iterrows() if r["method"] == "ce" and r["status"] == "ok"
               and same_run(decode_config(r), baseline)} if len(mine) else set()
        runs += [(origins[0][0], -1, baseline, -1 - i, s) for i, s in enumerate(space.seeds) if s not in ran]
        for uid, number, cfg, k, seed in runs:
            if (uid, k) not in done:
                tasks.append({"study": key, "trial_number": number, "trial_uid": new_trial_uid(),
                              "replicate_of": uid, "replicate": k, "config": cfg.replace(seed=seed).to_dict()})
    return tasks


class FixedSearcher(Searcher):
    """Hands out a fixed list of trial configs and writes each finished row."""

    def __init__(self, tasks: list[dict], write_row):
        super().__init__()
        self.tasks, self.write_row = list(tasks), write_row
        self.done = 0

    def suggest(self, trial_id: str) -> dict | None:
        if not self.tasks:
            return Searcher.FINISHED
        task = self.tasks.pop(0)
        return {**task, "ray_trial_id": trial_id}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and "row_json" in result:
            self.write_row(json.loads(result["row_json"]))
            self.done += 1

    def save(self, checkpoint_path: str) -> None:  # the rows are the state
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


def run_replicates(space: SearchSpace, opts, out: Storage, run_id: str, datasets: dict,
                   write_row=None) -> tuple[int, int]:
    """Run the replicate tasks not yet written; (rows written, tasks left without a row).
    `write_row` writes each finished row (default: appended to the results)."""
    from ray import tune

    from ..trial import load_data
    from ._tuner import tune_run_config, tune_trainable
    from .trainable import dataset_key

    tasks = plan(space, read_results(out))
    if not tasks:
        return 0, 0
    for task in tasks:  # replicate seeds reuse the loaded datasets (a seed does not change the data)
        from ..config import TrialConfig

        cfg = TrialConfig.from_dict(task["config"])
        if not cfg.explicit and dataset_key(cfg) not in datasets:
            datasets[dataset_key(cfg)] = load_data(cfg)
    if not opts.quiet:
        print(f"[flipsearch] replicates: {len(tasks)} runs (front points and the ce baseline, "
              f"seeds {replicate_seeds(space)})", file=sys.stderr, flush=True)
    searcher = FixedSearcher(tasks, write_row or ResultsWriter(out).append)
    run = {"run_id": run_id, "out_uri": out.uri, "report_epochs": False, "keep": space.keep}
    tune.Tuner(tune_trainable(space, out, run, datasets),
               tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(tasks),
                                           max_concurrent_trials=space.concurrency, reuse_actors=True),
               run_config=tune_run_config(out, f"replicates-{run_id}", space.max_failures)).fit()
    return searcher.done, len(tasks) - searcher.done
