"""MO-ASHA: multi-objective asynchronous successive halving for Ray Tune (Schmucker et al. 2021).

Budget is counted in `time_attr` units (epochs by default). Rungs sit at grace, grace·η,
grace·η², … strictly below max_t (`rung_ladder`). When a trial's first result at or past a
rung arrives it is recorded there and ranked against every trial recorded at that rung so
far; it goes on only if it ranks in the top ceil(n/η), n counting itself. Nothing waits for a
rung to fill: early arrivals are judged against the few trials already there, and a decision
is never revisited (stopping-based ASHA, as Ray's `AsyncHyperBandScheduler`).

Ranking at a rung (`pareto_order`), best first:
1. feasible trials (total constraint violation <= 0) by non-dominated sorting over the
   objectives, directions respected; then infeasible ones by total violation, smaller first,
   each group of equal violation sorted like the feasible ones (Optuna's constrained
   ordering, `optuna.study._multi_objective._fast_non_domination_rank`);
2. within a front, the ε-net order of Schmucker et al. (`flipsearch._pareto.eps_net_order`): objectives scaled to [0, 1] over the
   front, the seed is the best point in the first objective, then greedily the point
   farthest from those already taken. Chosen over crowding distance because it is a total
   order (crowding gives every boundary point inf and every duplicate 0, so ties are the
   rule at small rungs) and it is the paper's selection (Syne Tune's MOASHA default); over
   hypervolume contribution because it needs no reference point and stays O(f²) in 3-D;
3. exact ties go to the trial being decided, as in Ray, where `cur_rew < cutoff` stops and an
   equal reward continues; remaining ties by objective values, then arrival order.
A trial with a NaN or infinite objective is recorded (counted as stopped) but stopped at
once and left out of n, as Ray's `nanpercentile` leaves NaN rewards out of the cutoff.

The cutoff mirrors Ray's `_Bracket.on_result`: the first trial at a rung always continues;
after that Ray stops a trial whose reward is below the (1 − 1/η) percentile of the rewards
recorded before it, so with a single recorded trial the second one continues only if it is
at least as good (checked on Ray 2.60: rewards 2 then 1 at one rung, η=3 -> CONTINUE,
STOP). In ranks Ray's bar for the newcomer lies between positions ⌊(n−2)/η⌋+1 and
⌊(n−2)/η⌋+2, interpolating between values; ceil(n/η) = ⌊(n−1)/η⌋+1 lies within that band
and matches it exactly when (n−2)/η is an integer; it never lets in more than Ray's upper
bound. "Fewer than η trials at a rung: continue" is not what Ray does and is not done here.

Differences from Ray's ASHA, on purpose: there is no rung at max_t and the scheduler never
stops a trial for reaching max_t (the trainable ends itself, so a finished trial is
complete, not stopped); a trial whose first report skips rungs is recorded only at the
highest rung it reached, lower ones are not back-filled later; NaN/inf results stop.

Telling Optuna (checked on Optuna 5.0, 2-objective studies, NSGA-II and TPE): tell a
stopped trial `study.tell(trial, state=TrialState.PRUNED)` with no values. `best_trials`
holds COMPLETE trials only; NSGA-II builds its populations and generations from COMPLETE
trials only (the #2853 crash, pruned parents with `values=None`, is gone); TPE keeps PRUNED
trials as evidence, after the complete ones when splitting below/above, and its
multi-objective below-weights no longer read a pruned trial's values (#5260 is gone).
Never give a stopped trial intermediate values: `Trial.report` refuses multi-objective
studies, and values written through the storage make TPESampler raise RuntimeError
("A single direction cannot be retrieved from a multi-objective study") in
`_get_pruned_trial_score` on every later ask. FAIL also keeps both samplers working but
TPE drops FAIL trials entirely, losing the evidence that the region is poor, and the
sweep means FAIL for crashes. Keep the rung and its values as user attrs instead.

Driver wiring: each epoch the trainable reports `{time_attr: epoch, key_prefix + metric:
value, …}` for every objective and constraint metric (validation values, e.g. `val_nfr`);
a result missing `time_attr` or an objective key is ignored, like Ray. After `Tuner.fit`,
`scheduler.stopped` ({trial_id: rung}) and `scheduler.decisions` ({trial_id: [(rung,
"continue"|"stop"), …]}) give the status=stopped rows and the budget reached;
`scheduler.rung_counts()` gives recorded/continued/stopped per rung for the report. Ray
does not save a scheduler on experiment checkpoints: persist `state_dict()` (JSON) next
to the study journal and `load_state_dict()` it into a fresh scheduler on resume.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from ..errors import UsageError
from ..objectives import SELECTION_PREFIX, Constraint, Objective
from .._pareto import eps_net_order, fronts, signs
from .pack_stops import MEMBERS

CONTINUE, STOP = "continue", "stop"
STATE_VERSION = 1


def rung_ladder(grace_period: float, reduction_factor: float, max_t: float) -> tuple[float, ...]:
    """The rung budgets grace, grace·η, grace·η², … strictly below `max_t`.

    Integers stay integers (budgets in epochs). grace_period must be > 0 and <= max_t,
    reduction_factor > 1; grace_period == max_t gives no rung (nothing is ever stopped).
    """
    g, eta, m = grace_period, reduction_factor, max_t
    for name, v in (("grace_period", g), ("reduction_factor", eta), ("max_t", m)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise UsageError(f"scheduler {name} must be a finite number, got {v!r}")
    if g <= 0:
        raise UsageError(f"scheduler grace_period must be > 0, got {g!r}")
    if eta <= 1:
        raise UsageError(f"scheduler reduction_factor must be > 1, got {eta!r}")
    if g > m:
        raise UsageError(f"scheduler grace_period {g!r} is larger than max_t {m!r}")
    if isinstance(g, numbers.Integral) and float(eta).is_integer():
        g, eta = int(g), int(eta)                                  # exact integer rungs: 1, 3, 9, …
    rungs, k = [], 0
    while (r := g * eta ** k) < m:
        rungs.append(r)
        k += 1
    return tuple(rungs)


def _fronts_then_eps(w: np.ndarray, idx: list[int], prefer: int | None) -> list[int]:
    """Non-dominated fronts of `w[idx]` (minimisation form), best first, each in ε-net order."""
    return [i for front in fronts(w, ["min"] * w.shape[1], idx) for i in eps_net_order(w, front, prefer)]


def pareto_order(values, directions: Sequence[str], violations=None, prefer: int | None = None) -> list[int]:
    """Indices of the rows of `values` [n, k] best first, as MO-ASHA ranks a rung.

    Feasible rows (violation <= 0, or no `violations`) by non-dominated fronts, then
    infeasible ones by total violation (NaN counts as +inf), each group in fronts; within a
    front the ε-net order (see the module docstring). Exact ties go to row `prefer` (the
    trial being decided), then to the earlier row. Rows with a NaN or infinite value are
    left out.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be a 2-D array [n, k], got shape {v.shape}")
    if v.shape[1] != len(directions):
        raise ValueError(f"{len(directions)} directions given for {v.shape[1]} objectives")
    w = v * signs(directions)
    viol = np.zeros(len(v)) if violations is None else np.asarray(violations, dtype=float)
    viol = np.where(np.isnan(viol), np.inf, viol)
    finite = np.isfinite(w).all(axis=1)
    order = _fronts_then_eps(w, [i for i in range(len(v)) if finite[i] and viol[i] <= 0], prefer)
    infeasible = [i for i in range(len(v)) if finite[i] and viol[i] > 0]
    for level in sorted({float(viol[i]) for i in infeasible}):
        order += _fronts_then_eps(w, [i for i in infeasible if viol[i] == level], prefer)
    return order


