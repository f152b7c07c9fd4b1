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


MAX_REPEATS = 20  # suggestions in a row that repeat a trained configuration before one is trained again


def config_signature(cfg) -> str:
    """What makes two trials the same training: the whole configuration but the device."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    d.pop("device", None)
    return json.dumps(d, sort_keys=True, default=str)


def remember(trained: dict[str, dict | None], row: dict, config: dict) -> None:
    """Keep `row` as the outcome of `config` (a finished trial: ok, diverged or stopped), or
    forget the config (a failed trial is tried again when suggested again)."""
    sig = config_signature(config)
    if row.get("status") in ("ok", "diverged", "stopped"):
        trained[sig] = row
    else:
        trained.pop(sig, None)


def trained_configs(rows) -> dict[str, dict[str, dict]]:
    """study -> config signature -> row, for the search rows of earlier runs (resume)."""
    from ..results import decode_config

    out: dict[str, dict[str, dict]] = {}
    if not len(rows):
        return out
    search = rows[rows["replicate_of"].isna()] if "replicate_of" in rows else rows
    for r in search.to_dict("records"):
        if r.get("status") in ("ok", "diverged", "stopped"):
            try:
                sig = config_signature(decode_config(r))
            except Exception:  # noqa: BLE001 - a row that no longer decodes repeats nothing
                continue
            out.setdefault(str(r["study"]), {})[sig] = r
    return out


def method_counts(rows) -> dict[str, dict[str, int]]:
    """study -> method -> search rows already recorded (resume, with a per-method budget)."""
    out: dict[str, dict[str, int]] = {}
    if not len(rows) or "method" not in rows:
        return out
    search = rows[rows["replicate_of"].isna()] if "replicate_of" in rows else rows
    for (study, method), n in search.groupby(["study", "method"]).size().items():
        out.setdefault(str(study), {})[str(method)] = int(n)
    return out


class FlipSearcher(Searcher):
    """The Ray Tune searcher of a sweep: asks each scenario's Optuna study for the next configuration, tells it
    the finished row, and writes the rows.

    Args:
        space: the search space.
        book: the sweep's Optuna studies.
        write_row: called with every finished row.
        run_id: this run's id (stamped on its rows).
        remaining: trials still to run per scenario.
        quiet: no progress lines.
        stopped_by_scheduler: whether the scheduler stopped a Ray trial id (its row is then `stopped`).
        pack_sizes: trials per pack per scenario (`search.pack`), None for one trial per Ray trial.
        trained: configurations already trained per scenario, so a repeated suggestion is told, not retrained.
    """

    def __init__(self, space: SearchSpace, book: StudyBook, write_row: Callable[[dict], None],
                 run_id: str, remaining: dict[str, int], quiet: bool = False,
                 stopped_by_scheduler: Callable[[str], bool] = lambda trial_id: False,
                 pack_sizes: dict[str, int] | None = None, trained: dict[str, dict[str, dict]] | None = None,
                 method_done: dict[str, dict[str, int]] | None = None):
        super().__init__()  # no metric/mode on purpose: the studies hold the objectives
        self.space, self.book, self.write_row = space, book, write_row
        self.run_id = run_id
        self.remaining = dict(remaining)  # study -> trials still to start
        self.stopped_by_scheduler = stopped_by_scheduler
        self.live: dict[str, list[tuple[str, Any, dict]]] = {}  # Ray trial -> its members
        # study -> config signature -> its finished row (None while in flight): what not to train twice
        self.trained: dict[str, dict[str, dict | None]] = {k: dict(v) for k, v in (trained or {}).items()}
        self.repeats = 0  # suggestions that repeated a trained configuration (told, not trained)
        self.waiting: dict[tuple[str, str], list] = {}  # (study, signature) -> repeats of a config in flight
        # study -> pack size K: `search.pack`, or with `pack: auto` what was measured per scenario
        self.pack_sizes = pack_sizes or {k: int(space.pack) if space.pack != "auto" else 1 for k in remaining}
        self.buffers: dict[tuple, list[tuple[str, Any, dict]]] = {}  # (study, pack key) -> members asked
        self.counts = {"ok": 0, "failed": 0, "diverged": 0, "stopped": 0, "interrupted": 0}
        self.epochs_run = 0
        # search.budget per-method: study -> method -> trials still to start (equal shares)
        self.method_left = {k: {m: max(0, n - (method_done or {}).get(k, {}).get(m, 0))
                                for m, n in space.method_budgets(space.trials_per_scenario).items()}
                            for k in remaining} if space.budget == "per-method" else {}
        self.total = sum(remaining.values())
        self.quiet = quiet
        self.t0 = time.time()

    def save(self, checkpoint_path: str) -> None:  # the rows and the journal are the state
        pass

    def __getstate__(self) -> dict:
        # Tune pickles its settings, this searcher among them, to tuner.pkl for Tuner.restore,
        # which flipsearch never uses: `--resume` rebuilds the studies from the journal. The
        # studies stay out of that pickle: Optuna 5.1's NSGA-II sampler holds a thread lock.
        state = self.__dict__.copy()
        state["book"] = None
        return state

    def restore(self, checkpoint_path: str) -> None:
        pass

    def _ask(self, key: str, trial_id: str) -> tuple[str, Any, dict]:
        """Ask the study for a configuration not trained yet. A sampler often suggests one
        again (a categorical-only method such as `ce`, or NSGA-II's crossover of equal
        parents): that suggestion is told the outcome of the row it repeats, without
        training, and the study is asked again; a repeat of one still in flight is told
        its outcome when that row lands. After `MAX_REPEATS` repeats in a row (the space is nearly exhausted)
        the repeat is trained like any other suggestion."""
        study = self.book.studies[key]
        left = self.method_left.get(key)
        forced = max(left, key=left.get) if left and len(left) > 1 else None  # the method furthest from its share
        for attempt in range(MAX_REPEATS + 1):
            # Fix the method of the next ask (the sampler samples the rest), unless a trial is
            # already waiting (an interrupted trial's rerun, which keeps its method).
            if forced is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                study.enqueue_trial({"method": forced}, skip_if_exists=False)
            ot = study.ask()
            method, hparams, seed = self.space.suggest(ot)
            cfg = self.space.config(key, method, hparams, seed)
            sig = config_signature(cfg)
            if attempt == MAX_REPEATS or sig not in self.trained.setdefault(key, {}):
                break
            earlier = self.trained[key][sig]
            if earlier is None:  # the same configuration is running now: told when its row lands
                self.waiting.setdefault((key, sig), []).append(ot)
            else:
                self.book.tell(key, ot, earlier, repeat=True)
            self.repeats += 1
        self.remaining[key] -= 1
        if left:
            left[method] -= 1
        self.trained[key][sig] = None  # in flight
        uid = new_trial_uid()
        ot.set_user_attr("trial_uid", uid)  # so a resume matches it to its row by identity
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
            for key, ot, config in members:
                self.book.studies[key].tell(ot, state=TrialState.FAIL)
                self.book.studies[key].enqueue_trial(ot.params)
                self.counts["interrupted"] += 1
                self.trained.get(key, {}).pop(config_signature(config["config"]), None)
                for repeat in self.waiting.pop((key, config_signature(config["config"])), []):
                    self.book.studies[key].tell(repeat, state=TrialState.FAIL)  # the rerun is enqueued once
            self.book.sync()
            return
        by_uid = {r.get("trial_uid"): r for r in rows}
        for key, ot, config in members:
            row = by_uid[config["trial_uid"]]
            self.write_row(row)  # first the row (the truth), then Optuna
            self.book.tell(key, ot, row)
            remember(self.trained.setdefault(key, {}), row, config["config"])
            for repeat in self.waiting.pop((key, config_signature(config["config"])), []):
                if row.get("status") == "failed":  # nothing to repeat: the original crashed
                    repeat.set_user_attr("repeat_of", str(row.get("trial_uid") or ""))
                    self.book.studies[key].tell(repeat, state=TrialState.FAIL)
                else:
                    self.book.tell(key, repeat, row, repeat=True)
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
        stopped += f" (repeats told, not trained: {self.repeats})" if self.repeats else ""
        print(f"[flipsearch] {done}/{self.total} trials  ok {c['ok']} failed {c['failed']} "
              f"diverged {c['diverged']}{stopped}  front sizes {fronts}  {time.time() - self.t0:.0f}s",
              file=sys.stderr, flush=True)
