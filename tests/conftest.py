"""Shared fixtures. Ray starts once per test session (2 CPUs, no dashboard); torch and every
process the tests start (sweeps, Ray workers) use one intra-op thread; under
FLIPSEARCH_NO_SKIP=1 (scripts/test.sh, CI) a skipped test fails the run."""

from __future__ import annotations

import os
import tempfile

import pytest

# One thread everywhere, set before torch is imported: float sums then do not depend on how
# many cores a machine has or how busy it is (tolerances stay meaningful), and two trials on
# the 2 cores do not fight over OpenMP threads. Ray workers and subprocesses inherit it.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# As flipsearch's own embedded Ray (search/sweep.py:connect_ray): no default workers prestarted
# for a Ray the tests start themselves; Tune's trial actors could not use them.
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
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


# One packed sweep serves two tests: test_pack_trial checks its rows (one per pack member,
# repairs alone) and test_kept_models its --keep all models (and resumes a copy).
PACKED_SPACE = """
name: t-keep-all
scenario:
  datasets: [digits]
  arrangements: [exclusive-op]
  models: [small]
  training: {epochs: 2}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: random, trials_per_scenario: 5, seed: 2, concurrency: 2, pack: 2, keep: all}
methods:
  bct:
    lambda_c: {loguniform: [0.05, 4.0]}
  neurecover:
    particles: 4
    iterations: 2
"""


@pytest.fixture(scope="session")
def packed_sweep(ray_local, tmp_path_factory):
    """(space file, out dir, summary) of a finished PACKED_SPACE sweep: bct in packs of 2
    beside neurecover (a repair, run alone), every model kept. Tests read it; one that
    changes it works on a copy."""
    from flipsearch import sweep

    base = tmp_path_factory.mktemp("packed")
    space = base / "space.yaml"
    space.write_text(PACKED_SPACE)
    out = base / "out"
    summary = sweep(str(space), out=str(out), quiet=True)
    return str(space), out, summary


@pytest.fixture
def tiny_space(tmp_path):
    """Write a small search space file and return a function that makes more."""

    def write(text: str, name: str = "space.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


# Scheduling on pytest-xdist workers (scripts/test.sh: -n 2 --dist loadgroup
# --no-loadscope-reorder). A test that shares a costly fixture (a sweep in a module- or
# class-scoped fixture, the session's packed sweep) stays with the other tests that share it,
# on one worker, so the fixture runs once; every other test (the heavy tier's scripts among
# them) is a unit of its own that any idle worker takes. Units run slow-marked first (the
# sweeps, the subprocess fault tests, the bench scripts), so that what is left for the end of
# the run is short work that evens out the workers.
SHARED_SESSION_FIXTURES = ("packed_sweep",)


def _shared_group(item) -> str | None:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in item.fixturenames:
        if name in SHARED_SESSION_FIXTURES:
            return name
        defs = info.name2fixturedefs.get(name) or ()
        if any(d.scope in ("module", "class") and not getattr(d, "_autouse", False) for d in defs):
            return getattr(item.module, "__name__", None)
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own (a worker registers it after this file), which reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _shared_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    # Slow first (stable: file order kept within). A group stays one unit on xdist wherever its
    # tests sit.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


NO_SKIP = os.environ.get("FLIPSEARCH_NO_SKIP") == "1" or os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under FLIPSEARCH_NO_SKIP=1 a skip is a failure: CI cannot pass with a test not run."""
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under FLIPSEARCH_NO_SKIP=1 (scripts/test.sh installs what it needs): {reason}"


def pytest_sessionfinish(session, exitstatus):
    """Also a module skipped at collection fails the run under FLIPSEARCH_NO_SKIP=1."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if NO_SKIP and reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1
