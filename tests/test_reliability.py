"""Faults injected for real: a raising trial, a NaN loss, a killed worker, a SIGKILLed
driver, Ctrl-C, SIGTERM, two sweeps on one directory (and two started at the same instant),
a lost, a torn and a damaged Optuna journal, a changed search space on resume, trial
resources no node has, a reference model replaced together with its checksum. Nothing
finished may be lost or duplicated; every refusal is one line."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from flipsearch.cli import main
from flipsearch.errors import FlipsearchError
from flipsearch.results import read_results
from flipsearch.search.space import load_space
from flipsearch.search.sweep import OutputLock, SweepOptions, run_sweep
from flipsearch.storage import Storage

pytestmark = [pytest.mark.slow, pytest.mark.ray]
STUDY = "digits__exclusive-op__small"


def _study_states(out):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    return {s.study_name: [t.state for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
            for s in optuna.get_all_study_summaries(storage)}


def _study(out, name=STUDY):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def _main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def _one_line(err, *fragments):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flipsearch: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_failed_and_diverged_trials_are_recorded_and_the_sweep_goes_on(ray_local, tiny_space, tmp_path):
    path = tiny_space("""
scenario:
  datasets: [digits]
  arrangements: [class-incremental]
  models: [small, "flipsearch_faults:raising", "flipsearch_faults:nan_when_training"]
  training: {epochs: 3}
search: {trials_per_scenario: 2, concurrency: 1}
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


# The subprocess fault tests signal a sweep at an event, never after a guessed delay: its
# model (tests/flipsearch_faults.py:gated) lets the first trials train, then holds every
# training that starts once the sweep has `gate_rows` rows until the test releases it, so the
# sweep can neither finish nor move on before the test has signalled it.
GATED = "digits__exclusive-op__flipsearch_faults_gated"
SLOW_SPACE = """
name: long
scenario: {datasets: [digits], arrangements: [exclusive-op], models: ["flipsearch_faults:gated"], training: {epochs: 2}}
search: {trials_per_scenario: 4, concurrency: 1, sampler: random}
methods:
  ce: {}
  bct: {lambda_c: {uniform: [0.1, 1.0]}}
"""


