"""MO-ASHA with one rung ladder per (scenario, method): equal compute for `search.budget: per-method`.

MO-ASHA (`scheduler.py`) ranks a trial at a rung against every trial recorded there, so a
method whose trials start worse is stopped more and spends less compute; a method that
starts well spends more. Under a per-method budget each method should get the same search
effort, so here a trial is ranked only against the trials of its own method in its own
scenario: every method's trials are promoted by the same rule (the top ceil(n/η) of its own
peers at each rung), and with the same number of trials each method runs the same update
epochs up to the order in which results arrive (the report's budget table shows them).

The decision core is `ParetoRungs`, one per group; `MethodRungs` routes each result to its
group's core by the trial's (study, method), which the scheduler learns from the trial's
config when Ray adds the trial (a pack's members, ranked by their trial uids, share one).
Its state is the merged state `ParetoRungs.state_dict` has (what the report reads) plus
each group's own state under `per_method` (what a resume loads).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import UsageError
from .scheduler import MOASHAScheduler, ParetoRungs


class MethodRungs:
    """`ParetoRungs` per group (a study and method); the same interface, merged views."""

    def __init__(self, directions: Sequence[str], *, max_t: float, grace_period: float = 1,
                 reduction_factor: float = 3):
        self._kw = {"max_t": max_t, "grace_period": grace_period, "reduction_factor": reduction_factor}
        self._proto = ParetoRungs(directions, **self._kw)  # validates the settings once
        self.directions, self.rungs = self._proto.directions, self._proto.rungs
        self.max_t, self.grace_period, self.reduction_factor = max_t, grace_period, reduction_factor
        self.parts: dict[str, ParetoRungs] = {}
        self.group_of: dict[str, str] = {}  # trial id or pack member uid -> "study/method"

    def part(self, group: str) -> ParetoRungs:
        if group not in self.parts:
            self.parts[group] = ParetoRungs(self.directions, **self._kw)
        return self.parts[group]

    def on_result(self, trial_id: str, t: float, values: Sequence[float], violation: float = 0.0,
                  *, final: bool = False) -> str:
        return self.part(self.group_of.get(str(trial_id), "")).on_result(trial_id, t, values, violation,
                                                                          final=final)

    @property
    def decisions(self) -> dict[str, list[tuple[float, str]]]:
        return {tid: d for p in self.parts.values() for tid, d in p.decisions.items()}

    @property
    def stopped(self) -> dict[str, float]:
        return {tid: r for p in self.parts.values() for tid, r in p.stopped.items()}

    def recorded(self, rung: float) -> list[dict[str, Any]]:
        return [r for p in self.parts.values() for r in p.recorded(rung)]

    def rung_counts(self) -> dict[float, dict[str, int]]:
        out = {r: {"recorded": 0, "continued": 0, "stopped": 0} for r in self.rungs}
        for p in self.parts.values():
            for r, c in p.rung_counts().items():
                for k, v in c.items():
                    out[r][k] += v
        return out

    def state_dict(self) -> dict[str, Any]:
        merged = self._proto.state_dict()
        parts = {g: p.state_dict() for g, p in self.parts.items()}
        merged["recorded"] = [[r, [e for s in parts.values() for rr, es in s["recorded"] if rr == r for e in es]]
                              for r in self.rungs]
        merged["decisions"] = {tid: d for s in parts.values() for tid, d in s["decisions"].items()}
        merged["stopped"] = {tid: r for s in parts.values() for tid, r in s["stopped"].items()}
        merged["per_method"] = parts
        return merged

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "per_method" not in state:
            raise UsageError("the saved scheduler state ranks all methods together; this sweep "
                             "(search.budget: per-method) ranks each method against its own trials")
        self._proto.load_state_dict({**state, "recorded": [], "decisions": {}, "stopped": {}})  # checks settings
        self.parts = {}
        for group, part in state["per_method"].items():
            self.part(group).load_state_dict(part)


class MethodMOASHAScheduler(MOASHAScheduler):
    """`MOASHAScheduler` whose core is `MethodRungs` (module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.core
        self.core = MethodRungs(c.directions, max_t=c.max_t, grace_period=c.grace_period,
                                reduction_factor=c.reduction_factor)

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        config = trial.config or {}
        for member in config.get("pack") or [config]:
            group = f"{member.get('study', '')}/{(member.get('config') or {}).get('method', '')}"
            self.core.group_of[trial.trial_id] = group  # a pack holds one study and method
            if member.get("trial_uid"):
                self.core.group_of[str(member["trial_uid"])] = group
