"""Every script in bench/ still runs: each has a `--smoke` mode (its smallest sizes, seconds)
and the suite runs it, so a refactor cannot break a benchmark that the README cites without
a test failing. A smoke run checks that the script runs to its figure, not the figure.

These, bench/gpu_check.sh in its cpu mode (tests/test_gpu_ready.py) and the multi-node
cluster (tests/test_cluster.py, marker `cluster`) form the suite's heavy tier (marker `bench`,
left out of a plain `pytest` run by pyproject's addopts): each starts torch, and several a Ray
of their own, in a fresh process, a few minutes in all. scripts/test.sh (and so CI) runs the
tier after the main suite, each test a unit an idle xdist worker takes (tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the scripts (bench/replay_sim.py and the like are modules a script imports)
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py")
                 if not p.name.startswith("_") and 'if __name__ == "__main__"' in p.read_text())
# bench/gpu_check.py runs whole (every section, CPU sizes) in bench/gpu_check.sh's cpu mode
# (tests/test_gpu_ready.py): its --smoke (one section) would be a subset of that run.
SMOKED = [s for s in SCRIPTS if s != "gpu_check.py"]

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def test_the_bench_folder_has_its_scripts():
    assert {"sweep_vs_naive.py", "method_overhead.py", "orchestration_overhead.py", "scaling.py"} <= set(SCRIPTS)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", SMOKED)
def test_bench_script_runs_in_its_smoke_mode(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("RAY_ADDRESS", None)  # a script that starts Ray starts its own
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=540)
    finally:  # the script's whole session, its Ray too: nothing of it outlives the test
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert "unrecognized arguments: --smoke" not in err, f"bench/{script} has no --smoke mode"
    assert proc.returncode == 0, f"bench/{script} --smoke exited {proc.returncode}:\n{err[-3000:]}"
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"bench/{script} --smoke printed no figure"