def _enc(x: float) -> float | str:
    """A float for strict JSON: NaN and ±inf become the strings "nan", "inf", "-inf"."""
    x = float(x)
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _budget(x: float | str) -> float:
    x = float(x)
    return int(x) if x.is_integer() else x


class ParetoRungs:
    """The MO-ASHA decision core: rungs, their recorded trials, the decisions. No Ray.

    `directions` is one "max"/"min" per objective. `on_result` is called with every result of
    a trial (its budget `t`, its objective values in `directions` order, its total constraint
    violation) and answers "continue" or "stop".

    Args:
        directions: one "max" or "min" per objective.
        max_t, grace_period, reduction_factor: the rungs, as `rung_ladder` builds them.
    """

    def __init__(self, directions: Sequence[str], *, max_t: float, grace_period: float = 1,
                 reduction_factor: float = 3):
        signs(directions)
        self.directions = tuple(directions)
        self.max_t, self.grace_period, self.reduction_factor = max_t, grace_period, reduction_factor
        self.rungs = rung_ladder(grace_period, reduction_factor, max_t)
        # rung -> [(trial_id, values, violation)] in arrival order
        self._recorded: dict[float, list[tuple[str, tuple[float, ...], float]]] = {r: [] for r in self.rungs}
        self._top: dict[str, float] = {}            # trial_id -> highest rung it is recorded at
        self.decisions: dict[str, list[tuple[float, str]]] = {}
        self.stopped: dict[str, float] = {}         # trial_id -> rung it was stopped at

    def rung_of(self, t: float) -> float | None:
        """The highest rung <= t, or None (t before the first rung, at/after max_t, or NaN)."""
        t = float(t)
        if not math.isfinite(t) or t >= self.max_t:
            return None
        below = [r for r in self.rungs if r <= t]
        return below[-1] if below else None

    def on_result(self, trial_id: str, t: float, values: Sequence[float], violation: float = 0.0,
                  *, final: bool = False) -> str:
        """Record `trial_id` at the rung its budget `t` reached, if that is a new rung for
        it, and decide. A stopped trial stays stopped. `final=True` (a trial that ended by
        itself) records for later comparisons but decides nothing."""
        if trial_id in self.stopped:
            return STOP
        vals = tuple(float(x) for x in values)
        if len(vals) != len(self.directions):
            raise ValueError(f"{len(vals)} values given for {len(self.directions)} objectives")
        rung = self._rung_for(trial_id, t)
        if rung is None or self._top.get(trial_id, -math.inf) >= rung:
            return CONTINUE
        viol = float(violation)
        viol = math.inf if math.isnan(viol) else viol
        peers = self._recorded[rung]
        peers.append((str(trial_id), vals, viol))
        self._top[trial_id] = rung
        if final:
            return CONTINUE
        decision = self._decide(peers)
        self.decisions.setdefault(trial_id, []).append((rung, decision))
        if decision == STOP:
            self.stopped[trial_id] = rung
        return decision

    def _rung_for(self, trial_id: str, t: float) -> float | None:
        """The rung `trial_id` is judged at after budget `t` (subclasses give trials other ladders)."""
        return self.rung_of(t)

    def _decide(self, peers: list[tuple[str, tuple[float, ...], float]]) -> str:
        """The last of `peers` is the newcomer."""
        values = np.array([p[1] for p in peers], dtype=float)
        if not np.isfinite(values[-1]).all():
            return STOP
        order = pareto_order(values, self.directions, [p[2] for p in peers], prefer=len(peers) - 1)
        n = len(order)                                   # finite rows only, like nanpercentile
        keep = math.ceil(n / self.reduction_factor - 1e-12)
        return CONTINUE if order.index(len(peers) - 1) < keep else STOP

    def recorded(self, rung: float) -> list[dict[str, Any]]:
        """The trials recorded at `rung`, in arrival order, with their values and violation."""
        return [{"trial_id": tid, "values": list(vals), "violation": viol}
                for tid, vals, viol in self._recorded[rung]]

    def rung_counts(self) -> dict[float, dict[str, int]]:
        """Per rung: trials recorded there, how many were told to continue, how many stopped."""
        out = {}
        for r in self.rungs:
            stopped = sum(1 for tid, _, _ in self._recorded[r] if self.stopped.get(tid) == r)
            continued = sum(1 for tid, _, _ in self._recorded[r]
                            if (r, CONTINUE) in self.decisions.get(tid, ()))
            out[r] = {"recorded": len(self._recorded[r]), "continued": continued, "stopped": stopped}
        return out

    def _settings(self) -> dict[str, Any]:
        return {"directions": list(self.directions), "rungs": list(self.rungs)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as strict JSON (`json.dumps(..., allow_nan=False)`)."""
        return {
            "version": STATE_VERSION,
            **self._settings(),
            "max_t": self.max_t, "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "recorded": [[r, [[tid, [_enc(x) for x in vals], _enc(viol)] for tid, vals, viol in self._recorded[r]]]
                         for r in self.rungs],
            "decisions": {tid: [[r, d] for r, d in ds] for tid, ds in self.decisions.items()},
            "stopped": dict(self.stopped),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output. The directions and rungs must be this object's: a
        resumed sweep must not compare results across different ladders."""
        if state.get("version") != STATE_VERSION:
            raise UsageError(f"scheduler state version {state.get('version')!r} is not {STATE_VERSION}")
        saved = {"directions": list(state["directions"]), "rungs": [_budget(r) for r in state["rungs"]]}
        if saved != self._settings():
            raise UsageError(f"the saved scheduler state has directions {saved['directions']} and rungs "
                             f"{saved['rungs']}; this sweep uses {list(self.directions)} and {list(self.rungs)}")
        self._recorded = {r: [] for r in self.rungs}
        self._top = {}
        for r, rows in state["recorded"]:
            r = _budget(r)
            for tid, vals, viol in rows:
                self._recorded[r].append((tid, tuple(float(x) for x in vals), float(viol)))
                self._top[tid] = max(self._top.get(tid, -math.inf), r)
        self.decisions = {tid: [(_budget(r), d) for r, d in ds] for tid, ds in state["decisions"].items()}
        self.stopped = {tid: _budget(r) for tid, r in state["stopped"].items()}


class MOASHAScheduler(TrialScheduler):
    """Ray Tune scheduler running `ParetoRungs` on each trial's reported validation metrics.

    An objective's result key is `key_prefix + objective.metric` (e.g. "val_nfr"); constraints
    are evaluated on the result's `key_prefix`-keys with the prefix stripped. Trials run in
    FIFO order. `decisions`, `stopped` and `rung_counts()` come from the core.

    Args:
        objectives: what a rung ranks trials by (at least one), directions respected.
        constraints: a trial's total violation of these ranks it after every feasible trial.
        time_attr: the result key counting budget (epochs by default).
        max_t: the full budget; rungs lie strictly below it and no trial is stopped for reaching it.
        grace_period: the first rung (> 0, <= max_t).
        reduction_factor: η > 1: the rungs are grace·η^k and the top ceil(n/η) at a rung go on.
        key_prefix: the prefix of the reported validation metrics (`objectives.SELECTION_PREFIX`).
    """

    # One result per train() call: a STOP takes effect before the next epoch runs.
    _supports_buffered_results = False
    name = "mo-asha"  # search.scheduler's value; saved with the state so a resume keeps its scheduler

    def __init__(self, objectives: Iterable[Objective], constraints: Iterable[Constraint] = (), *,
                 time_attr: str = "epoch", max_t: float, grace_period: float = 1,
                 reduction_factor: float = 3, key_prefix: str = SELECTION_PREFIX):
        super().__init__()
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        if not self.objectives:
            raise UsageError("MO-ASHA needs at least one objective")
        self.time_attr, self.key_prefix = time_attr, key_prefix
        self.keys = tuple(key_prefix + o.metric for o in self.objectives)
        self.core = ParetoRungs([o.direction for o in self.objectives], max_t=max_t,
                                grace_period=grace_period, reduction_factor=reduction_factor)
        # Packs (pack_stops.py): publish(ray trial id, epoch, member uids stopped there)
        self.publish_member_stops: Callable[[str, float, list[str]], None] | None = None

    # ---- what the driver reads
    @property
    def decisions(self) -> dict[str, list[tuple[float, str]]]:
        return self.core.decisions

    @property
    def stopped(self) -> dict[str, float]:
        return self.core.stopped

    def rung_counts(self) -> dict[float, dict[str, int]]:
        return self.core.rung_counts()

    def state_dict(self) -> dict[str, Any]:
        return {"core": self.core.state_dict(), "time_attr": self.time_attr, "keys": list(self.keys),
                "scheduler": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("scheduler", "mo-asha") != self.name:  # states before the name were mo-asha's
            raise UsageError(f"the saved scheduler state is {state.get('scheduler')!r}'s; this sweep uses "
                             f"{self.name!r}: resume with the scheduler the sweep started with")
        if state.get("keys") != list(self.keys) or state.get("time_attr") != self.time_attr:
            raise UsageError(f"the saved scheduler state reads {state.get('keys')} by "
                             f"{state.get('time_attr')!r}; this sweep reads {list(self.keys)} by {self.time_attr!r}")
        self.core.load_state_dict(state["core"])

    def save(self, checkpoint_path: str) -> None:
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.state_dict(), f, allow_nan=False)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.load_state_dict(json.load(f))

    # ---- result -> core arguments
    def _observation(self, result: Mapping[str, Any]) -> tuple[float, list[float], float] | None:
        """(t, values, total violation), or None when the result lacks `time_attr` or an
        objective key (Ray's ASHA skips such results too)."""
        if self.time_attr not in result or any(k not in result for k in self.keys):
            return None

        def num(x: Any) -> float:
            try:
                return float(x)
            except (TypeError, ValueError):
                return math.nan

        p = self.key_prefix
        mapping = {k[len(p):]: v for k, v in result.items() if isinstance(k, str) and k.startswith(p)}
        violation = sum(max(0.0, c.violation(mapping)) for c in self.constraints)
        return num(result[self.time_attr]), [num(result[k]) for k in self.keys], violation

    # ---- Ray's TrialScheduler interface
    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """Objectives are given to the constructor; a single metric/mode is accepted and ignored."""
        return True

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        """Nothing to do: a trial enters the rungs with its first result."""

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if MEMBERS in result:
            return self._on_pack_result(trial, result)
        obs = self._observation(result)
        if obs is None:
            decision = STOP if trial.trial_id in self.core.stopped else CONTINUE
        else:
            decision = self.core.on_result(trial.trial_id, *obs)
        return TrialScheduler.STOP if decision == STOP else TrialScheduler.CONTINUE

    def _on_pack_result(self, trial: Trial, result: dict) -> str:
        """A pack's epoch: each member is ranked at its rung like a solo trial (its id is its
        trial uid); the ones stopped are published for the worker, which takes them out of
        the pack. The Ray trial itself always continues: the pack ends by itself."""
        stopped = []
        for uid, metrics in json.loads(result[MEMBERS]).items():
            obs = self._observation({self.time_attr: result.get(self.time_attr), **metrics})
            if obs is not None and self.core.on_result(uid, *obs) == STOP:
                stopped.append(uid)
        if self.publish_member_stops is not None:  # always, so the worker never waits for nothing
            self.publish_member_stops(trial.trial_id, result.get(self.time_attr), stopped)
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        obs = self._observation(result) if result else None
        if obs is not None:
            self.core.on_result(trial.trial_id, *obs, final=True)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        """Nothing to do: a failed trial keeps what it recorded at its rungs."""

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        """Nothing to do: a removed trial keeps what it recorded at its rungs."""

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in tune_controller.get_trials():
                if trial.status == status:
                    return trial
        return None

    def debug_string(self) -> str:
        counts = self.core.rung_counts()
        rungs = " | ".join(f"rung {r}: {c['recorded']} recorded, {c['stopped']} stopped" for r, c in counts.items())
        objs = ", ".join(f"{k}:{o.direction}" for k, o in zip(self.keys, self.objectives))
        return (f"Using MO-ASHA ({objs}; {self.time_attr} rungs {list(self.core.rungs)} < max_t "
                f"{self.core.max_t}, η={self.core.reduction_factor}): num_stopped={len(self.core.stopped)}"
                + (f"\n{rungs}" if rungs else ""))
