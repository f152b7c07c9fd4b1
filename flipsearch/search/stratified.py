"""Stratified MO-ASHA (`--scheduler stratified-asha`): successive halving that ranks a trial
against its own kind, on predicted final values, and runs every trial of an arm that ends
near the front in full.

Why. MO-ASHA ranks every trial at a rung against all trials recorded there. When the space
holds structurally different arms (methods; categorical knobs such as ce init=old/scratch,
fd/mpt distance), the early rank is set by the arm more than by the final quality: fd starts
next to M1 (low NFR after one epoch), mpt from scratch starts far from it. Replayed on the
embedded default's recorded curves (bench/replay.py, 48 configurations of ce / bct / fd / mpt
per scenario, 9 epochs, 200 orderings, 2 workers; bench/results.md), the Spearman correlation
of epoch-1 with epoch-9 validation accuracy is 0.21 in both scenarios, MO-ASHA completes 1 of
5 (class-incremental) and 1-2 of 4 (exclusive-op) full-budget front members and reaches 100 %
of the full-budget validation hypervolume in no ordering.

What the replay showed (figures: class-incremental / exclusive-op; "100 % <= 0.5": orderings
of 200 that reach the full-budget validation hypervolume within half the full-budget compute,
the issue's target being >= 50; "used": compute over the full budget):
- ranking within strata (study, method, categorical knobs) protects a slow-starting arm from
  a fast one; predicted final values (value at the rung + the median gain of the stratum's
  complete trials from there to the end) let strata compete again; a second bracket that
  skips the first rung gives late bloomers a second chance. Together (this scheduler's
  previous default): 8 / 14 of 200, used 0.57 / 0.67.
- the rest is not a ranking problem. The last front members are late bloomers within their
  own arm: on class-incremental two of the five are last of their mpt stratum at epoch 1 and
  two at epoch 3, and curves still cross at the last epoch (a bct NFR of 0.031 at epoch 8
  ends at 0.020 at epoch 9). Continuing only trials whose optimistic prediction (predicted
  final values plus the 75th-100th percentile of the prediction error) lies on the front of
  complete trials reaches 100 % in 0-6 of 100 orderings. Within an arm whose knobs are mild,
  the final rank is close to a draw.
- so the unit of promotion is the arm: once the complete trials' final values show which
  arms end on (or near) the front, every trial of those arms runs in full, and arms seen to
  end off it stop early. That alone (`front-bare`: on the front exactly, no exploration or
  elimination): 53 / 62 of 200. Counting an arm within 0.1 of the front (additive
  ε-indicator, objectives scaled to the complete trials' range) as near, running an arm
  nobody has seen to the end in full once (a stratum's first arrivals would otherwise be
  ranked on the values that mislead), and stopping at its first rung every trial of an arm
  seen to end off the front twice: 63 / 120 of 200 (this default), used 0.57 / 0.51, the
  full-budget front found in the median ordering (1.00 / 1.00 of its members), 99 % of the
  validation HV at 0.08 / 0.18 of the compute (MO-ASHA 0.15 / 0.19), test HV of the chosen
  front at 50 % and 100 % of the compute 0.999 / 1.000 and 1.000 / 1.000 of the full-budget
  front's (full-budget random order 0.996 / 1.000 and 0.996 / 1.000). A second bracket on top
  costs compute and loses (40 / 79 of 100-200); eliminating after one complete trial
  instead of two loses mpt on class-incremental (25 of 100).
- the price: an arm near the front is never thinned. In a space where every arm ends near
  the front (two methods, both on it) nothing is stopped, as in a full-budget search, and a
  knob with a strong effect inside an arm (a learning rate) is not pruned within a front arm.
  `search.front_strata: false` turns the rule off (ranking only). The held-out check, a
  Fashion-MNIST / cnn8 table recorded after these choices (fair space: each method searches
  its learning rate; cut at 18 configurations in 7 arms, 5 of them on the front): every arm
  ends near the front, so 17 of 18 run in full (used 0.96) and the figures equal random
  order's (99 % at 0.41; 100 % within half the compute in 1 of 200 orderings, as for a
  perfect predictor), where MO-ASHA uses 0.49 but reaches 99 % in 64 of 200 orderings.

How. `StratifiedRungs` is `ParetoRungs` (same rungs, Pareto + ε-net ranking, Ray's cutoff,
NaN handling, decisions never revisited) with `_decide` applying the front rule
(`front_strata`, `_front_rule`) to a feasible newcomer, else choosing the peers (same stratum
and bracket; or every predictable peer on shifted values), and `_rung_for` giving a
bracket's trials its ladder. `StratifiedMOASHAScheduler` is `MOASHAScheduler` (same result
keys, pack member stops, save/restore) whose `on_trial_add` reads each trial's stratum from
its Ray config (a pack's members from `config["pack"]`) and whose `on_trial_result` also
reads a pack's complete members' final validation values from its last report
(`rows_json`). Strata, brackets, complete trials' final values and violations are in the
state, so `--resume` continues with the same groups; a resume with another scheduler,
bracket count, prediction or front setting is refused.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import UsageError
from ..objectives import SELECTION_PREFIX, Constraint, Objective
from .._pareto import pareto_mask, signs
from .scheduler import CONTINUE, STOP, MOASHAScheduler, ParetoRungs, _enc

STATE_VERSION = 1
FRONT_TOL, EXPLORE, ELIMINATE = 0.1, 1, 2   # chosen on the replay (module docstring)
Stratum = Callable[[Mapping[str, Any]], str]


def default_stratum(config: Mapping[str, Any], categorical: Mapping[str, Iterable[str]] | None = None) -> str:
    """The stratum of a sweep trial's Ray config ({"study", "config": TrialConfig dict}, or a
    pack member's): its study, its method, and the values of its categorical hyperparameters
    (those `categorical` names per method; without it, every str/bool-valued one). These are
    the structural choices that shift where a learning curve starts (ce init=old starts at
    M1, init=scratch from chance)."""
    cfg = config.get("config", config)
    method = str(cfg.get("method", ""))
    hp = cfg.get("hparams") or {}
    names = set(categorical.get(method, ())) if categorical is not None else \
        {k for k, v in hp.items() if isinstance(v, (str, bool))}
    parts = [str(config.get("study", "")), method] + [f"{k}={hp[k]}" for k in sorted(names) if k in hp]
    return ":".join(parts)


class StratifiedRungs(ParetoRungs):
    """`ParetoRungs` where a newcomer at a rung is ranked only against the trials of its own
    stratum (and bracket) recorded there, and continues if it is in their top ceil(n_s/η).

    A trial's stratum is set with `assign` before its first result (a trial never assigned
    is in the stratum ""). With `brackets` B > 1, trials are spread over B brackets in
    arrival order, bracket b judged only from the b-th rung on (bracket len(rungs) has no
    rung: its trials get the full budget), in shares proportional to e^(rungs_b - rungs_0)
    (Ray's and Syne Tune's asynchronous Hyperband weights), drawn by a low-discrepancy
    sequence so that any prefix of arrivals is spread close to those shares."""

    def __init__(self, directions: Sequence[str], *, max_t: float, grace_period: float = 1,
                 reduction_factor: float = 3, brackets: int = 1, predict: bool = False, min_complete: int = 1,
                 front: bool = False, front_tol: float = FRONT_TOL, explore: int = EXPLORE,
                 eliminate: int = ELIMINATE):
        super().__init__(directions, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
        self.predict, self.min_complete = bool(predict), int(min_complete)
        self.front, self.front_tol = bool(front), float(front_tol)
        if not (math.isfinite(self.front_tol) and self.front_tol >= 0):
            raise UsageError(f"scheduler front_tol must be a number >= 0, got {front_tol!r}")
        for name, v in (("explore", explore), ("eliminate", eliminate)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise UsageError(f"scheduler {name} must be an integer >= 0, got {v!r}")
        self.explore, self.eliminate = int(explore), int(eliminate)
        self.finals: dict[str, tuple[float, ...]] = {}  # complete trials' final values (predict, front)
        self.final_violations: dict[str, float] = {}
        if isinstance(brackets, bool) or not isinstance(brackets, numbers.Integral) or brackets < 1:
            raise UsageError(f"scheduler brackets must be an integer >= 1, got {brackets!r}")
        self.n_brackets = min(int(brackets), len(self.rungs) + 1)
        w = [math.exp(-b) for b in range(self.n_brackets)]
        self._cum = [sum(w[: b + 1]) / sum(w) for b in range(self.n_brackets)]
        self.strata: dict[str, str] = {}
        self.brackets: dict[str, int] = {}

    def assign(self, trial_id: str, stratum: str) -> None:
        """Put a new trial in `stratum` and a bracket (a known trial keeps its own: a resume)."""
        tid = str(trial_id)
        if tid in self.strata:
            return
        self.strata[tid] = str(stratum)
        u = (len(self.brackets) * 0.6180339887498949) % 1.0      # golden-ratio sequence
        self.brackets[tid] = next(b for b, c in enumerate(self._cum) if u < c + 1e-12)

    def _rung_for(self, trial_id: str, t: float) -> float | None:
        rung = self.rung_of(t)
        b = self.brackets.get(str(trial_id), 0)
        if rung is None or b >= len(self.rungs) or rung < self.rungs[b]:
            return None
        return rung

    def _kind(self, trial_id: str) -> tuple[str, int]:
        return self.strata.get(trial_id, ""), self.brackets.get(trial_id, 0)

    def on_result(self, trial_id: str, t: float, values: Sequence[float], violation: float = 0.0,
                  *, final: bool = False) -> str:
        """`ParetoRungs.on_result`, keeping a complete trial's final values (t >= max_t) for
        the predictions."""
        if (self.predict or self.front) and float(t) >= self.max_t and trial_id not in self.stopped:
            vals = tuple(float(x) for x in values)
            if all(math.isfinite(x) for x in vals):
                self.finals[str(trial_id)] = vals             # a complete trial: its curve's end
                viol = float(violation)
                self.final_violations[str(trial_id)] = math.inf if math.isnan(viol) else viol
        return super().on_result(trial_id, t, values, violation, final=final)

    def _shift(self, kind: tuple[str, int], rung: float) -> np.ndarray | None:
        """Median (final - value at `rung`) over the complete trials of one stratum and
        bracket; None before the first of them completes."""
        at = {tid: vals for tid, vals, _ in self._recorded[rung]}
        d = [np.subtract(f, at[tid]) for tid, f in self.finals.items() if tid in at and self._kind(tid) == kind]
        return np.median(d, axis=0) if len(d) >= self.min_complete else None

    def front_strata(self) -> set[str]:
        """The strata with a feasible complete trial near the Pareto front of all feasible
        complete trials' final values: within `front_tol` of it by the additive ε-indicator,
        objectives scaled to the range of those final values (0: on the front)."""
        ids = [t for t in self.finals if self.final_violations.get(t, 0.0) <= 0]
        if not ids:
            return set()
        w = np.array([self.finals[t] for t in ids], dtype=float) * signs(self.directions)
        span = np.ptp(w, axis=0)
        w = w / np.where(span > 0, span, 1.0)
        front = w[pareto_mask(w, ["min"] * w.shape[1])]
        eps = np.max(w[:, None, :] - front[None, :, :], axis=2).min(axis=1)  # smallest shift onto the front
        return {self.strata.get(t, "") for t, e in zip(ids, eps) if e <= self.front_tol + 1e-12}

    def _front_rule(self, stratum: str) -> str | None:
        """continue / stop by the stratum's standing on the front of complete trials, or None
        (rank the trial)."""
        if stratum in self.front_strata():
            return CONTINUE                                      # within an arm on the front, ranks are noise
        complete = sum(self.strata.get(t, "") == stratum for t in self.finals)
        if complete < self.explore:
            return CONTINUE                                      # an arm not yet seen to the end
        if self.eliminate and complete >= self.eliminate:
            return STOP                                          # seen to the end, off the front
        return None

    def _decide(self, peers):
        me = peers[-1][0]
        mine = self._kind(me)
        rung = self._top[me]
        if self.front and np.isfinite(peers[-1][1]).all() and peers[-1][2] <= 0:
            decided = self._front_rule(mine[0])
            if decided is not None:
                return decided
        if self.predict:
            shift = {k: self._shift(k, rung) for k in {self._kind(p[0]) for p in peers}}
            if shift[mine] is not None:  # rank on predicted final values against every predictable peer
                pool = [(tid, tuple(np.add(v, shift[self._kind(tid)])), viol) for tid, v, viol in peers
                        if shift[self._kind(tid)] is not None]
                return super()._decide(pool)
        return super()._decide([p for p in peers if self._kind(p[0]) == mine])

    def rung_counts_by_stratum(self) -> dict[str, dict[float, dict[str, int]]]:
        """Per stratum and rung: trials recorded, continued, stopped."""
        out: dict[str, dict[float, dict[str, int]]] = {}
        for r in self.rungs:
            for tid, _, _ in self._recorded[r]:
                c = out.setdefault(self.strata.get(tid, ""), {}).setdefault(
                    r, {"recorded": 0, "continued": 0, "stopped": 0})
                c["recorded"] += 1
                c["stopped"] += self.stopped.get(tid) == r
                c["continued"] += (r, "continue") in self.decisions.get(tid, ())
        return out

    def state_dict(self) -> dict[str, Any]:
        """`ParetoRungs.state_dict` plus strata, brackets and complete trials' final values."""
        return {**super().state_dict(), "strata": dict(self.strata), "brackets": dict(self.brackets),
                "n_brackets": self.n_brackets, "predict": self.predict, "front": self._front_settings(),
                "finals": {tid: list(v) for tid, v in self.finals.items()},
                "final_violations": {tid: _enc(v) for tid, v in self.final_violations.items()},
                "stratified_version": STATE_VERSION}

    def _front_settings(self) -> list[Any]:
        return [self.front, self.front_tol, self.explore, self.eliminate] if self.front else [False]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output; refused for another scheduler, bracket count or
        prediction setting."""
        if state.get("stratified_version") != STATE_VERSION:
            raise UsageError("the saved scheduler state is not a stratified MO-ASHA state "
                             f"(stratified_version {state.get('stratified_version')!r}); resume with the "
                             "scheduler the sweep started with")
        saved = (state.get("n_brackets"), state.get("predict"), state.get("front", [False]))
        if saved != (self.n_brackets, self.predict, self._front_settings()):
            raise UsageError(f"the saved scheduler state has {saved[0]} bracket(s), predict {saved[1]}, front "
                             f"{saved[2]}; this sweep uses {self.n_brackets}, {self.predict}, {self._front_settings()}")
        super().load_state_dict(state)
        self.strata = {str(k): str(v) for k, v in state["strata"].items()}
        self.brackets = {str(k): int(v) for k, v in state["brackets"].items()}
        self.finals = {str(k): tuple(float(x) for x in v) for k, v in state["finals"].items()}
        self.final_violations = {str(k): float(v) for k, v in state.get("final_violations", {}).items()}


class StratifiedMOASHAScheduler(MOASHAScheduler):
    """Ray Tune scheduler running `StratifiedRungs`: MO-ASHA (same rungs, ranking, pack
    member stops, state and resume) with each trial ranked within its stratum.

    `stratum(config) -> str` maps a trial's Ray config (or a pack member's) to its stratum;
    the default is `default_stratum` with `categorical` (method -> names of its categorical
    hyperparameters, from the search space)."""

    name = "stratified-asha"

    def __init__(self, objectives: Iterable[Objective], constraints: Iterable[Constraint] = (), *,
                 time_attr: str = "epoch", max_t: float, grace_period: float = 1,
                 reduction_factor: float = 3, key_prefix: str = SELECTION_PREFIX,
                 stratum: Stratum | None = None, categorical: Mapping[str, Iterable[str]] | None = None,
                 brackets: int = 1, predict: bool = True, front: bool = True, front_tol: float = FRONT_TOL,
                 explore: int = EXPLORE, eliminate: int = ELIMINATE):
        super().__init__(objectives, constraints, time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, key_prefix=key_prefix)
        self.core = StratifiedRungs([o.direction for o in self.objectives], max_t=max_t,
                                    grace_period=grace_period, reduction_factor=reduction_factor,
                                    brackets=brackets, predict=predict, front=front, front_tol=front_tol,
                                    explore=explore, eliminate=eliminate)
        self.stratum = stratum or (lambda config: default_stratum(config, categorical))

    def on_trial_add(self, tune_controller, trial) -> None:
        """Ray's call for a new trial: put it (or each member of its pack) in its stratum."""
        super().on_trial_add(tune_controller, trial)
        config = trial.config or {}
        if "pack" in config:  # a pack: its members are ranked by their trial uids
            for member in config["pack"]:
                self.core.assign(member["trial_uid"], self.stratum(member))
        else:
            self.core.assign(trial.trial_id, self.stratum(config))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """MO-ASHA's decision; a pack's last report (its members' rows, `rows_json`) also gives
        each complete member's final validation values to the core, as a solo trial's last
        report does."""
        if "rows_json" in result and (self.core.predict or self.core.front):
            for row in json.loads(result["rows_json"]):
                obs = self._observation({self.time_attr: row.get("epochs"), **row}) \
                    if row.get("status") == "ok" and row.get("trial_uid") else None
                if obs is not None and obs[0] >= self.core.max_t:
                    self.core.on_result(str(row["trial_uid"]), *obs)
        return super().on_trial_result(tune_controller, trial, result)

    def rung_counts_by_stratum(self) -> dict[str, dict[float, dict[str, int]]]:
        """Per stratum and rung: trials recorded, continued, stopped."""
        return self.core.rung_counts_by_stratum()

    def debug_string(self) -> str:
        """MO-ASHA's status line, named, with the number of strata."""
        return super().debug_string().replace("Using MO-ASHA", "Using stratified MO-ASHA", 1) + \
            f"\nstrata: {len(set(self.core.strata.values()))}"
