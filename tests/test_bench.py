"""Every script in bench/ still runs: each has a `--smoke` mode (its smallest sizes, seconds)
and the suite runs it, so a refactor cannot break a benchmark that the README cites without
a test failing. A smoke run checks that the script runs to its figure, not the figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))

pytestmark = pytest.mark.slow


def test_the_bench_folder_has_its_scripts():
    assert {"sweep_vs_naive.py", "method_overhead.py", "orchestration_overhead.py", "scaling.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_runs_in_its_smoke_mode(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("RAY_ADDRESS", None)  # a script that starts Ray starts its own
    res = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=280)
    assert "unrecognized arguments: --smoke" not in res.stderr, f"bench/{script} has no --smoke mode"
    assert res.returncode == 0, f"bench/{script} --smoke exited {res.returncode}:\n{res.stderr[-3000:]}"
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines, f"bench/{script} --smoke printed no figure"
