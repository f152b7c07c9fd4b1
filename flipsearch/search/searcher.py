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

from ..pack_trial import pack_key, packable
from ..results import failed_row, new_trial_uid
from ..trial import VAL_PREFIX
from .space import SearchSpace
from .studies import StudyBook


class FlipSearcher(Searcher):
    def __init__(self, space: SearchSpace, book: StudyBook, write_row: Callable[[dict], None],
                 run_id: str, remaining: dict[str, int], quiet: bool = False,
                 stopped_by_scheduler: Callable[[str], bool] = lambda trial_id: False,
                 pack_sizes: dict[str, int] | None = None):
        super().__init__()  # no metric/mode on purpose: the studies hold the objectives
        self.space, self.book, self.write_row = space, book, write_row
        self.run_id = run_id
        self.remaining = dict(remaining)  # study -> trials still to start
        self.stopped_by_scheduler = stopped_by_scheduler
        self.live: dict[str, list[tuple[str, Any, dict]]] = {}  # Ray trial -> its members
        # study -> pack size K: `search.pack`, or with `pack: auto` what was measured per scenario
        self.pack_sizes = pack_sizes or {k: int(space.pack) if space.pack != "auto" else 1 for k in remaining}
        self.buffers: dict[tuple, list[tuple[str, Any, dict]]] = {}  # (study, pack key) -> members asked
        self.counts = {"ok": 0, "failed": 0, "diverged": 0, "stopped": 0, "interrupted": 0}
        self.epochs_run = 0
        self.total = sum(remaining.values())
        self.quiet = quiet
        self.t0 = time.time()

    def save(self, checkpoint_path: str) -> None:  # the rows and the journal are the state
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def _ask(self, key: str, trial_id: str) -> tuple[str, Any, dict]:
        self.remaining[key] -= 1
        ot = self.book.studies[key].ask()
        uid = new_trial_uid()
        ot.set_user_attr("trial_uid", uid)  # so a resume matches it to its row by identity
        method, hparams, seed = self.space.suggest(ot)
        cfg = self.space.config(key, method, hparams, seed)
        return key, ot, {"study": key, "trial_number": ot.number, "trial_uid": uid,
                         "ray_trial_id": trial_id, "config": cfg.to_dict(), "_cfg": cfg}

    def suggest(self, trial_id: str) -> dict | None:
        """One Ray trial: a single configuration, or with `search.pack: K` a pack of up to K
        configurations of one scenario and loss method (asked from Optuna one by one and
        grouped; a group is sent when full, or when its study has nothing left to ask)."""
        while True:
            full = next((g for g, members in self.buffers.items() if len(members) >= self.pack_sizes.get(g[0], 1)),
                        None)
            if full is not None:
                return self._send(trial_id, self.buffers.pop(full))
            open_studies = [k for k, n in self.remaining.items() if n > 0]
            if not open_studies:
                if self.buffers:  # the last, partial packs
                    return self._send(trial_id, self.buffers.pop(max(self.buffers, key=lambda g: len(self.buffers[g]))))
                return Searcher.FINISHED
            key = max(open_studies, key=lambda k: self.remaining[k])  # spread trials across scenarios
            member = self._ask(key, trial_id)
            cfg = member[2]["_cfg"]
            if self.pack_sizes.get(key, 1) <= 1 or not packable(cfg):
                return self._send(trial_id, [member])
            self.buffers.setdefault((key, pack_key(cfg)), []).append(member)

    def _send(self, trial_id: str, members: list[tuple[str, Any, dict]]) -> dict:
        for _, _, config in members:
            config.pop("_cfg", None)
            config["ray_trial_id"] = trial_id
        self.live[trial_id] = members
        if len(members) == 1:
            return members[0][2]
        return {"pack": [config for _, _, config in members], "ray_trial_id": trial_id}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        members = self.live.pop(trial_id)
        if result and ("row_json" in result or "rows_json" in result):
            rows = json.loads(result["rows_json"]) if "rows_json" in result else [json.loads(result["row_json"])]
        elif error:  # the worker died more often than FailureConfig allows
            rows = [self._row(c, "failed", "the trial's worker process died on every attempt", result, len(members))
                    for _, _, c in members]
        elif result and self.stopped_by_scheduler(trial_id):
            rows = [self._row(c, "stopped", f"stopped by the scheduler after epoch {result.get('epoch')}", result, 1)
                    for _, _, c in members]
        else:  # stopped before it finished (Ctrl-C): no row, rerun it on --resume
            for key, ot, _ in members:
                self.book.studies[key].tell(ot, state=TrialState.FAIL)
                self.book.studies[key].enqueue_trial(ot.params)
                self.counts["interrupted"] += 1
            self.book.sync()
            return
        by_uid = {r.get("trial_uid"): r for r in rows}
        for key, ot, config in members:
            row = by_uid[config["trial_uid"]]
            self.write_row(row)  # first the row (the truth), then Optuna
            self.book.tell(key, ot, row)
            self.epochs_run += int(row.get("epochs") or 0)
            self.counts[row.get("status", "failed")] = self.counts.get(row.get("status", "failed"), 0) + 1
            self._progress(key)

    def _row(self, config: dict, status: str, error: str, result: dict | None, pack_size: int) -> dict:
        from ..config import TrialConfig

        last = {k: v for k, v in (result or {}).items() if k.startswith(VAL_PREFIX)}
        ident = {"run_id": self.run_id, "study": config["study"], "trial_number": config["trial_number"],
                 "trial_uid": config["trial_uid"], "ray_trial_id": config["ray_trial_id"],
                 "pack_id": config["ray_trial_id"] if pack_size > 1 else config["trial_uid"], "pack_size": pack_size}
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
