"""MO-ASHA: the pure decision core on hand-made rung results, then one real Ray Tune run."""

from __future__ import annotations

import functools
import json
import math

import pytest

from flipsearch.errors import UsageError
from flipsearch.objectives import Constraint, Objective
from flipsearch.search.scheduler import MOASHAScheduler, ParetoRungs, pareto_order, rung_ladder
from flipsearch.search.stratified import StratifiedMOASHAScheduler, StratifiedRungs

NAN, INF = float("nan"), float("inf")
ACC_NFR = ("max", "min")                    # accuracy_new:max, nfr:min


@pytest.fixture(params=["mo-asha", "stratified-asha"])
def core(request):
    """A decision core factory: MO-ASHA's, and the stratified one with every trial in one
    stratum and bracket (unassigned), which must decide exactly like it."""
    def make(directions=ACC_NFR, max_t=9, grace=1, eta=3):
        kw = dict(max_t=max_t, grace_period=grace, reduction_factor=eta)
        if request.param == "mo-asha":
            return ParetoRungs(directions, **kw)
        return StratifiedRungs(directions, brackets=1, **kw)
    return make


def feed(rungs, points, t=1):
    """Send each (trial_id, values[, violation]) at budget t; return {trial_id: decision}."""
    out = {}
    for tid, vals, *viol in points:
        out[tid] = rungs.on_result(tid, t, vals, *viol)
    return out


# ------------------------------------------------------------------ rung ladder


def test_rung_ladder_stops_below_max_t():
    assert rung_ladder(1, 3, 9) == (1, 3)
    assert rung_ladder(1, 3, 10) == (1, 3, 9)
    assert rung_ladder(2, 2, 17) == (2, 4, 8, 16)
    assert rung_ladder(1, 2.5, 20) == (1.0, 2.5, 6.25, 15.625)
    assert rung_ladder(9, 3, 9) == ()                       # grace == max_t: nothing to stop
    assert all(isinstance(r, int) for r in rung_ladder(1, 3.0, 100))
    for bad in [(0, 3, 9), (1, 1, 9), (10, 3, 9), (1, 3, math.inf)]:
        with pytest.raises(UsageError):
            rung_ladder(*bad)


def test_rung_of_maps_a_budget_to_the_highest_rung_reached(core):
    r = core(max_t=27)
    assert r.rungs == (1, 3, 9)
    assert [r.rung_of(t) for t in (0, 0.5, 1, 2, 3, 8.9, 9, 26, 27, 30, NAN)] == \
        [None, None, 1, 1, 3, 3, 9, 9, None, None, None]


# ------------------------------------------------------------------ ranking and cutoff


def test_two_objectives_with_mixed_directions(core):
    r = core()
    got = feed(r, [
        ("a", (0.80, 0.10)),   # first at the rung: continues
        ("b", (0.70, 0.20)),   # dominated by a (lower accuracy, more flips); n=2 keeps 1
        ("c", (0.90, 0.05)),   # dominates both; n=3 keeps 1
        ("d", (0.85, 0.02)),   # trades accuracy for fewer flips against c: front {c, d}; n=4 keeps 2
        ("e", (0.95, 0.30)),   # best accuracy, on the front; n=5 keeps 2
        ("f", (0.75, 0.15)),   # dominated by a; n=6 keeps 2
    ])
    assert got == {"a": "continue", "b": "stop", "c": "continue", "d": "continue", "e": "continue", "f": "stop"}
    assert r.stopped == {"b": 1, "f": 1}
    # The directions decide domination: with both minimised b dominates a.
    assert pareto_order([[0.80, 0.10], [0.70, 0.20]], ACC_NFR) == [0, 1]
    assert pareto_order([[0.80, 0.10], [0.70, 0.20]], ("min", "max")) == [1, 0]


def test_cutoff_follows_rays_asha_when_few_trials_are_recorded(core):
    # Ray's _Bracket: with one recorded reward the second trial continues only if it is at
    # least as good. Same here: the second trial must rank first, whatever η is.
    r = core(eta=3)
    assert feed(r, [("a", (0.8, 0.1)), ("b", (0.8, 0.2)), ("c", (0.9, 0.1))]) == \
        {"a": "continue", "b": "stop", "c": "continue"}
    # ceil(n/η): with η=2 and 4 trials the top 2 continue.
    r2 = core(eta=2)
    got = feed(r2, [("a", (0.9, 0.0)), ("b", (0.5, 0.5)), ("c", (0.6, 0.4)), ("d", (0.7, 0.3))])
    assert got == {"a": "continue", "b": "stop", "c": "continue", "d": "continue"}


