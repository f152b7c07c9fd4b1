"""Shared fixtures. Ray starts once per test session (2 CPUs, no dashboard)."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray workers inherit this environment: they import the fault-injecting model factories in
# tests/flipsearch_faults.py and leave their markers in FLIPSEARCH_FAULT_DIR.
_TESTS = os.path.dirname(os.path.abspath(__file__))
# A temporary folder on every worker's path, where a test writes a user's method module.
os.environ["FLIPSEARCH_PLUGIN_DIR"] = tempfile.mkdtemp(prefix="flipsearch-plugins-")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ["FLIPSEARCH_PLUGIN_DIR"],
                                                       os.environ.get("PYTHONPATH")) if p)
os.environ["FLIPSEARCH_FAULT_DIR"] = tempfile.mkdtemp(prefix="flipsearch-faults-")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no TensorBoard/CSV loggers per trial


@pytest.fixture(scope="session")
def ray_local():
    """The session's embedded Ray; sweeps run in-process join it instead of starting one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_space(tmp_path):
    """Write a small search space file and return a function that makes more."""

    def write(text: str, name: str = "space.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write
