"""The replay simulator: recorded learning curves, K workers, a simulated clock, and a real
scheduler driven through the calls Ray Tune's controller makes.

For one ordering of the recorded configurations, each of K workers takes the next
configuration as soon as it is free (FIFO, as `MOASHAScheduler.choose_trial_to_run` and Ray's
FIFO schedulers pick PENDING trials in order); a configuration started at time s reports its
epoch e at s + seconds[e] (its recorded cumulative seconds; the last epoch at s +
seconds_total, after the trial's own evaluation). The scheduler sees exactly what Ray gives
it (`tune_controller.TuneController._process_trial_result` and `stop_trial`, Ray 2.x):

- `on_trial_add(controller, trial)` when the trial is created (here: when a worker takes it);
- `on_trial_result(controller, trial, result)` for every report, result =
  {"epoch": e, "val_<objective>": ..., "trial_id": ...}; the answer CONTINUE, STOP or PAUSE;
- `on_trial_complete(controller, trial, last_result)` when a trial stops (STOP) or ends
  (its last epoch);
- PAUSE puts the trial back (it resumes from its epoch when a worker is free, after the
  pending ones: Ray's FIFO order of PENDING then PAUSED). No scheduler benchmarked here pauses.

A trial that reached its last epoch is complete: its validation and test values enter the
found set. Compute is worker-busy seconds; the budget fraction divides it by the full-budget
compute (every configuration's seconds_total).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

CONTINUE, STOP, PAUSE = "CONTINUE", "STOP", "PAUSE"


@dataclass
class Curves:
    """One scenario's recorded table, as arrays (configurations in `config` order)."""

    scenario: str
    objectives: list[str]            # metric names, e.g. accuracy_new
    directions: list[str]            # "max" / "min"
    val: np.ndarray                  # [n, E, k] validation values per epoch (NaN after a diverged end)
    seconds: np.ndarray              # [n, E] cumulative seconds at each epoch (NaN after the end)
    seconds_total: np.ndarray        # [n]
    last: np.ndarray                 # [n] epochs each configuration ran (E unless diverged)
    ok: np.ndarray                   # [n] status ok
    test: np.ndarray                 # [n, k] final test values (NaN when not ok)
    method: list[str]
    structure: list[str]
    hparams: list[dict[str, Any]]

    @property
    def n(self) -> int:
        return len(self.ok)

    @property
    def max_epoch(self) -> int:
        return self.val.shape[1]

    @classmethod
    def from_table(cls, df, scenario: str, objectives: list[tuple[str, str]]) -> "Curves":
        sub = df[df["scenario"] == scenario].sort_values(["config", "epoch"])
        configs = sorted(sub["config"].unique())
        E = int(sub["max_epoch"].max())
        n, k = len(configs), len(objectives)
        val = np.full((n, E, k), np.nan)
        sec = np.full((n, E), np.nan)
        tot, last, ok, test = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n, dtype=bool), np.full((n, k), np.nan)
        method, structure, hps = [], [], []
        for i, (c, g) in enumerate(sub.groupby("config", sort=True)):
            ep = g["epoch"].to_numpy(dtype=int) - 1
            for j, (m, _) in enumerate(objectives):
                val[i, ep, j] = g[f"val_{m}"].to_numpy(dtype=float)
                test[i, j] = float(g[f"test_{m}"].iloc[0])
            sec[i, ep] = g["seconds"].to_numpy(dtype=float)
            tot[i] = float(g["seconds_total"].iloc[0])
            last[i] = int(ep.max()) + 1
            ok[i] = g["status"].iloc[0] == "ok" and last[i] == E
            method.append(str(g["method"].iloc[0]))
            structure.append(str(g["structure"].iloc[0]))
            hps.append(json.loads(g["hparams"].iloc[0]))
        test[~ok] = np.nan
        return cls(scenario, [m for m, _ in objectives], [d for _, d in objectives], val, sec, tot, last, ok,
                   test, method, structure, hps)

    def result(self, i: int, epoch: int) -> dict[str, Any]:
        """What configuration i reports after `epoch` (1-based), as the live trainable does."""
        return {"epoch": epoch, **{f"val_{m}": float(self.val[i, epoch - 1, j]) for j, m in enumerate(self.objectives)}}


