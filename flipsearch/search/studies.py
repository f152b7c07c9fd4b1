"""The Optuna side of a sweep: one durable multi-objective study per scenario.

Studies live in an Optuna journal file in the output directory (`OUT/optuna.journal`), so
`optuna-dashboard OUT/optuna.journal` opens them and a killed sweep resumes where it was.
Only the sweep driver talks to Optuna; trials on other nodes never touch the journal. For an
object-store output the journal is mirrored to a local file and uploaded after every write.

The result rows, not the journal, are the truth. On `--resume` every study is reconciled
from them (`StudyBook.reconcile`): a lost journal is rebuilt trial by trial from the rows
(parameters and distributions from the search space, values from the validation metrics),
a torn last record (a crash mid-write) is dropped, and a journal damaged elsewhere is set
aside and rebuilt; each repair is said in one line (`StudyBook.notes`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
import os
from typing import Any

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ..objectives import Constraint, Objective, selection_view
from ..results import is_missing
from ..rundir import RunDir
from ..storage import Storage
from .space import SearchSpace

JOURNAL = RunDir.JOURNAL
optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyBook:
    """The sweep's Optuna studies, one per scenario. The result rows are the source of
    truth: `reconcile` makes the studies agree with them (after a crash, a lost or damaged
    journal), so no finished trial is hidden from the sampler and no two trials share a
    number or a `trial_uid`."""

    def __init__(self, space: SearchSpace, out: Storage, objectives: list[Objective],
                 constraints: list[Constraint], sampler: str, seed: int):
        self.space, self.out = space, out
        self.objectives, self.constraints = objectives, constraints
        self.notes: list[str] = []  # one line per repair made to the journal
        if out.is_local:
            self.journal_path = out.path(JOURNAL)
        else:  # mirror an object-store journal locally
            cache = os.path.expanduser(f"~/.cache/flipsearch/journals/{hashlib.sha256(out.uri.encode()).hexdigest()[:16]}")
            os.makedirs(cache, exist_ok=True)
            self.journal_path = os.path.join(cache, JOURNAL)
            if out.exists(JOURNAL):
                with open(self.journal_path, "wb") as f:
                    f.write(out.read_bytes(JOURNAL))
            elif os.path.exists(self.journal_path):
                os.remove(self.journal_path)
        out.makedirs()
        self._journal_missing = not os.path.exists(self.journal_path)  # lost (or a new sweep)
        self._fresh: set[str] = set()  # studies created now (a grid is enqueued after reconcile)
        note = repair_journal(self.journal_path, out.child_uri(JOURNAL))
        if note:
            self.notes.append(note)
        try:  # Optuna replays the whole journal here
            self.storage = JournalStorage(JournalFileBackend(self.journal_path))
        except _UNREADABLE as e:  # records that are JSON but that Optuna cannot replay
            why = f"Optuna cannot replay it: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.notes.append(_set_aside(self.journal_path, out.child_uri(JOURNAL), why))
            self.storage = JournalStorage(JournalFileBackend(self.journal_path))
        self.studies: dict[str, optuna.Study] = {}
        for i, scen in enumerate(space.scenarios):
            self.studies[scen.key] = self._open(scen.key, sampler, seed + i)

    def _sampler(self, kind: str, seed: int) -> optuna.samplers.BaseSampler:
        # Constraints reach the samplers through each trial's `set_constraint` values (Optuna 5).
        if kind == "nsga2":
            pop = self.space.population_size or max(4, min(50, self.space.trials_per_scenario // 2))
            return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
        if kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        return optuna.samplers.RandomSampler(seed=seed)  # random, and grid (points are enqueued)

    def _open(self, name: str, sampler: str, seed: int) -> optuna.Study:
        directions = [o.optuna_direction for o in self.objectives]
        existed = name in {s.study_name for s in self.storage.get_all_studies()}
        study = optuna.create_study(storage=self.storage, study_name=name, directions=directions,
                                    sampler=self._sampler(sampler, seed), load_if_exists=True)
        if [d.name.lower() for d in study.directions] != directions:
            from ..errors import UsageError

            raise UsageError(f"study {name!r} in {self.out.uri} was created with other objectives; "
                             "use a new --out directory")
        if not existed:
            self._fresh.add(name)
        with warnings.catch_warnings():  # optuna-dashboard's axis names; "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"val_{o.metric}" for o in self.objectives])
        study.set_user_attr("objectives", [f"{o.metric}:{o.direction}" for o in self.objectives])
        study.set_user_attr("constraints", [str(c) for c in self.constraints])
        return study

    def reconcile(self, rows: pd.DataFrame) -> dict[str, int]:
        """Make every study agree with the result rows (the truth). A trial left RUNNING by a
        crash is told its row's outcome if its row landed, else failed and re-enqueued; a
        row the study does not hold (its tell was lost, or the whole journal was) is added
        with its parameters rebuilt from the search space, under its own trial number (the
        numbers of trials lost in flight are kept by failed placeholders, so a new trial
        never takes a number a row already has). Replicate rows are never told to Optuna.
        Returns the search rows already recorded per study."""
        searched = rows
        if len(rows) and "replicate_of" in rows:
            searched = rows[rows["replicate_of"].isna()]
        done: dict[str, int] = {}
        rebuilt = 0
        for name, study in self.studies.items():
            mine = searched[searched["study"] == name] if len(searched) and "study" in searched else searched.iloc[0:0]
            records = sorted(mine.to_dict("records"), key=lambda r: int(r["trial_number"]))
            by_uid = {str(r["trial_uid"]): r for r in records if not is_missing(r.get("trial_uid"))}
            by_number: dict[int, list[dict]] = {}
            for r in records:
                by_number.setdefault(int(r["trial_number"]), []).append(r)
            trials = study.get_trials(deepcopy=False)
            # Rows the study already holds: told trials carry their row's uid and status.
            held = {t.user_attrs.get("trial_uid") for t in trials
                    if t.state.is_finished() and "status" in t.user_attrs}
            for t in trials:
                if t.state != TrialState.RUNNING:
                    continue
                uid = t.user_attrs.get("trial_uid")
                row = by_uid.get(uid) if uid else None
                if row is None and not uid and len(by_number.get(t.number, [])) == 1:
                    row = by_number[t.number][0]  # a trial asked before uids were set at ask time
                if row is not None and str(row["trial_uid"]) not in held:
                    # Its row landed, its tell did not. Close the interrupted ask and add the
                    # finished trial with the row's outcome and the asked parameters (public API only).
                    study.tell(t.number, state=TrialState.FAIL)
                    self.record(name, row, frozen=t)
                    held.add(str(row["trial_uid"]))
                    continue
                study.tell(t.number, state=TrialState.FAIL)  # the crash interrupted it
                if row is None and t.params:
                    study.enqueue_trial(t.params)  # rerun what the crash interrupted
            for r in records:
                if str(r.get("trial_uid")) in held:
                    continue
                while len(study.get_trials(deepcopy=False)) < int(r["trial_number"]):
                    study.add_trial(optuna.trial.create_trial(
                        state=TrialState.FAIL,
                        user_attrs={"status": "lost", "placeholder": "a trial lost in flight; its number stays taken"}))
                self.record(name, r)
                held.add(str(r.get("trial_uid")))
                rebuilt += 1
            done[name] = len(records)
            if name in self._fresh and self.space.sampler == "grid":
                self._enqueue_grid(study, records)
        if self._journal_missing and rebuilt:
            self.notes.append(f"the Optuna journal {self.out.child_uri(JOURNAL)} was missing; rebuilt it from "
                              f"{rebuilt} result row{'s' if rebuilt != 1 else ''}")
        self.sync()
        return done

    def _enqueue_grid(self, study: optuna.Study, records: list[dict]) -> None:
        """A new grid study gets every grid point that no row has run yet."""
        ran = []
        for r in records:
            params = self._params_of(r)[0]
            if params is not None:
                ran.append(params)
        for point in self.space.grid():
            if point in ran:
                ran.remove(point)
            else:
                study.enqueue_trial(point)

    def _params_of(self, row: dict[str, Any]) -> tuple[dict | None, dict | None]:
        from ..errors import UsageError
        from ..results import decode_config

        try:
            cfg = decode_config(row)
        except (UsageError, ValueError, TypeError, KeyError):
            return None, None
        return self.space.optuna_params(cfg.method, self.space.point(cfg), cfg.seed)

    def outcome(self, row: dict[str, Any]) -> tuple[list[float] | None, TrialState, dict[str, float]]:
        """What Optuna is told of a row, from its **validation** metrics only (`val_*`: the
        test set never reaches a sampler): (values, state, constraint violations). Only `ok`
        rows with finite objectives are COMPLETE; a `stopped` row (early stopping) is
        PRUNED, anything else FAIL, so no NaN reaches a sampler and no truncated trial is on
        a front."""
        view = selection_view(row)
        values = [view.get(o.metric) for o in self.objectives]
        if row.get("status") == "ok" and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return [float(v) for v in values], TrialState.COMPLETE, {str(c): c.violation(view) for c in self.constraints}
        return None, TrialState.PRUNED if row.get("status") == "stopped" else TrialState.FAIL, {}

    def tell(self, study_name: str, trial: optuna.trial.Trial, row: dict[str, Any], *, repeat: bool = False) -> None:
        """Report a finished trial (the `Trial` that `ask` gave) with its row's outcome. With
        `repeat`, `trial` is a suggestion that repeated `row`'s configuration and was not
        trained: it gets the row's outcome as evidence, marked `repeat_of`, never the row's
        identity (the row stays held by its own trial)."""
        study = self.studies[study_name]
        values, state, constraints = self.outcome(row)
        trial.set_user_attr("status", str(row.get("status")))
        trial.set_user_attr("repeat_of" if repeat else "trial_uid", str(row.get("trial_uid") or ""))
        for name, violation in constraints.items():  # <= 0 is feasible; samplers and best_trials read these
            trial.set_constraint(name, violation)
        if state != TrialState.COMPLETE:
            trial.set_user_attr("error", str(row.get("error") or "")[:500])
        study.tell(trial, values, state=None if values else state, skip_if_finished=True)
        self.sync()

    def record(self, study_name: str, row: dict[str, Any], frozen: optuna.trial.FrozenTrial | None = None) -> None:
        """Add a finished trial with `row`'s outcome (after a crash, for a trial whose row
        landed but whose tell did not, or to rebuild a lost journal): its parameters are
        `frozen`'s, or rebuilt from the row's configuration and the search space."""
        values, state, constraints = self.outcome(row)
        if frozen is not None:
            params, dists = frozen.params, frozen.distributions
        else:
            params, dists = self._params_of(row)
        attrs = {"status": str(row.get("status")), "trial_uid": str(row.get("trial_uid") or ""),
                 "row_trial_number": int(row.get("trial_number"))}
        if state != TrialState.COMPLETE:
            attrs["error"] = str(row.get("error") or "")[:500]
        make = lambda p, d: optuna.trial.create_trial(  # noqa: E731
            state=state, values=values, params=p, distributions=d, constraints=constraints or None, user_attrs=attrs)
        try:
            trial = make(params or {}, dists or {})
        except ValueError:  # a value outside its distribution: keep the outcome, not the params
            attrs["params_lost"] = "the row's parameters do not fit the search space"
            trial = make({}, {})
        self.studies[study_name].add_trial(trial)

    def front_size(self, study_name: str) -> int:
        try:
            return len(self.studies[study_name].best_trials)
        except (ValueError, RuntimeError):
            return 0

    def sync(self) -> None:
        if not self.out.is_local:
            with open(self.journal_path, "rb") as f:
                self.out.write_bytes(f.read(), JOURNAL)


# What a journal whose records are JSON but not a consistent history raises when replayed.
_UNREADABLE = (ValueError, KeyError, TypeError, IndexError, AttributeError)


def repair_journal(path: str, uri: str) -> str | None:
    """Make the journal at `path` readable before Optuna opens it; returns one line saying
    what was done, or None when nothing was needed.

    A crash in the middle of a write leaves a torn last record: it is dropped (Optuna
    itself would skip it, then append the next record onto it and fail with a
    JSONDecodeError on the next read). A record damaged anywhere else cannot be trusted:
    the journal is set aside (`optuna.journal.damaged-<time>`) and the studies are rebuilt
    from the result rows. A journal that cannot be read at all is an error naming it."""
    from ..errors import FlipsearchError

    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FlipsearchError(f"cannot read the Optuna journal {uri} ({e.strerror or e}); move it away and rerun "
                              "with --resume: the studies are then rebuilt from the result rows") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    bad = [i for i, line in enumerate(lines) if not _json_line(line)]
    torn = bool(tail.strip())
    if bad and bad[-1] == len(lines) - 1 and not torn:
        lines.pop()  # a torn last record onto which the next one was never appended
        bad.pop()
        torn = True
    if bad:
        return _set_aside(path, uri, f"record {bad[0] + 1} of {len(lines)} is not valid JSON")
    if not torn:
        return None
    keep = b"".join(line + b"\n" for line in lines)
    with open(path, "r+b") as f:
        f.truncate(len(keep))
        f.flush()
        os.fsync(f.fileno())
    return (f"{uri}: dropped a torn last record (a write interrupted by a crash); "
            f"{len(lines)} records kept, the studies are checked against the result rows")


def _json_line(line: bytes) -> bool:
    import json

    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def _set_aside(path: str, uri: str, why: str) -> str:
    import time

    from ..errors import FlipsearchError

    aside = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        os.replace(path, aside)
    except OSError as e:
        raise FlipsearchError(f"the Optuna journal {uri} is damaged ({why}) and cannot be moved aside "
                              f"({e.strerror or e}); move it away yourself and rerun with --resume") from None
    return (f"{uri} is damaged ({why}); set it aside as {os.path.basename(aside)} and rebuilt the studies "
            "from the result rows")