def _start_sweep(space_path, out, gate_rows):
    """`flipsearch sweep` in a process (and Ray) of its own; training that starts once OUT has
    `gate_rows` rows waits for `_release(out)`."""
    gate = out.parent / "gate"
    gate.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1", FLIPSEARCH_GATE=str(gate), FLIPSEARCH_GATE_ROWS=str(gate_rows),
               FLIPSEARCH_GATE_OUT=str(out))
    env.pop("RAY_prestart_worker_first_driver", None)  # as a user's shell: the sweep's own Ray settings apply
    return subprocess.Popen([sys.executable, "-m", "flipsearch.cli", "sweep", space_path, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _wait_at_gate(out, proc, timeout=240):
    """Until a trial of the sweep writing OUT waits at the gate: the rows before it are written
    and no other trial runs (concurrency 1)."""
    gate = out.parent / "gate"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.name.startswith("waiting-") for p in gate.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep exited before reaching the gate: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no trial reached the gate within {timeout}s")


def _descendants(pid):
    """(pid, start time, name) of every process below `pid` (psutil ships with Ray)."""
    import ray  # noqa: F401 - puts Ray's bundled psutil on the path
    import psutil

    found = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            found.append((p.pid, p.create_time(), p.name()))
        except psutil.Error:
            pass
    return found


def _still_running(procs, within):
    """Those of `procs` still running (same pid and start time) after waiting up to `within` s."""
    import ray  # noqa: F401
    import psutil

    deadline = time.time() + within
    while True:
        left = []
        for pid, started, name in procs:
            try:
                p = psutil.Process(pid)
                if p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(name)
            except psutil.Error:
                pass
        if not left or time.time() > deadline:
            return left
        time.sleep(1)


def _listening(pid):
    """{'name (pid)': [ip, ...]} of the sockets `pid` and its descendants listen on."""
    import ray  # noqa: F401 - Ray's bundled psutil
    import psutil

    listening = {}
    for p in [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True):
        try:
            addrs = [c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        if addrs:
            listening[f"{p.name()} ({p.pid})"] = addrs
    return listening


def _is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def _reap(proc):
    """Kill the sweep's whole process group (its embedded Ray too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def test_sigkilled_driver_resumes_without_loss_or_duplicates_and_ray_listened_on_loopback(ray_local, tiny_space,
                                                                                            tmp_path):
    space_path = tiny_space(SLOW_SPACE)
    out = tmp_path / "out"
    proc = _start_sweep(space_path, out, gate_rows=2)
    try:
        _wait_at_gate(out, proc)  # two rows written, the third trial held: the sweep cannot finish
        # A second sweep on the same directory while the first is alive is refused.
        with pytest.raises(FlipsearchError, match="another sweep"):
            run_sweep(load_space(space_path), SweepOptions(out=str(out), resume=True, quiet=True))
        # Its embedded Ray listens on loopback only.
        listening = _listening(proc.pid)
        assert any(name.startswith("gcs_server") for name in listening)
        assert any(name.startswith("raylet") for name in listening)
        exposed = {name: ips for name, ips in listening.items() if not all(_is_loopback(ip) for ip in ips)}
        assert not exposed, f"listening beyond loopback: {exposed}"
        started = _descendants(proc.pid)  # its embedded Ray: GCS, raylet, agents, workers
        names = {n for _, _, n in started}
        assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names
        assert "ray::IDLE" not in names  # no default workers prestarted: no trial could use them (connect_ray)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only
        left = _still_running(started, within=60)
        assert not left, f"processes of the killed driver's Ray still running: {left}"
    finally:
        _reap(proc)
    before = read_results(str(out)).set_index(["study", "trial_number"])["finished_at"]
    assert len(before) == 2
    # Without --resume the dead sweep's directory is not reused.
    with pytest.raises(Exception, match="--resume"):
        run_sweep(load_space(space_path), SweepOptions(out=str(out), quiet=True))
    summary = run_sweep(load_space(space_path), SweepOptions(out=str(out), resume=True, quiet=True))
    rows = read_results(str(out))
    assert len(rows) == 4 and summary.trials_run == 2
    assert not rows.duplicated(["study", "trial_number"]).any()
    after = rows.set_index(["study", "trial_number"])["finished_at"]
    assert (after.loc[before.index] == before).all()  # finished trials were not rerun
    assert set(rows["status"]) == {"ok"}
    states = _study_states(out)[GATED]
    assert TrialState.RUNNING not in states
    trained = [t for t in _study(out, GATED).trials if t.state == TrialState.COMPLETE and "repeat_of" not in t.user_attrs]
    assert len(trained) == 4  # one told trial per row (and repeated suggestions told beside them)


def test_sigterm_is_routed_to_the_active_sigint_handler():
    """What makes SIGTERM stop a sweep like Ctrl-C: the handler `route_sigterm` installs calls
    whatever SIGINT handler is active (Tune's during a sweep) and remembers it for exit 143;
    with SIGINT ignored it raises KeyboardInterrupt."""
    from flipsearch import signals

    seen = []
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    received = signals._state["received"]
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
        signals.route_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 10
        while not seen and time.time() < deadline:
            time.sleep(0.01)  # delivered to the main thread at its next bytecode
        assert seen == [signal.SIGINT] and signals.received() and signals.EXIT_SIGTERM == 143
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        signals._state["received"] = received


@pytest.mark.parametrize("by_sigterm, status", [(False, 130), (True, 143)])
def test_an_interrupted_sweep_exits_130_after_ctrl_c_and_143_after_sigterm(tiny_space, tmp_path, monkeypatch, capsys,
                                                                         by_sigterm, status):
    """The CLI's side of a stop (the subprocess test below makes a real one): whatever stopped
    the sweep, it prints the resume command; the status says which signal it was."""
    import types

    from flipsearch import api, signals

    space = tiny_space("scenario: {datasets: [digits]}\nmethods: {ce: {}}\n")
    stopped = types.SimpleNamespace(interrupted=True, line=lambda: "sweep t: 1 trial run")
    monkeypatch.setattr(api, "sweep", lambda *a, **kw: stopped)
    monkeypatch.setitem(signals._state, "received", by_sigterm)
    monkeypatch.setattr(signals, "route_sigterm", lambda: None)  # leave this process's handlers alone
    code, err = _main(["sweep", space, "--out", str(tmp_path / "out")], capsys)
    assert code == status
    assert err.strip() == f"interrupted: resume with  flipsearch sweep {space} --out {tmp_path / 'out'} --resume"


REPLICATE_SPACE = """
name: reps
scenario: {datasets: [digits], arrangements: [exclusive-op], models: ["flipsearch_faults:gated"], training: {epochs: 2}}
search: {sampler: grid, concurrency: 1, replicates: 2}
methods:
  ce: {}
  bct: {lambda_c: 1.0}
"""


def test_sigterm_in_the_replicate_phase_stops_cleanly_says_how_to_resume_and_resume_finishes_it(
        ray_local, tiny_space, tmp_path):
    """SIGTERM is routed to the Ctrl-C handler (the tests beside this one check the routing and
    the exit status of each), so this one subprocess sweep stands for both, stopped in its
    replicate phase: a clean stop, exit 143, the resume command, the lock released, finished
    rows kept, and a resume that finishes the replicates without duplicates. Its terminal
    shows flipsearch's own lines only."""
    space_path = tiny_space(REPLICATE_SPACE)
    out = tmp_path / "out"
    proc = _start_sweep(space_path, out, gate_rows=3)
    try:
        _wait_at_gate(out, proc)  # both search trials and the first replicate written, the next held
        os.kill(proc.pid, signal.SIGTERM)
        out_text, err = proc.communicate(timeout=120)
    finally:
        _reap(proc)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "SIGTERM received" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted: resume with  flipsearch sweep") and lines[-1].endswith("--resume")
    assert lines[:-1] and all(line.startswith("[flipsearch] ") for line in lines[:-1]), err  # no Ray or Tune noise
    shown = [line for line in out_text.splitlines() if line.strip()]
    assert len(shown) == 1 and shown[0].startswith("sweep "), out_text
    assert not (out / "sweep.lock").exists()  # released on the way out
    before = read_results(str(out))
    reps = before[before["replicate_of"].notna()]
    assert len(before[before["replicate_of"].isna()]) == 2 and len(reps) == 1 and set(before["status"]) == {"ok"}
    summary = run_sweep(load_space(space_path), SweepOptions(out=str(out), resume=True, quiet=True))
    assert not summary.interrupted and summary.trials_run == 0
    rows = read_results(str(out))
    assert rows["trial_uid"].is_unique and set(before["trial_uid"]) <= set(rows["trial_uid"])
    reps = rows[rows["replicate_of"].notna()]
    assert len(reps) == len(before[before["replicate_of"].notna()]) + summary.replicates_run
    assert not reps.duplicated(["replicate_of", "replicate"]).any() and set(reps["status"]) == {"ok"}
    # every origin (the ce baseline, and bct when it is on the front) has its 2 seeds
    assert set(reps.groupby("replicate_of")["seed"].apply(lambda s: tuple(sorted(s)))) == {(1, 2)}
    # each replicate run trained its seed's M1 or found it cached: the summary counts them
    assert summary.references_trained + summary.reference_hits >= summary.replicates_run >= 1


# --------------------------------------------------------------------------- resume from the rows

BASE_SPACE = """
name: base
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0, 1], training: {epochs: 2}}
objectives: ["nfr:min", "br:min"]
search: {trials_per_scenario: 3, concurrency: 1, sampler: random}
methods:
  ce: {init: {choice: [old, scratch]}}
  bct: {lambda_c: {uniform: [0.1, 1.0]}}
"""


@pytest.fixture(scope="module")
def finished_sweep(ray_local, tmp_path_factory):
    """A finished 3-trial sweep (two methods, two seeds: every kind of parameter); tests
    damage copies of it."""
    root = tmp_path_factory.mktemp("finished")
    space = root / "space.yaml"
    space.write_text(BASE_SPACE)
    out = root / "out"
    run_sweep(load_space(str(space)), SweepOptions(out=str(out), quiet=True))
    assert len(read_results(str(out))) == 3
    return str(space), out


def _copy(finished, tmp_path):
    space, out = finished
    shutil.copytree(out, tmp_path / "out")
    return space, tmp_path / "out"


def _assert_rows_and_study_agree(out, before, n):
    rows = read_results(str(out))
    assert len(rows) == n
    assert rows["trial_uid"].is_unique and not rows.duplicated(["study", "trial_number"]).any()
    kept = rows.set_index("trial_uid").loc[before["trial_uid"]]  # every earlier row, unchanged
    assert list(kept["finished_at"]) == list(before["finished_at"])
    assert list(kept["trial_number"]) == list(before["trial_number"])
    study = _study(out)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    told = {t.user_attrs.get("trial_uid"): t for t in study.trials
            if t.state == TrialState.COMPLETE and "repeat_of" not in t.user_attrs}  # repeats: evidence, no row
    assert set(told) == set(rows["trial_uid"])  # the study holds every row, once
    return rows, told


def _reopen(space_path, out):
    """What `--resume` does before it runs anything: open the studies (repairing or rebuilding
    the journal) and reconcile them with the rows. (That a resume then runs only what is
    missing, without duplicates, is test_sigkilled_driver_resumes_... 's proof.)"""
    from flipsearch.search.studies import StudyBook

    space = load_space(space_path)
    book = StudyBook(space, Storage.open(str(out)), space.objectives, space.constraints, space.sampler, 0)
    return book, book.reconcile(read_results(str(out)))


def test_lost_journal_is_rebuilt_from_the_rows(finished_sweep, tmp_path):
    space_path, out = _copy(finished_sweep, tmp_path)
    before = read_results(str(out))
    (out / "optuna.journal").unlink()
    _, done = _reopen(space_path, out)
    assert done == {STUDY: 3}  # a resume runs the rest of the budget, no finished trial again
    rows, told = _assert_rows_and_study_agree(out, before, 3)
    for _, r in before.iterrows():  # rebuilt under its own number, with its parameters and values
        t = told[r["trial_uid"]]
        assert t.number == r["trial_number"]
        assert t.params["method"] == r["method"] and t.params["seed"] == r["seed"]
        if r["method"] == "bct":
            assert t.params["bct.lambda_c"] == pytest.approx(r["hp_lambda_c"])
        else:
            assert t.params["ce.init"] == r["hp_init"]
        assert t.values == pytest.approx([r["val_nfr"], r["val_br"]])


def test_torn_last_journal_record_is_dropped_and_said(finished_sweep, tmp_path):
    space_path, out = _copy(finished_sweep, tmp_path)
    before = read_results(str(out))
    journal = out / "optuna.journal"
    journal.write_bytes(journal.read_bytes()[:-20])  # the driver died in the middle of a write
    book, done = _reopen(space_path, out)  # run_sweep prints every note of the book, --quiet or not
    notes = [note for note in book.notes if "optuna.journal" in note]
    assert len(notes) == 1 and "dropped a torn last record" in notes[0], book.notes
    assert done == {STUDY: 3}
    _assert_rows_and_study_agree(out, before, 3)


def test_journal_damaged_inside_is_set_aside_and_rebuilt(finished_sweep, tmp_path):
    from flipsearch.search.studies import StudyBook

    _, out = _copy(finished_sweep, tmp_path)
    space = load_space(finished_sweep[0])
    rows = read_results(str(out))
    journal = out / "optuna.journal"
    records = journal.read_bytes().split(b"\n")
    records[3] = records[3][: len(records[3]) // 2]  # damaged in place, records after it intact
    journal.write_bytes(b"\n".join(records))
    book = StudyBook(space, Storage.open(str(out)), space.objectives, space.constraints, space.sampler, 0)
    assert len(book.notes) == 1 and "record 4" in book.notes[0] and "set it aside" in book.notes[0]
    assert book.reconcile(rows) == {STUDY: 3}
    assert {t.user_attrs["trial_uid"] for t in _study(out).trials} == set(rows["trial_uid"])
    assert len(list(out.glob("optuna.journal.damaged-*"))) == 1  # kept for inspection
    # A journal that cannot be read at all names itself and the fix.
    journal.unlink()
    journal.mkdir()
    with pytest.raises(FlipsearchError, match=r"optuna\.journal .*move it away and rerun with --resume"):
        StudyBook(space, Storage.open(str(out)), space.objectives, space.constraints, space.sampler, 0)


def test_resume_refuses_a_changed_search_space(finished_sweep, tmp_path, capsys):
    space_path, out = _copy(finished_sweep, tmp_path)
    journal = (out / "optuna.journal").read_bytes()
    parts = sorted(p.name for p in (out / "trials").iterdir())
    edited = tmp_path / "edited.yaml"
    edited.write_text(BASE_SPACE.replace("choice: [old, scratch]", "choice: [old]"))
    code, err = _main(["sweep", str(edited), "--out", str(out), "--resume", "--trials", "4", "--quiet"], capsys)
    assert code == 2
    _one_line(err, "methods.ce.init", "new --out")
    # The same objectives in another order (same directions, so Optuna would accept them).
    code, err = _main(["sweep", space_path, "--out", str(out), "--resume", "--trials", "4", "--quiet",
                       "--objective", "br:min", "--objective", "nfr:min"], capsys)
    assert code == 2
    _one_line(err, "objectives", '["nfr:min", "br:min"] -> ["br:min", "nfr:min"]')
    code, err = _main(["sweep", space_path, "--out", str(out), "--resume", "--trials", "4", "--quiet",
                       "--epochs", "3"], capsys)
    assert code == 2
    _one_line(err, "scenario settings", "epochs")
    assert (out / "optuna.journal").read_bytes() == journal  # nothing ran, nothing was told
    assert sorted(p.name for p in (out / "trials").iterdir()) == parts


# --------------------------------------------------------------------------- resources

TINY = """
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], training: {epochs: 2}}
search: {trials_per_scenario: 2, concurrency: 1}
methods: {ce: {}}
"""


@pytest.mark.timeout(120)  # it used to wait forever for a node that never comes
@pytest.mark.parametrize("flag, value, fragment", [("--gpus-per-trial", "1", "1 GPU ("),
                                                   ("--cpus-per-trial", "8", "8 CPUs (")])
def test_trial_resources_no_node_has_are_refused_at_once(ray_local, tiny_space, tmp_path, capsys, flag, value,
                                                         fragment):
    out = tmp_path / "out"
    t0 = time.time()
    code, err = _main(["sweep", tiny_space(TINY), "--out", str(out), "--quiet", flag, value], capsys)
    assert code == 2
    _one_line(err, fragment, f"{flag} {value}", "no Ray node has that", "cannot grow")
    assert time.time() - t0 < 60
    assert not out.exists()  # no lock, nothing written


@pytest.mark.timeout(120)
def test_joined_cluster_waits_for_a_fitting_node_then_times_out(ray_local, tiny_space, tmp_path, capsys):
    address = ray_local.get_runtime_context().gcs_address  # a cluster joined with --address may grow
    out = tmp_path / "out"
    code, err = _main(["sweep", tiny_space(TINY), "--out", str(out), "--address", address, "--gpus-per-trial", "1",
                       "--set", "search.resource_timeout=3"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith("[flipsearch] ") and "waiting up to 3s (search.resource_timeout)" in lines[0]
    assert lines[1].startswith("flipsearch: error: ") and "none joined within 3s" in lines[1]
    assert not out.exists()


# --------------------------------------------------------------------------- the output lock

@pytest.mark.timeout(300)
def test_two_sweeps_started_at_the_same_instant_exactly_one_gets_the_lock(tmp_path):
    import lock_race

    out = tmp_path / "out"
    out.mkdir()
    lock = out / "sweep.lock"
    dead = subprocess.Popen(["true"])
    dead.wait()
    ctx = multiprocessing.get_context("spawn")
    rounds = 20
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=lock_race.contend, args=(str(out), rounds, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        for r in range(rounds):
            if r % 2:  # odd rounds: a dead sweep's lock, which both contenders try to take over
                lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "dead"}))
            barrier.wait(timeout=120)  # go
            barrier.wait(timeout=120)  # both tried
            got = [results.get(timeout=60) for _ in procs]
            winners = [pid for _, pid, won in got if won]
            assert len(winners) == 1, f"round {r}: {got}"
            assert json.loads(lock.read_text())["pid"] == winners[0]
            barrier.wait(timeout=120)
            barrier.wait(timeout=120)  # the winner released
            assert not lock.exists(), f"round {r}"
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]


def test_leaving_never_removes_another_sweeps_lock(tmp_path):
    out = Storage.open(str(tmp_path / "out"))
    lock = OutputLock(out, resume=False).__enter__()
    # Meanwhile the lock file was replaced: someone removed it and another sweep took the directory.
    theirs = {"pid": 4242, "host": "another-host", "token": "theirs"}
    (tmp_path / "out" / "new").write_text(json.dumps(theirs))
    os.replace(tmp_path / "out" / "new", tmp_path / "out" / "sweep.lock")
    lock.__exit__(None, None, None)
    assert json.loads((tmp_path / "out" / "sweep.lock").read_text()) == theirs


# --------------------------------------------------------------------------- reference models

def test_reference_replaced_with_a_matching_checksum_is_quarantined_and_retrained(tmp_path):
    from fractions import Fraction

    import torch

    from flipsearch.references import ReferenceStore

    storage = Storage.open(str(tmp_path / "refs"))
    trained = []

    def build():
        trained.append(1)
        return {"state_dict": {"w": torch.full((2,), float(len(trained)))}}

    ReferenceStore(storage).get_or_build("m1-x", build)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Fraction(1, 3)}, evil)  # a pickle weights_only refuses
    data = evil.read_bytes()
    (tmp_path / "refs" / "m1-x.pt").write_bytes(data)
    (tmp_path / "refs" / "m1-x.sha256").write_text(hashlib.sha256(data).hexdigest())
    payload, hit = ReferenceStore(storage).get_or_build("m1-x", build)  # refused, set aside, retrained
    assert not hit and float(payload["state_dict"]["w"][0]) == 2.0
    assert (tmp_path / "refs" / "m1-x.pt.quarantined").read_bytes() == data
    payload, hit = ReferenceStore(storage).get_or_build("m1-x", build)  # the retrained one is trusted again
    assert hit and float(payload["state_dict"]["w"][0]) == 2.0 and len(trained) == 2
