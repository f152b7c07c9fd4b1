"""Faults injected for real: a raising trial, a NaN loss, a killed worker, a SIGKILLed
driver, Ctrl-C, two sweeps on one directory. Nothing finished may be lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from flipsearch.errors import FlipsearchError
from flipsearch.results import read_results
from flipsearch.search.space import load_space
from flipsearch.search.sweep import SweepOptions, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _study_states(out):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    return {s.study_name: [t.state for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
            for s in optuna.get_all_study_summaries(storage)}


def test_failed_and_diverged_trials_are_recorded_and_the_sweep_goes_on(ray_local, tiny_space, tmp_path):
    path = tiny_space("""
scenario:
  datasets: [digits]
  arrangements: [class-incremental]
  models: [small, "flipsearch_faults:raising", "flipsearch_faults:nan_when_training"]
  training: {epochs: 3}
search: {trials_per_scenario: 2, concurrency: 2}
methods: {ce: {init: {choice: [old, scratch]}}}
""")
    out = tmp_path / "out"
    summary = run_sweep(load_space(path), SweepOptions(out=str(out), quiet=True))
    assert not summary.interrupted
    rows = read_results(str(out)).set_index("model")
    assert len(rows) == 6
    assert set(rows.loc["small", "status"]) == {"ok"}
    failed = rows.loc["flipsearch_faults:raising"]
    assert set(failed["status"]) == {"failed"}
    assert all(e == "RuntimeError: injected fault: a 10-class model cannot train" for e in failed["error"])
    diverged = rows.loc["flipsearch_faults:nan_when_training"]
    assert set(diverged["status"]) == {"diverged"}
    assert all("epoch 1" in e for e in diverged["error"])  # stopped at once, not after 3 epochs
    states = _study_states(out)
    assert set(states["digits__class-incremental__small"]) == {TrialState.COMPLETE}
    for name in ("digits__class-incremental__flipsearch_faults_raising",
                 "digits__class-incremental__flipsearch_faults_nan_when_training"):
        assert set(states[name]) == {TrialState.FAIL}  # failed, not RUNNING, no NaN told


def test_killed_worker_is_retried_and_recorded_once(ray_local, tiny_space, tmp_path):
    marker = os.path.join(os.environ["FLIPSEARCH_FAULT_DIR"], "killed-once")
    assert not os.path.exists(marker)
    path = tiny_space("""
scenario: {datasets: [digits], models: ["flipsearch_faults:kill_once"], training: {epochs: 2}}
search: {trials_per_scenario: 1, max_failures: 2}
methods: {ce: {}}
""")
    out = tmp_path / "out"
    run_sweep(load_space(path), SweepOptions(out=str(out), quiet=True))
    assert os.path.exists(marker)  # the first attempt really was killed
    rows = read_results(str(out))
    assert len(rows) == 1 and rows["status"].iloc[0] == "ok"


SLOW_SPACE = """
name: long
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], training: {epochs: 6}}
search: {trials_per_scenario: 6, concurrency: 1, sampler: random}
methods:
  ce: {}
  bct: {lambda_c: {uniform: [0.1, 1.0]}}
"""


def _start_sweep(space_path, out, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "flipsearch.cli", "sweep", space_path, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _wait_for_rows(out, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        parts = list((out / "trials").glob("part-*.parquet")) if (out / "trials").exists() else []
        if len(parts) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep exited early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.5)
    raise AssertionError("no rows appeared in time")


def _reap(proc):
    """Kill the sweep's whole process group (its embedded Ray too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def test_sigkilled_driver_resumes_without_loss_or_duplicates(ray_local, tiny_space, tmp_path):
    space_path = tiny_space(SLOW_SPACE)
    out = tmp_path / "out"
    proc = _start_sweep(space_path, out)
    try:
        _wait_for_rows(out, 2, proc)
        # A second sweep on the same directory while the first is alive is refused.
        with pytest.raises(FlipsearchError, match="another sweep"):
            run_sweep(load_space(space_path), SweepOptions(out=str(out), resume=True, quiet=True))
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; then clean up what it started
    finally:
        _reap(proc)
    before = read_results(str(out)).set_index(["study", "trial_number"])["finished_at"]
    assert 2 <= len(before) < 6
    # Without --resume the dead sweep's directory is not reused.
    with pytest.raises(Exception, match="--resume"):
        run_sweep(load_space(space_path), SweepOptions(out=str(out), quiet=True))
    summary = run_sweep(load_space(space_path), SweepOptions(out=str(out), resume=True, quiet=True))
    rows = read_results(str(out))
    assert len(rows) == 6 and summary.trials_run == 6 - len(before)
    assert not rows.duplicated(["study", "trial_number"]).any()
    after = rows.set_index(["study", "trial_number"])["finished_at"]
    assert (after.loc[before.index] == before).all()  # finished trials were not rerun
    assert set(rows["status"]) == {"ok"}
    states = _study_states(out)["digits__exclusive-op__small"]
    assert TrialState.RUNNING not in states and states.count(TrialState.COMPLETE) == 6


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(ray_local, tiny_space, tmp_path):
    space_path = tiny_space(SLOW_SPACE)
    out = tmp_path / "out"
    proc = _start_sweep(space_path, out)
    try:
        _wait_for_rows(out, 1, proc)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        _reap(proc)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert not (out / "sweep.lock").exists()  # released on the way out
    finished = read_results(str(out))
    assert 1 <= len(finished) < 6 and set(finished["status"]) == {"ok"}
    run_sweep(load_space(space_path), SweepOptions(out=str(out), resume=True, quiet=True))
    rows = read_results(str(out))
    assert len(rows) == 6 and not rows.duplicated(["study", "trial_number"]).any()
