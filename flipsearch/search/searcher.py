"""The bridge between Ray Tune and the Optuna studies: a Ray Tune `Searcher`.

Ray Tune asks it for configurations and tells it when trials finish; it asks the right
study (define-by-run: method first, then that method's hyperparameters), turns the
suggestion into the scenario's typed `TrialConfig`, writes each finished trial's row to
Parquet *before* telling Optuna, and never hands Optuna a NaN or a test-set value.

It is deliberately not `ray.tune.search.optuna.OptunaSearch`: that wrapper keeps one study,
turns multi-objective into single-objective when `metric`/`mode` reach `TuneConfig`, cannot
attach constraint values, and leaves failed or interrupted trials RUNNING.

`save`/`restore` keep nothing: the rows and the Optuna journal in OUT are the sweep's state,
and `--resume` rebuilds the searcher from them (Tune's own experiment restore is not used).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

from optuna.trial import TrialState
from ray.tune.search import Searcher

from ..results import failed_row, new_trial_uid
from ..trial import VAL_PREFIX
from .space import SearchSpace
from .studies import StudyBook


class FlipSearcher(Searcher):
    def __init__(self, space: SearchSpace, book: StudyBook, write_row: Callable[[dict], None],
                 run_id: str, remaining: dict[str, int], quiet: bool = False,
                 stopped_by_scheduler: Callable[[str], bool] = lambda trial_id: False):
        super().__init__()  # no metric/mode on purpose: the studies hold the objectives
        self.space, self.book, self.write_row = space, book, write_row
        self.run_id = run_id
        self.remaining = dict(remaining)  # study -> trials still to start
        self.stopped_by_scheduler = stopped_by_scheduler
        self.live: dict[str, tuple[str, Any, dict]] = {}
        self.counts = {"ok": 0, "failed": 0, "diverged": 0, "stopped": 0, "interrupted": 0}
        self.epochs_run = 0
        self.total = sum(remaining.values())
        self.quiet = quiet
        self.t0 = time.time()

    def save(self, checkpoint_path: str) -> None:  # the rows and the journal are the state
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def suggest(self, trial_id: str) -> dict | None:
        open_studies = [k for k, n in self.remaining.items() if n > 0]
        if not open_studies:
            return Searcher.FINISHED
        key = max(open_studies, key=lambda k: self.remaining[k])  # spread trials across scenarios
        self.remaining[key] -= 1
        ot = self.book.studies[key].ask()
        method, hparams, seed = self.space.suggest(ot)
        cfg = self.space.config(key, method, hparams, seed)
        config = {"study": key, "trial_number": ot.number, "trial_uid": new_trial_uid(), "ray_trial_id": trial_id,
                  "config": cfg.to_dict()}
        self.live[trial_id] = (key, ot, config)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        key, ot, config = self.live.pop(trial_id)
        if result and "row_json" in result:
            row = json.loads(result["row_json"])
        elif error:  # the worker died more often than FailureConfig allows
            row = self._row(config, "failed", "the trial's worker process died on every attempt", result)
        elif result and self.stopped_by_scheduler(trial_id):
            row = self._row(config, "stopped", f"stopped by the scheduler after epoch {result.get('epoch')}", result)
        else:  # stopped before it finished (Ctrl-C): no row, rerun it on --resume
            self.book.studies[key].tell(ot, state=TrialState.FAIL)
            self.book.studies[key].enqueue_trial(ot.params)
            self.book.sync()
            self.counts["interrupted"] += 1
            return
        self.write_row(row)  # first the row (the truth), then Optuna
        self.book.tell(key, ot, row)
        self.epochs_run += int(row.get("epochs") or 0)
        self.counts[row.get("status", "failed")] = self.counts.get(row.get("status", "failed"), 0) + 1
        self._progress(key)

    def _row(self, config: dict, status: str, error: str, result: dict | None) -> dict:
        from ..config import TrialConfig

        last = {k: v for k, v in (result or {}).items() if k.startswith(VAL_PREFIX)}
        ident = {"run_id": self.run_id, "study": config["study"], "trial_number": config["trial_number"],
                 "trial_uid": config["trial_uid"], "ray_trial_id": config["ray_trial_id"],
                 "pack_id": config["trial_uid"], "pack_size": 1}
        where: dict[str, Any] = {"finished_at": time.time()}
        seconds = (result or {}).get("seconds")  # run_trial's elapsed time at its last epoch report
        if status == "stopped" and isinstance(seconds, (int, float)):
            where["seconds_total"] = float(seconds)
        return failed_row(TrialConfig.from_dict(config["config"]), ident, error, status=status, metrics=last,
                          epochs=int((result or {}).get("epoch") or 0), where=where)

    def _progress(self, key: str) -> None:
        if self.quiet:
            return
        c = self.counts
        done = c["ok"] + c["failed"] + c["diverged"] + c["stopped"]
        fronts = " ".join(f"{k.split('__')[1]}:{self.book.front_size(k)}" for k in self.book.studies)
        stopped = f" stopped {c['stopped']}" if c["stopped"] else ""
        print(f"[flipsearch] {done}/{self.total} trials  ok {c['ok']} failed {c['failed']} "
              f"diverged {c['diverged']}{stopped}  front sizes {fronts}  {time.time() - self.t0:.0f}s",
              file=sys.stderr, flush=True)