def test_identical_points_the_diversity_rule_decides(core):
    # a, b, c lie on one front; a copy of a point already taken by the ε-net adds no spread.
    a, b, c = (0.9, 0.2), (0.5, 0.0), (0.7, 0.1)
    assert pareto_order([a, b, c, a], ACC_NFR) == [0, 1, 2, 3]     # seed: best accuracy, then farthest
    assert pareto_order([a, a, a], ACC_NFR) == [0, 1, 2]           # exact ties: earlier first...
    assert pareto_order([a, a, a], ACC_NFR, prefer=2) == [2, 0, 1]  # ...unless one is being decided
    for copy, expected in [(a, "continue"), (b, "continue"), (c, "stop")]:
        r = core()
        feed(r, [("a", a), ("b", b), ("c", c)])                  # a continues, b and c stop
        # 4 at the rung keep 2: a copy of the ε-net's 1st or 2nd point takes that place (an
        # exact tie goes to the newcomer, as Ray's `cur_rew < cutoff`); a copy of the 3rd is 3rd.
        assert r.on_result("copy", 1, copy) == expected
    # Deterministic: the same sequence always gives the same decisions.
    runs = [feed(core(), [("a", a), ("b", b), ("c", c), ("d", c), ("e", a)]) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_nan_and_inf_values_rank_last_and_stop(core):
    r = core()
    assert r.on_result("nan", 1, (NAN, 0.1)) == "stop"            # stopped even alone at the rung
    assert r.on_result("a", 1, (0.5, 0.5)) == "continue"          # NaN rows do not count in n
    assert r.on_result("inf", 1, (0.9, INF)) == "stop"            # inf is as unusable as NaN
    assert r.on_result("b", 1, (0.4, 0.6)) == "stop"              # n=2 (finite): dominated by a
    assert r.stopped == {"nan": 1, "inf": 1, "b": 1}
    assert r.rung_counts()[1] == {"recorded": 4, "continued": 1, "stopped": 3}
    assert pareto_order([[NAN, 0.1], [0.5, 0.5], [0.9, -INF]], ACC_NFR) == [1]


def test_feasible_beats_infeasible_and_less_violation_beats_more(core):
    r = core()
    assert r.on_result("inf1", 1, (0.99, 0.00), 0.05) == "continue"   # alone: continues
    assert r.on_result("feas", 1, (0.10, 0.90), 0.0) == "continue"    # feasible ranks first despite values
    assert r.on_result("inf2", 1, (0.99, 0.00), 0.01) == "stop"       # n=3 keeps 1: the feasible one
    r2 = core(eta=2)
    assert r2.on_result("v2", 1, (0.9, 0.1), 0.2) == "continue"
    assert r2.on_result("v1", 1, (0.1, 0.9), 0.1) == "continue"       # less violation, worse values
    assert r2.on_result("v3", 1, (0.99, 0.0), 0.3) == "stop"          # most violation, best values
    assert r2.on_result("vnan", 1, (0.99, 0.0), NAN) == "stop"        # NaN violation counts as +inf
    # Infeasible rows by total violation; equal violation: by fronts; +inf (missing metric) last.
    order = pareto_order([[0.9, 0.1], [0.5, 0.5], [0.8, 0.0], [0.1, 0.9], [0.3, 0.3]], ACC_NFR,
                         violations=[0.02, 0.01, INF, 0.0, 0.02])
    assert order == [3, 1, 0, 4, 2]


def test_three_objectives(core):
    dirs = ("max", "min", "max")                                       # accuracy_new, nfr, btc
    a, b, c = (0.8, 0.1, 0.5), (0.7, 0.2, 0.4), (0.6, 0.3, 0.9)
    d, e = (0.9, 0.05, 0.6), (0.5, 0.4, 0.95)
    r = core(dirs)
    got = feed(r, [("a", a), ("b", b), ("c", c), ("d", d), ("e", e)])
    # b is dominated in all three; c is on the front but 2nd of {a, c} with only 1 kept;
    # e is on the front {d, c, e} only through the third objective and is 2nd of 2 kept.
    assert got == {"a": "continue", "b": "stop", "c": "stop", "d": "continue", "e": "continue"}
    # Drop the third objective and e is dominated by c (and a, d): it stops.
    r2 = core(dirs[:2])
    assert feed(r2, [(k, v[:2]) for k, v in [("a", a), ("b", b), ("c", c), ("d", d), ("e", e)]])["e"] == "stop"
    with pytest.raises(ValueError):
        r.on_result("x", 1, (0.1, 0.2))                                # 2 values for 3 objectives


def test_asynchronous_early_arrivals_continue_and_decisions_are_final(core):
    r = core(max_t=27)                                                 # rungs 1, 3, 9
    assert r.on_result("slow", 1, (0.2, 0.8)) == "continue"           # first at rung 1
    for i in range(6):                                                # better trials arrive later...
        r.on_result(f"good{i}", 1, (0.9 + i / 100, 0.01))
    assert r.decisions["slow"] == [(1, "continue")]                   # ...its decision stands
    assert r.on_result("slow", 2, (0.2, 0.8)) == "continue"           # between rungs: nothing recorded
    assert r.on_result("slow", 3, (0.25, 0.7)) == "continue"          # first at rung 3: continues
    assert r.on_result("good0", 3, (0.95, 0.01)) == "continue"
    assert r.on_result("good1", 3, (0.20, 0.90)) == "stop"            # n=2, dominated by good0
    assert r.on_result("good1", 4, (0.99, 0.0)) == "stop"             # a stopped trial stays stopped
    # A first report past several rungs is recorded at the highest one only, never back-filled.
    assert r.on_result("late", 5, (0.99, 0.0)) == "continue"
    assert r.on_result("late", 6, (0.99, 0.0)) == "continue"
    assert [x["trial_id"] for x in r.recorded(3)] == ["slow", "good0", "good1", "late"]
    assert "late" not in [x["trial_id"] for x in r.recorded(1)]
    # At or past max_t nothing is recorded or stopped: the trial has had its budget.
    assert r.on_result("end", 27, (0.0, 1.0)) == "continue" and "end" not in r.decisions
    # final=True records for later comparisons but decides nothing.
    assert r.on_result("done", 9, (0.5, 0.5), final=True) == "continue"
    assert "done" not in r.decisions and r.recorded(9)[0]["trial_id"] == "done"
    counts = r.rung_counts()
    assert counts[1] == {"recorded": 7, "continued": 7, "stopped": 0}  # each arrival beat all before it
    assert counts[3] == {"recorded": 4, "continued": 3, "stopped": 1}


def test_state_round_trip_keeps_the_rungs(core):
    r = core(max_t=27)
    feed(r, [("a", (0.8, 0.1)), ("b", (0.7, 0.2), 0.5), ("n", (NAN, 0.1)), ("i", (0.9, 0.0), INF)])
    feed(r, [("a", (0.85, 0.1))], t=3)
    text = json.dumps(r.state_dict(), allow_nan=False)                # strict JSON
    back = core(max_t=27)
    back.load_state_dict(json.loads(text))
    assert back.state_dict() == r.state_dict()
    assert back.stopped == r.stopped and back.decisions == r.decisions
    assert back.rung_counts() == r.rung_counts()
    # The resumed core decides the next arrivals exactly like the original.
    nxt = [("c", (0.75, 0.15)), ("d", (0.95, 0.0)), ("a", (0.9, 0.1)), ("b", (0.99, 0.0))]
    assert feed(back, nxt, t=3) == feed(r, nxt, t=3)
    assert math.isnan(back.recorded(1)[2]["values"][0]) and back.recorded(1)[3]["violation"] == INF
    with pytest.raises(UsageError):
        core(max_t=81).load_state_dict(json.loads(text))              # another ladder
    with pytest.raises(UsageError):
        core(("max", "max"), max_t=27).load_state_dict(json.loads(text))


# ------------------------------------------------------------------ how stopped trials reach Optuna


def test_stopped_trials_told_pruned_keep_optuna_samplers_working():
    """The contract in the module docstring: PRUNED, no values, no intermediate values."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for sampler in (optuna.samplers.NSGAIISampler(population_size=4, seed=0),
                    optuna.samplers.TPESampler(seed=0, n_startup_trials=4, multivariate=True, group=True)):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for i in range(30):
            t = study.ask()
            x, y = t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)
            if i % 3:
                study.tell(t, state=TrialState.PRUNED)
            else:
                study.tell(t, [1 - (x - 0.3) ** 2, x * y])
        states = [t.state for t in study.trials]
        assert states.count(TrialState.PRUNED) == 20 and states.count(TrialState.COMPLETE) == 10
        assert study.best_trials and all(t.state == TrialState.COMPLETE for t in study.best_trials)
        assert all(t.values is None for t in study.trials if t.state == TrialState.PRUNED)


# ------------------------------------------------------------------ Ray Tune


@pytest.mark.parametrize("scheduler_cls", [MOASHAScheduler, functools.partial(StratifiedMOASHAScheduler, brackets=1, front=False)],
                         ids=["mo-asha", "stratified-asha"])
def test_moasha_in_ray_tune_stops_dominated_trials(ray_local, tmp_path, scheduler_cls):
    """Both schedulers in a real Ray Tune run; the trials share one stratum (no method in
    their config) and, here, one bracket and no front rule, so the stratified one decides like MO-ASHA (its
    predicted final values shift every peer of a stratum alike, which keeps their order)."""
    from ray import tune

    log = tmp_path / "epochs.log"       # written by the workers before each report

    def trainable(config):
        q = config["q"]
        for epoch in range(1, 10):
            with open(log, "a") as f:
                f.write(f"{q} {epoch}\n")
            if q >= 10:   # two identical configurations that dominate every other one
                acc, nfr = 0.90 + 0.005 * epoch, 0.02 - 0.001 * epoch
            else:         # q 0..9 trade accuracy against flips, all far below the two
                acc, nfr = 0.50 + 0.02 * q + 0.002 * epoch, 0.05 + 0.01 * q
            tune.report({"epoch": epoch, "val_accuracy_new": acc, "val_nfr": nfr})

    seen: dict[str, list[int]] = {}
    q_of: dict[str, int] = {}

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.setdefault(trial.trial_id, []).append(int(result["epoch"]))
            q_of[trial.trial_id] = trial.config["q"]

    objectives = [Objective("accuracy_new", "max"), Objective("nfr", "min")]
    constraints = [Constraint("nfr", "<=", 0.12)]        # q >= 8 infeasible
    sched = scheduler_cls(objectives, constraints, max_t=9, grace_period=1, reduction_factor=3)
    order = [0, 9, 10, 5, 11, 3, 8, 1, 7, 4, 2, 6]      # q=0 arrives with no rival: it goes on
    tuner = tune.Tuner(
        trainable,
        param_space={"q": tune.grid_search(order)},
        tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="moasha", verbose=0, callbacks=[Collect()]),
    )
    grid = tuner.fit()
    assert not grid.errors and len(seen) == 12

    by_q = {q_of[tid]: epochs for tid, epochs in seen.items()}
    assert sum(len(e) for e in by_q.values()) < 12 * 9                 # early stopping saved epochs
    assert by_q[10] == by_q[11] == list(range(1, 10))                  # the non-dominated reach max_t
    stopped_q = {q_of[tid]: rung for tid, rung in sched.stopped.items()}
    assert stopped_q and not {10, 11} & set(stopped_q)                 # only dominated trials stop
    assert 1 in stopped_q.values()
    worker_epochs: dict[int, int] = {}
    for line in log.read_text().splitlines():
        q, e = map(int, line.split())
        worker_epochs[q] = max(worker_epochs.get(q, 0), e)
    for q, epochs in by_q.items():
        assert epochs == list(range(1, len(epochs) + 1))
        if q in stopped_q:          # nothing reported, nor even trained, after the STOP
            assert epochs[-1] == stopped_q[q] and worker_epochs[q] == stopped_q[q]
        else:
            assert epochs[-1] == 9 and worker_epochs[q] == 9
    for tid, ds in sched.decisions.items():                             # decisions match the record
        assert ds[-1][1] == ("stop" if tid in sched.stopped else "continue")
    counts = sched.rung_counts()
    assert counts[1]["recorded"] == 12 and counts[1]["stopped"] + counts[3]["stopped"] == len(stopped_q)
    assert f"num_stopped={len(stopped_q)}" in sched.debug_string()

    path = tmp_path / "scheduler.json"
    sched.save(str(path))
    resumed = scheduler_cls(objectives, constraints, max_t=9, grace_period=1, reduction_factor=3)
    resumed.restore(str(path))
    assert resumed.state_dict() == sched.state_dict() and resumed.stopped == sched.stopped
