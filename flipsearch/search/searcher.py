"""The bridge between Ray Tune and the Optuna studies: a Ray Tune `Searcher`.

Ray Tune asks it for configurations and tells it when trials finish; it asks the right
study (define-by-run: method first, then that method's hyperparameters), writes each
finished trial's row to Parquet *before* telling Optuna, and never hands Optuna a NaN.

It is deliberately not `ray.tune.search.optuna.OptunaSearch`: that wrapper keeps one study,
turns multi-objective into single-objective when `metric`/`mode` reach `TuneConfig`, cannot
attach constraint values, and leaves failed or interrupted trials RUNNING.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

from optuna.trial import TrialState
from ray.tune.search import Searcher

from .space import SearchSpace
from .studies import StudyBook


class FlipSearcher(Searcher):
    def __init__(self, space: SearchSpace, book: StudyBook, write_row: Callable[[dict], None],
                 base_config: dict[str, Any], remaining: dict[str, int], quiet: bool = False):
        super().__init__()  # no metric/mode on purpose: the studies hold the objectives
        self.space, self.book, self.write_row = space, book, write_row
        self.base_config = base_config
        self.remaining = dict(remaining)  # study -> trials still to start
        self.scenarios = {s.key: s for s in space.scenarios}
        self.live: dict[str, tuple[str, Any, dict]] = {}
        self.counts = {"ok": 0, "failed": 0, "diverged": 0, "interrupted": 0}
        self.total = sum(remaining.values())
        self.quiet = quiet
        self.t0 = time.time()

    def suggest(self, trial_id: str) -> dict | None:
        open_studies = [k for k, n in self.remaining.items() if n > 0]
        if not open_studies:
            return Searcher.FINISHED
        key = max(open_studies, key=lambda k: self.remaining[k])  # spread trials across scenarios
        self.remaining[key] -= 1
        study = self.book.studies[key]
        ot = study.ask()
        method, hparams, seed = self.space.suggest(ot)
        scen = self.scenarios[key]
        config = {**self.base_config, "study": key, "trial_number": ot.number, "dataset": scen.dataset,
                  "arrangement": scen.arrangement, "model": scen.model, "method": method,
                  "hparams": hparams, "seed": seed}
        self.live[trial_id] = (key, ot, config)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        key, ot, config = self.live.pop(trial_id)
        if result and "row_json" in result:
            row = json.loads(result["row_json"])
        elif error:  # the worker died more often than FailureConfig allows
            row = {k: config[k] for k in ("run_id", "study", "trial_number", "dataset", "arrangement", "method", "seed")}
            row.update({f"hp_{k}": v for k, v in config["hparams"].items()}, model=config.get("model") or "",
                       status="failed", error="the trial's worker process died on every attempt",
                       finished_at=time.time())
        else:  # stopped before it reported (Ctrl-C): no row, rerun it on --resume
            self.book.studies[key].tell(ot, state=TrialState.FAIL)
            self.book.studies[key].enqueue_trial(ot.params)
            self.book.sync()
            self.counts["interrupted"] += 1
            return
        self.write_row(row)  # first the row (the truth), then Optuna
        self.book.tell(key, ot.number, row)
        self.counts[row.get("status", "failed")] = self.counts.get(row.get("status", "failed"), 0) + 1
        self._progress(key)

    def _progress(self, key: str) -> None:
        if self.quiet:
            return
        done = self.counts["ok"] + self.counts["failed"] + self.counts["diverged"]
        fronts = " ".join(f"{k.split('__')[1]}:{self.book.front_size(k)}" for k in self.book.studies)
        print(f"[flipsearch] {done}/{self.total} trials  ok {self.counts['ok']} failed {self.counts['failed']} "
              f"diverged {self.counts['diverged']}  front sizes {fronts}  {time.time() - self.t0:.0f}s",
              file=sys.stderr, flush=True)