@dataclass(eq=False)
class SimTrial:
    """The parts of a Ray `Trial` a scheduler reads: its id, config and status."""

    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    index: int = 0
    epoch: int = 0                   # epochs done
    last_result: dict[str, Any] = field(default_factory=dict)

    def __hash__(self):
        return hash(self.trial_id)


class SimController:
    """The controller argument schedulers receive; `get_trials` is all they use of it."""

    def __init__(self):
        self.trials: list[SimTrial] = []

    def get_trials(self) -> list[SimTrial]:
        return self.trials


def ray_config(curves: Curves, i: int) -> dict[str, Any]:
    """A live sweep trial's Ray config (trainable.py): study, uid and the TrialConfig dict."""
    return {"study": curves.scenario, "trial_number": i, "trial_uid": f"t{i}",
            "config": {"method": curves.method[i], "hparams": curves.hparams[i]}}


@dataclass
class Run:
    """One replayed ordering: the completions in time order, and the total compute."""

    done_at: list[float]             # compute used when each completed configuration finished
    done_idx: list[int]              # which configuration
    compute: float                   # compute used by the whole run
    epochs: int                      # update epochs trained by the whole run


def replay(curves: Curves, order: np.ndarray, scheduler: Any, workers: int,
           oracle: bool = False) -> Run:
    """Drive `scheduler` (None: nothing is ever stopped) through one ordering.

    `oracle=True` reports each configuration's final validation values at every epoch (a
    perfect predictor of the final values, for scale)."""
    ctl = SimController()
    pending = [int(i) for i in order][::-1]            # pop() takes the next in order
    paused: list[SimTrial] = []
    events: list[tuple[float, int, SimTrial]] = []
    seq = 0
    origin: dict[str, float] = {}                      # epoch e of a trial ends at origin + seconds[e]
    stint: dict[str, float] = {}                       # running trials: start of their current stint
    spent, epochs = 0.0, 0                             # busy seconds of finished stints; epochs trained
    done_at, done_idx = [], []
    E = curves.max_epoch

    def next_report(trial: SimTrial) -> None:
        nonlocal seq
        i, e = trial.index, trial.epoch + 1
        t_rel = curves.seconds_total[i] if e == curves.last[i] else curves.seconds[i, e - 1]
        seq += 1
        heapq.heappush(events, (origin[trial.trial_id] + t_rel, seq, trial))

    def take(now: float) -> None:
        while len(stint) < workers and (pending or paused):
            if pending:
                i = pending.pop()
                trial = SimTrial(f"t{i}", ray_config(curves, i), index=i)
                ctl.trials.append(trial)
                if scheduler is not None:
                    scheduler.on_trial_add(ctl, trial)
            else:
                trial = paused.pop(0)
            trial.status = "RUNNING"
            stint[trial.trial_id] = now
            origin[trial.trial_id] = now - (curves.seconds[trial.index, trial.epoch - 1] if trial.epoch else 0.0)
            next_report(trial)

    take(0.0)
    while events:
        now, _, trial = heapq.heappop(events)
        i = trial.index
        trial.epoch += 1
        epochs += 1
        e = trial.epoch
        res = curves.result(i, E if oracle and curves.ok[i] else e)
        res.update(epoch=e, trial_id=trial.trial_id)
        trial.last_result = res
        decision = scheduler.on_trial_result(ctl, trial, dict(res)) if scheduler is not None else CONTINUE
        if e >= curves.last[i] or decision in (STOP, PAUSE):
            spent += now - stint.pop(trial.trial_id)
            if decision == PAUSE and e < curves.last[i]:
                trial.status = "PAUSED"
                paused.append(trial)
            else:
                trial.status = "TERMINATED"
                if scheduler is not None:
                    scheduler.on_trial_complete(ctl, trial, dict(res))
                if e == E and curves.ok[i]:
                    done_idx.append(i)
                    done_at.append(spent + sum(now - b for b in stint.values()))
        else:
            next_report(trial)
        take(now)
    return Run(done_at, done_idx, spent, epochs)


class Decide:
    """Ray's decision strings for schedulers that answer otherwise (Syne Tune)."""

    @staticmethod
    def norm(d: Any) -> str:
        s = str(getattr(d, "value", d)).upper()
        return STOP if "STOP" in s else PAUSE if "PAUSE" in s else CONTINUE


SchedulerFactory = Callable[[Curves], Any]
