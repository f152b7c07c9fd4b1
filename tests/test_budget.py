"""Equal budgets: per-method rungs under early stopping, and the report's per-method budget
and instability table."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from flipsearch.objectives import Objective
from flipsearch.report.budget import budget_mode, method_budgets
from flipsearch.rundir import SweepRecord
from flipsearch.report.early import early_stopping
from flipsearch.search.method_rungs import MethodMOASHAScheduler, MethodRungs
from flipsearch.search.scheduler import ParetoRungs

OBJ = [Objective("accuracy_new", "max"), Objective("nfr", "min")]


def test_each_method_is_ranked_against_its_own_trials():
    """Method `weak` is dominated by every `strong` trial: pooled, all but its first trial
    stop; per method, it keeps the top of its own trials, as `strong` does."""
    strong = [(f"s{i}", (0.90 + 0.01 * i, 0.02)) for i in range(3)]
    weak = [(f"w{i}", (0.50 + 0.01 * i, 0.10)) for i in range(3)]
    arrivals = [x for pair in zip(strong, weak) for x in pair]
    pooled = ParetoRungs(("max", "min"), max_t=9, grace_period=1, reduction_factor=3)
    per_method = MethodRungs(("max", "min"), max_t=9, grace_period=1, reduction_factor=3)
    per_method.group_of.update({tid: "study/" + tid[0] for tid, _ in arrivals})
    got_pooled = {tid: pooled.on_result(tid, 1, v) for tid, v in arrivals}
    got = {tid: per_method.on_result(tid, 1, v) for tid, v in arrivals}
    assert [got_pooled[f"w{i}"] for i in range(3)] == ["stop"] * 3
    # same rule within each method: first continues, then the newcomer must rank in ceil(n/3)
    assert [got[f"s{i}"] for i in range(3)] == [got[f"w{i}"] for i in range(3)] == ["continue", "continue", "continue"]
    assert set(per_method.parts) == {"study/s", "study/w"}
    assert per_method.rung_counts()[1] == {"recorded": 6, "continued": 6, "stopped": 0}


def test_per_method_state_round_trips_and_reads_like_moasha_state():
    rungs = MethodRungs(("max", "min"), max_t=9, grace_period=1, reduction_factor=3)
    rungs.group_of.update({"a": "s/ce", "b": "s/ce", "c": "s/fd"})
    rungs.on_result("a", 1, (0.9, 0.01))
    rungs.on_result("b", 1, (0.5, 0.20))  # stopped: dominated by a
    rungs.on_result("c", 1, (0.4, 0.30))  # continues: the first fd trial
    state = json.loads(json.dumps(rungs.state_dict(), allow_nan=False))
    again = MethodRungs(("max", "min"), max_t=9, grace_period=1, reduction_factor=3)
    again.load_state_dict(state)
    assert again.stopped == rungs.stopped == {"b": 1} and again.decisions == rungs.decisions
    # the merged state is what the report reads for a pooled scheduler
    rows = pd.DataFrame({"status": ["ok", "stopped", "ok"], "epochs": [9, 1, 9], "study": "s"})
    es = early_stopping(rows, {"core": state}, rows["study"])
    assert es.rungs[1].recorded == 3 and es.rungs[1].stopped == 1


def test_the_scheduler_learns_each_trials_method_from_its_config():
    sched = MethodMOASHAScheduler(OBJ, max_t=9)
    solo = SimpleNamespace(trial_id="t1", config={"study": "s", "trial_uid": "u1", "config": {"method": "fd"}})
    pack = SimpleNamespace(trial_id="t2", config={"pack": [{"study": "s", "trial_uid": "u2", "config": {"method": "bct"}},
                                                           {"study": "s", "trial_uid": "u3", "config": {"method": "bct"}}]})
    for t in (solo, pack):
        sched.on_trial_add(None, t)
    assert sched.core.group_of == {"t1": "s/fd", "u1": "s/fd", "t2": "s/bct", "u2": "s/bct", "u3": "s/bct"}


def _rows() -> pd.DataFrame:
    base = {"study": "digits__exclusive-op__small", "dataset": "digits", "arrangement": "exclusive-op",
            "model": "small", "seed": 0}
    rows = [
        {**base, "method": "ce", "trial_number": 0, "status": "ok", "epochs": 2, "update_lr": 0.01,
         "val_accuracy_new": 0.80, "val_nfr": 0.02},
        {**base, "method": "fd", "trial_number": 1, "status": "diverged", "epochs": 1, "update_lr": 0.9,
         "hp_lambda": 2.0, "error": "training loss became nan in epoch 1"},
        {**base, "method": "ce", "trial_number": 2, "status": "ok", "epochs": 2, "update_lr": 0.05,
         "val_accuracy_new": 0.90, "val_nfr": 0.03},
        {**base, "method": "fd", "trial_number": 3, "status": "ok", "epochs": 2, "update_lr": 0.02,
         "hp_lambda": 1.0, "val_accuracy_new": 0.85, "val_nfr": 0.01},
    ]
    return pd.DataFrame(rows).assign(finished_at=lambda d: d["trial_number"].astype(float))


def test_budget_table_shows_each_methods_trials_best_point_and_divergences():
    searched = {"ce": {"update.lr": ["loguniform", [0.001, 1.0]]},
                "fd": {"update.lr": ["loguniform", [0.001, 1.0]], "lambda": ["loguniform", [0.5, 4.0]]}}
    table = method_budgets(_rows(), OBJ, [], searched).set_index("method")
    assert table.loc["ce", "trials"] == table.loc["fd", "trials"] == 2
    assert (table.loc["ce", "ok"], table.loc["fd", "diverged"], table.loc["fd", "epochs"]) == (2, 1, 3)
    assert table.loc["ce", "best_accuracy_new"] == 0.90 and table.loc["ce", "best_at"] == 2
    assert table.loc["fd", "best_accuracy_new"] == 0.85 and table.loc["fd", "best_at"] == 2
    assert table.loc["fd", "diverged_settings"] == ["lambda=2 update.lr=0.9 (epoch 1)"]
    assert table.loc["ce", "diverged_settings"] == []
    assert math.isnan(method_budgets(_rows().assign(status="failed"), OBJ, [], searched)["best_nfr"].iloc[0])
    assert budget_mode(None) == "per-scenario" and budget_mode(SweepRecord()) == "per-scenario"
    assert budget_mode(SweepRecord(budget="per-method")) == "per-method"


SPACE = """
name: t-budget
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0], training: {epochs: 3}}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: random, trials_per_scenario: 6, seed: 2, concurrency: 1, budget: per-method,
         scheduler: mo-asha, grace_period: 1, reduction_factor: 3}
methods:
  ce: {update.lr: {loguniform: [0.005, 0.1]}}
  fd: {update.lr: {loguniform: [0.005, 0.1]}, lambda: {loguniform: [0.5, 2.0]}}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_per_method_sweep_with_early_stopping_ranks_each_method_on_its_own(ray_local, tiny_space, tmp_path):
    from flipsearch import read_results, sweep

    out = tmp_path / "budget"
    sweep(tiny_space(SPACE), out=str(out), quiet=True)
    rows = read_results(str(out))
    assert rows["method"].value_counts().to_dict() == {"ce": 3, "fd": 3}
    state = json.loads((out / "scheduler.json").read_text())["core"]
    groups = {g.rsplit("/", 1)[1] for g in state["per_method"]}
    assert groups == {"ce", "fd"}
    for part in state["per_method"].values():  # the first trial at a rung of its own method always goes on
        first = part["recorded"][0][1][0][0]
        assert part["decisions"][first][0][1] == "continue"
    table = method_budgets(rows, OBJ, []).set_index("method")
    assert table["trials"].to_dict() == {"ce": 3, "fd": 3}
