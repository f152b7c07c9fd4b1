"""Stratified MO-ASHA: a trial is ranked against its own stratum (method and categorical
choices) and bracket; strata come from the sweep's trial configs, packs included; the state
survives a resume and a resume with another scheduler is refused."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from flipsearch.errors import UsageError
from flipsearch.objectives import Objective
from flipsearch.search.scheduler import MOASHAScheduler, ParetoRungs
from flipsearch.search.stratified import StratifiedMOASHAScheduler, StratifiedRungs, default_stratum

ACC_NFR = ("max", "min")
OBJS = [Objective("accuracy_new", "max"), Objective("nfr", "min")]


def test_a_slow_starting_method_is_ranked_against_itself_not_against_a_fast_start():
    plain, strat = ParetoRungs(ACC_NFR, max_t=9), StratifiedRungs(ACC_NFR, max_t=9)
    fast = [(f"fd{i}", (0.80 + i / 100, 0.010)) for i in range(4)]   # starts next to M1
    slow = [("mpt0", (0.50, 0.080)), ("mpt1", (0.55, 0.070)), ("mpt2", (0.40, 0.090))]
    for tid, _ in fast:
        strat.assign(tid, "fd")
    for tid, _ in slow:
        strat.assign(tid, "mpt")
    got_plain = {tid: plain.on_result(tid, 1, v) for tid, v in fast + slow}
    got_strat = {tid: strat.on_result(tid, 1, v) for tid, v in fast + slow}
    # MO-ASHA stops every slow starter: each is dominated by the fast ones already there.
    assert [got_plain[t] for t, _ in slow] == ["stop"] * 3
    # Within their own stratum the first goes on, the second beats it (n=2 keeps 1), the
    # third (dominated by both, n=3 keeps 1) stops.
    assert [got_strat[t] for t, _ in slow] == ["continue", "continue", "stop"]
    assert [got_strat[t] for t, _ in fast] == [got_plain[t] for t, _ in fast]  # fd alone: same as before
    counts = strat.rung_counts_by_stratum()
    assert counts["mpt"][1] == {"recorded": 3, "continued": 2, "stopped": 1}
    assert counts["fd"][1]["recorded"] == 4


def test_brackets_spread_trials_and_the_last_bracket_runs_in_full():
    r = StratifiedRungs(ACC_NFR, max_t=9, brackets=3)                  # rungs 1, 3; brackets 0, 1, 2
    for i in range(90):
        r.assign(f"t{i}", "s")
    share = [sum(b == k for b in r.brackets.values()) / 90 for k in range(3)]
    assert share[0] > share[1] > share[2] > 0                           # e^0 : e^-1 : e^-2
    assert abs(share[0] - 0.665) < 0.05 and abs(share[2] - 0.090) < 0.05
    b1 = next(t for t, b in r.brackets.items() if b == 1)
    b2 = next(t for t, b in r.brackets.items() if b == 2)
    for tid in [t for t, b in r.brackets.items() if b != 2][:20]:      # strong rivals at every rung
        r.on_result(tid, 1, (0.9, 0.01))
        r.on_result(tid, 3, (0.9, 0.01))
    assert r.on_result(b1, 1, (0.1, 0.5)) == "continue"                # bracket 1: no rung 1
    assert r.on_result(b2, 1, (0.1, 0.5)) == "continue"
    assert r.on_result(b2, 3, (0.1, 0.5)) == "continue"                # bracket 2: no rung at all
    assert b2 not in r.decisions
    with pytest.raises(UsageError):
        StratifiedRungs(ACC_NFR, max_t=9, brackets=0)
    assert StratifiedRungs(ACC_NFR, max_t=9, brackets=7).n_brackets == 3  # at most one per rung + 1


def test_default_stratum_reads_method_and_categorical_choices():
    solo = {"study": "s1", "trial_uid": "u", "config": {"method": "ce", "hparams": {"init": "scratch"}}}
    assert default_stratum(solo) == "s1:ce:init=scratch"
    fd = {"study": "s1", "config": {"method": "fd", "hparams": {"lambda": 2.5, "distance": "kl"}}}
    assert default_stratum(fd) == "s1:fd:distance=kl"                  # a float is not structural
    assert default_stratum(fd, {"fd": ["lambda"]}) == "s1:fd:lambda=2.5"  # the space says what is
    assert default_stratum(fd, {"fd": []}) == "s1:fd"


def test_scheduler_assigns_solo_trials_and_pack_members_their_strata():
    s = StratifiedMOASHAScheduler(OBJS, max_t=9, categorical={"bct": ["variant"], "fd": []})
    solo = SimpleNamespace(trial_id="ray1", config={"study": "a", "trial_uid": "u1",
                                                    "config": {"method": "fd", "hparams": {"lambda": 1.0}}})
    pack = SimpleNamespace(trial_id="ray2", config={"ray_trial_id": "ray2", "pack": [
        {"study": "a", "trial_uid": f"m{k}", "config": {"method": "bct", "hparams": {"variant": v}}}
        for k, v in enumerate(["new-error", "strict-imitation"])]})
    s.on_trial_add(None, solo)
    s.on_trial_add(None, pack)
    assert s.core.strata == {"ray1": "a:fd", "m0": "a:bct:variant=new-error", "m1": "a:bct:variant=strict-imitation"}
    # A pack result ranks each member in its own stratum: both are first there and go on.
    published = []
    s.publish_member_stops = lambda tid, epoch, uids: published.append((tid, epoch, uids))
    members = {"m0": {"val_accuracy_new": 0.1, "val_nfr": 0.9}, "m1": {"val_accuracy_new": 0.2, "val_nfr": 0.8}}
    s.on_trial_result(None, SimpleNamespace(trial_id="s0", config={}), {"epoch": 1, "val_accuracy_new": 0.9,
                                                                       "val_nfr": 0.01})
    assert s.on_trial_result(None, pack, {"epoch": 1, "members_json": json.dumps(members)}) == "CONTINUE"
    assert published == [("ray2", 1, [])]
    assert "strata: 3" in s.debug_string()                               # s0 was never added


def test_state_round_trip_and_a_resume_with_another_scheduler_is_refused(tmp_path):
    s = StratifiedMOASHAScheduler(OBJS, max_t=9, brackets=2)
    for i, m in enumerate(["ce", "fd", "ce", "fd", "ce"]):
        s.on_trial_add(None, SimpleNamespace(trial_id=f"t{i}", config={"config": {"method": m, "hparams": {}}}))
        s.on_trial_result(None, SimpleNamespace(trial_id=f"t{i}"), {"epoch": 1, "val_accuracy_new": 0.5 + i / 20,
                                                                    "val_nfr": 0.05})
    path = tmp_path / "scheduler.json"
    s.save(str(path))
    back = StratifiedMOASHAScheduler(OBJS, max_t=9, brackets=2)
    back.restore(str(path))
    assert back.state_dict() == s.state_dict() and back.core.brackets == s.core.brackets
    # the resumed scheduler goes on assigning brackets where the first one stopped
    for sch in (s, back):
        sch.on_trial_add(None, SimpleNamespace(trial_id="t9", config={"config": {"method": "ce", "hparams": {}}}))
    assert back.core.brackets["t9"] == s.core.brackets["t9"]
    with pytest.raises(UsageError):                                      # other bracket count
        StratifiedMOASHAScheduler(OBJS, max_t=9, brackets=1).restore(str(path))
    with pytest.raises(UsageError):                                      # no prediction
        StratifiedMOASHAScheduler(OBJS, max_t=9, brackets=2, predict=False).restore(str(path))
    with pytest.raises(UsageError):                                      # stratified state -> mo-asha
        MOASHAScheduler(OBJS, max_t=9).restore(str(path))
    plain = MOASHAScheduler(OBJS, max_t=9)
    with pytest.raises(UsageError):                                      # mo-asha state -> stratified
        StratifiedMOASHAScheduler(OBJS, max_t=9).load_state_dict(plain.state_dict())


def test_once_strata_have_a_complete_trial_they_compete_on_predicted_final_values():
    r = StratifiedRungs(ACC_NFR, max_t=9, predict=True)
    for tid, st in (("fd0", "fd"), ("mpt0", "mpt"), ("fd1", "fd"), ("mpt1", "mpt"), ("mpt2", "mpt"), ("x", "new")):
        r.assign(tid, st)
    # One complete trial per stratum: fd starts high and barely moves, mpt starts low and climbs.
    for tid, rung1, final in (("fd0", (0.80, 0.01), (0.81, 0.010)), ("mpt0", (0.40, 0.09), (0.85, 0.008))):
        assert r.on_result(tid, 1, rung1) == "continue"
        r.on_result(tid, 9, final)                                     # its last report (t = max_t)
    assert r.finals == {"fd0": (0.81, 0.01), "mpt0": (0.85, 0.008)}
    # Predicted finals: fd1 0.79 + 0.01, mpt1 0.38 + 0.45 = 0.83 (and fewer flips): mpt1 ranks first.
    assert r.on_result("fd1", 1, (0.79, 0.012)) == "stop"              # n=3, dominated by fd0's prediction
    assert r.on_result("mpt1", 1, (0.38, 0.088)) == "continue"         # raw values: dominated by every fd
    assert r.on_result("mpt2", 1, (0.20, 0.20)) == "stop"
    # A stratum with no complete trial yet is still ranked within itself: first there, it goes on.
    assert r.on_result("x", 1, (0.0, 1.0)) == "continue"


def test_an_arm_near_the_front_runs_in_full_an_unseen_arm_is_explored_an_arm_seen_off_it_stops():
    r = StratifiedRungs(ACC_NFR, max_t=9, predict=True, front=True)   # tol 0.1, explore 1, eliminate 2
    for tid, st in (("mpt0", "mpt"), ("ce0", "ce"), ("ce1", "ce"), ("mpt1", "mpt"), ("mpt2", "mpt"),
                    ("ce2", "ce"), ("new0", "new"), ("new1", "new")):
        r.assign(tid, st)
    # nothing complete yet: every arm is unseen, so even a poor first rung goes on
    assert r.on_result("mpt0", 1, (0.40, 0.09)) == "continue"
    assert r.on_result("ce0", 1, (0.80, 0.05)) == "continue"
    assert r.on_result("ce1", 1, (0.81, 0.05)) == "continue"
    r.on_result("mpt0", 9, (0.85, 0.010))                            # mpt ends on the front
    r.on_result("ce0", 9, (0.82, 0.050))                             # ce ends dominated by it, twice
    r.on_result("ce1", 9, (0.83, 0.045))
    assert r.front_strata() == {"mpt"}
    # mpt: a newcomer last of its arm at both rungs still goes on (within a front arm, ranks are noise)
    assert r.on_result("mpt1", 1, (0.10, 0.50)) == "continue"
    assert r.on_result("mpt1", 3, (0.20, 0.40)) == "continue"
    # ce: seen to the end twice, off the front: stopped at its first rung, however it starts
    assert r.on_result("ce2", 1, (0.99, 0.001)) == "stop"
    # an arm not seen to the end is explored until its first complete trial
    assert r.on_result("new0", 1, (0.0, 1.0)) == "continue"
    assert r.on_result("new1", 1, (0.0, 1.0)) == "continue"
    # within front_tol (scaled to the complete trials' range) counts as near the front
    near = StratifiedRungs(ACC_NFR, max_t=9, predict=True, front=True, front_tol=0.1)
    for tid, st, final in (("a", "A", (0.90, 0.010)), ("b", "B", (0.89, 0.011)), ("c", "C", (0.50, 0.100))):
        near.assign(tid, st)
        near.on_result(tid, 9, final)
    assert near.front_strata() == {"A", "B"}                          # B is 0.01 / 0.4 of the range away
    with pytest.raises(UsageError):
        StratifiedRungs(ACC_NFR, max_t=9, front=True, explore=-1)


def test_a_packs_last_report_gives_its_members_final_values_and_the_front_state_resumes(tmp_path):
    s = StratifiedMOASHAScheduler(OBJS, max_t=9)
    pack = SimpleNamespace(trial_id="ray1", config={"ray_trial_id": "ray1", "pack": [
        {"study": "a", "trial_uid": f"m{k}", "config": {"method": m, "hparams": {}}} for k, m in enumerate(["fd", "ce"])]})
    s.on_trial_add(None, pack)
    rows = [{"trial_uid": "m0", "status": "ok", "epochs": 9, "val_accuracy_new": 0.9, "val_nfr": 0.01},
            {"trial_uid": "m1", "status": "failed", "epochs": 2, "val_accuracy_new": None, "val_nfr": None}]
    assert s.on_trial_result(None, pack, {"epoch": 9, "rows_json": json.dumps(rows)}) == "CONTINUE"
    assert s.core.finals == {"m0": (0.9, 0.01)} and s.core.front_strata() == {"a:fd"}
    path = tmp_path / "scheduler.json"
    s.save(str(path))
    back = StratifiedMOASHAScheduler(OBJS, max_t=9)
    back.restore(str(path))
    assert back.core.finals == s.core.finals and back.core.final_violations == {"m0": 0.0}
    with pytest.raises(UsageError):                                  # resumed without the front rule
        StratifiedMOASHAScheduler(OBJS, max_t=9, front=False).restore(str(path))


@pytest.mark.parametrize("value, front", [("", True), (", front_strata: false", False), (", front_strata: 1", None)])
def test_the_space_turns_the_front_rule_on_or_off(tmp_path, value, front):
    from flipsearch.search.space import load_space
    from flipsearch.search.sweep import _scheduler
    from flipsearch.storage import Storage

    path = tmp_path / "s.yaml"
    path.write_text("name: t\nscenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], "
                    "seeds: [0], training: {epochs: 3}}\nobjectives: [accuracy_new:max, nfr:min]\n"
                    "search: {scheduler: stratified-asha" + value + "}\nmethods: {ce: {}}\n")
    if front is None:
        with pytest.raises(UsageError, match="front_strata"):
            load_space(str(path))
        return
    sched = _scheduler(load_space(str(path)), Storage.open(str(tmp_path / "out")))
    assert isinstance(sched, StratifiedMOASHAScheduler) and sched.core.front is front
