"""The replay benchmark (bench/replay.py): the simulator drives real schedulers through Ray's
calls on recorded curves, counts compute exactly, and the smoke mode runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import replay as replay_mod  # noqa: E402  (bench/replay.py; a missing module fails, never skips)
from replay_sim import Curves, replay  # noqa: E402


@pytest.fixture(scope="module")
def curves():
    return Curves.from_table(replay_mod.synthetic_table(n=18, seed=1), "synthetic", replay_mod.OBJECTIVES)


def test_full_budget_order_completes_everything_and_reaches_the_full_front(curves):
    scorer = replay_mod.Scorer(curves)
    run = replay(curves, np.arange(curves.n)[::-1], None, workers=2)
    assert sorted(run.done_idx) == list(range(curves.n)) and run.epochs == curves.n * curves.max_epoch
    assert run.compute == pytest.approx(curves.seconds_total.sum())
    s = scorer.score(run)
    assert s["used"] == pytest.approx(1.0) and s["front_found"] == 1.0
    assert s["reach1.0"] <= 1.0 and s["test1.0"] == pytest.approx(1.0)
    assert s["reach0.95"] <= s["reach0.99"] <= s["reach1.0"]
    # completions are in time order: the compute at each one grows
    assert all(a <= b for a, b in zip(run.done_at, run.done_at[1:]))


@pytest.mark.parametrize("name", ["mo-asha", "stratified", "asha-acc"])
def test_a_scheduler_stops_trials_and_the_compute_is_what_they_ran(curves, name):
    factory, oracle = replay_mod.variants([name])[name]
    sched = factory(curves)
    order = np.random.default_rng(0).permutation(curves.n)
    run = replay(curves, order, sched, workers=3, oracle=oracle)
    done = set(run.done_idx)
    assert 0 < len(done) < curves.n                                  # some stopped, some completed
    if hasattr(sched, "stopped"):                                    # flipsearch's schedulers keep a record
        stopped = {int(t[1:]) for t in sched.stopped}
        assert stopped and not stopped & done and stopped | done == set(range(curves.n))
        # each trial's compute is its recorded seconds up to where it ended
        expected = sum(curves.seconds_total[i] if i in done else curves.seconds[i, int(sched.stopped[f"t{i}"]) - 1]
                       for i in range(curves.n))
        assert run.compute == pytest.approx(expected)
        assert run.epochs == sum(curves.max_epoch if i in done else int(sched.stopped[f"t{i}"])
                                 for i in range(curves.n))


def test_the_same_ordering_replays_identically(curves):
    factory, _ = replay_mod.variants(["stratified"])["stratified"]
    order = np.random.default_rng(3).permutation(curves.n)
    a, b = (replay(curves, order, factory(curves), workers=2) for _ in range(2))
    assert a.done_idx == b.done_idx and a.done_at == b.done_at


@pytest.mark.slow
def test_smoke_mode_runs_end_to_end():
    out = subprocess.run([sys.executable, str(BENCH / "replay.py"), "smoke", "--orderings", "3",
                          "--variants", "random,mo-asha,stratified"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["random", "mo-asha", "stratified"]
    assert "| random | 1.00 [1.00-1.00] |" in out.stdout


def test_paired_comparison_counts_each_ordering_and_tests_the_unequal_pairs():
    """Target (c) / (d)'s paired rows: per ordering, higher / equal / lower, and a Wilcoxon
    p-value over the unequal pairs only (ties dropped)."""
    from scipy.stats import wilcoxon

    new = [0.99, 0.98, 1.00, 0.97, 1.00, 0.95]
    old = [0.98, 0.98, 0.99, 0.99, 0.97, 0.94]
    results = {"stratified-asha": [{f"test{f}": v for f in replay_mod.FRACTIONS} for v in new],
               "mo-asha": [{f"test{f}": v for f in replay_mod.FRACTIONS} for v in old]}
    (line,) = replay_mod.paired(results)  # no "random" variant: only the mo-asha row
    d = np.array(new) - np.array(old)
    p = wilcoxon(d[d != 0]).pvalue
    assert line.startswith("paired test HV, stratified-asha vs mo-asha")
    assert line.count("higher / equal / lower in 4 / 1 / 1") == len(replay_mod.FRACTIONS)
    assert f"median diff {np.median(d):+.4f}" in line and f"p {p:.2g}" in line
