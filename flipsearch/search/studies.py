"""The Optuna side of a sweep: one durable multi-objective study per scenario.

Studies live in an Optuna journal file in the output directory (`OUT/optuna.journal`), so
`optuna-dashboard OUT/optuna.journal` opens them and a killed sweep resumes where it was.
Only the sweep driver talks to Optuna; trials on other nodes never touch the journal. For an
object-store output the journal is mirrored to a local file and uploaded after every write.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ..objectives import Constraint, Objective, selection_view
from ..storage import Storage
from .space import SearchSpace

JOURNAL = "optuna.journal"
optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyBook:
    def __init__(self, space: SearchSpace, out: Storage, objectives: list[Objective],
                 constraints: list[Constraint], sampler: str, seed: int):
        self.space, self.out = space, out
        self.objectives, self.constraints = objectives, constraints
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
        directions = ["maximize" if o.direction == "max" else "minimize" for o in self.objectives]
        study = optuna.create_study(storage=self.storage, study_name=name, directions=directions,
                                    sampler=self._sampler(sampler, seed), load_if_exists=True)
        if [d.name.lower() for d in study.directions] != directions:
            from ..errors import UsageError

            raise UsageError(f"study {name!r} in {self.out.uri} was created with other objectives; "
                             "use a new --out directory")
        if sampler == "grid" and not study.trials:
            for point in self.space.grid():
                study.enqueue_trial(point)
        study.set_user_attr("objectives", [f"{o.metric}:{o.direction}" for o in self.objectives])
        study.set_user_attr("constraints", [str(c) for c in self.constraints])
        return study

    def reconcile(self, rows: pd.DataFrame) -> dict[str, int]:
        """After a crash: finish Optuna trials left RUNNING from the rows that did land, fail
        (and re-enqueue) those that did not. Returns rows already recorded per study."""
        done: dict[str, int] = {}
        for name, study in self.studies.items():
            mine = rows[rows["study"] == name] if len(rows) and "study" in rows else rows.iloc[0:0]
            by_number = {int(r["trial_number"]): r for _, r in mine.iterrows()}
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study.tell(t.number, state=TrialState.FAIL)  # the crash interrupted it
                if t.number in by_number:
                    self.record(name, t, by_number[t.number].to_dict())
                else:
                    study.enqueue_trial(t.params)  # rerun what the crash interrupted
            done[name] = len(mine)
        self.sync()
        return done

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

    def tell(self, study_name: str, trial: optuna.trial.Trial, row: dict[str, Any]) -> None:
        """Report a finished trial (the `Trial` that `ask` gave) with its row's outcome."""
        study = self.studies[study_name]
        values, state, constraints = self.outcome(row)
        trial.set_user_attr("status", str(row.get("status")))
        trial.set_user_attr("trial_uid", str(row.get("trial_uid") or ""))
        for name, violation in constraints.items():  # <= 0 is feasible; samplers and best_trials read these
            trial.set_constraint(name, violation)
        if state != TrialState.COMPLETE:
            trial.set_user_attr("error", str(row.get("error") or "")[:500])
        study.tell(trial, values, state=None if values else state, skip_if_finished=True)
        self.sync()

    def record(self, study_name: str, frozen: optuna.trial.FrozenTrial, row: dict[str, Any]) -> None:
        """Add a finished trial with `frozen`'s parameters and `row`'s outcome (after a
        crash, for a trial whose row landed but whose tell did not)."""
        values, state, constraints = self.outcome(row)
        self.studies[study_name].add_trial(optuna.trial.create_trial(
            state=state, values=values, params=frozen.params, distributions=frozen.distributions,
            constraints=constraints or None,
            user_attrs={"status": str(row.get("status")), "trial_uid": str(row.get("trial_uid") or ""),
                        "row_trial_number": int(row.get("trial_number"))}))

    def front_size(self, study_name: str) -> int:
        try:
            return len(self.studies[study_name].best_trials)
        except (ValueError, RuntimeError):
            return 0

    def sync(self) -> None:
        if not self.out.is_local:
            with open(self.journal_path, "rb") as f:
                self.out.write_bytes(f.read(), JOURNAL)
