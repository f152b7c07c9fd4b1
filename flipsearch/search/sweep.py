"""`flipsearch sweep`: Ray Tune schedules the trials, Optuna chooses them, Parquet keeps them.

Flow: validate the space (on `--resume`: the same space as the run's `sweep.json`) -> load
each dataset once and make every trial's own checks (`preflight_space`) -> start or join
Ray and check a trial's resources fit a node -> take the output lock -> open the studies
and reconcile them with the rows already written -> run the remaining trials ->
summarise. Bad input is refused before Ray starts and before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import FlipsearchError, UsageError
from ..kept_models import Keeper, kept_uids
from ..results import ResultsWriter, read_results
from ..rundir import RunDir, SweepRecord
from ..storage import Storage
from ._tuner import trial_resources, tune_run_config, tune_trainable
from .space import SearchSpace

LOCK = RunDir.LOCK
SCHEDULER_STATE = RunDir.SCHEDULER


@dataclass
class SweepOptions:
    """How to run a sweep (not what it searches: that is the `SearchSpace`, with every CLI
    override already merged into it by `load_space`)."""

    out: str
    resume: bool = False
    address: str | None = None
    num_cpus: int | None = None  # embedded Ray only
    quiet: bool = False
    verbose: bool = False  # show Ray's and Ray Tune's own output too


@dataclass
class SweepSummary:
    """What one `run_sweep` call did: trials run by status, replicate runs, reference models trained and found
    cached, seconds, and whether it was interrupted."""
    out: str
    run_id: str
    trials_run: int
    counts: dict
    references_trained: int
    reference_hits: int
    seconds: float
    interrupted: bool
    epochs_run: int = 0
    epochs_full: int = 0  # what the same trials would have run at full budget
    replicates_run: int = 0
    repeats: int = 0  # suggestions that repeated a trained configuration: told its outcome, not trained
    models_kept: int | None = None  # models in OUT/models/ at the end (None: search.keep none)

    def line(self) -> str:
        saved = (f"; {self.epochs_run}/{self.epochs_full} update epochs run"
                 if self.epochs_full and self.epochs_run < self.epochs_full else "")
        reps = f", {self.replicates_run} replicate runs" if self.replicates_run else ""
        reps += f", {self.repeats} repeated suggestions told without training" if self.repeats else ""
        saved += f"; {self.models_kept} models kept in models/" if self.models_kept is not None else ""
        return (f"sweep {self.run_id}: {self.trials_run} trials this run ({', '.join(f'{k} {v}' for k, v in self.counts.items())}){reps}; "
                f"reference models: {self.references_trained} trained, {self.reference_hits} cache hits{saved}; "
                f"{self.seconds:.1f}s; results in {self.out}")


class OutputLock:
    """One sweep per output directory. A lock left by a dead sweep is taken over only by
    `--resume`; a live one is always refused; leaving releases only this sweep's own lock.

    On a local or NFS path the lock is `flock` held on `OUT/sweep.lock` for the sweep's
    life: taking it is atomic (two sweeps started at the same instant: exactly one gets
    it), the kernel drops it when its holder dies however it dies, and the file's JSON says
    who holds it. A lock file whose flock nobody holds is a dead sweep's. An object store
    has neither flock nor a conditional write here: the lock is written with a random
    token and read back, and deleted on exit only while it still holds that token."""

    def __init__(self, out: Storage, resume: bool):
        self.out, self.resume = out, resume
        self.token = uuid.uuid4().hex
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "token": self.token}
        self._fd: int | None = None
        self._held = False

    def __enter__(self):
        if self.out.is_local:
            self._acquire_local()
        else:
            self._acquire_remote()
        self._held = True
        return self

    def __exit__(self, *exc):
        self.release()

    # ------------------------------------------------------------------ local: flock

    def _acquire_local(self) -> None:
        import fcntl

        self.out.makedirs()
        path = self.out.path(LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live sweep holds it
                held = _read_lock(fd)
                os.close(fd)
                raise self._busy(held) from None
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder released (unlinked) it meanwhile: take the new one
        held = _read_lock(fd)
        if held and not self.resume:
            os.close(fd)
            raise self._interrupted()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.mine).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    # ------------------------------------------------------------------ object store

    def _acquire_remote(self) -> None:
        if self.out.exists(LOCK):
            held = _read_json(self.out, LOCK)
            same_host = held.get("host") == socket.gethostname()
            if (same_host and _pid_alive(int(held.get("pid", -1)))) or held.get("host") not in (None, socket.gethostname()):
                raise self._busy(held)
            if not self.resume:
                raise self._interrupted()
        self.out.write_bytes(json.dumps(self.mine).encode(), LOCK)
        time.sleep(0.2)  # a sweep that wrote at the same moment has written by now
        if _read_json(self.out, LOCK).get("token") != self.token:
            self._held = False
            raise self._busy(_read_json(self.out, LOCK))

    # ------------------------------------------------------------------ leaving

    def release(self) -> None:
        """Remove the lock, only if it is still this sweep's (never another's)."""
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if _same_file(fd, self.out.path(LOCK)) and _read_lock(fd).get("token") == self.token:
                    os.unlink(self.out.path(LOCK))
            finally:
                os.close(fd)  # drops the flock
            return
        if _read_json(self.out, LOCK).get("token") == self.token:
            self.out.delete(LOCK)

    def _busy(self, held: dict) -> FlipsearchError:
        return FlipsearchError(
            f"another sweep (pid {held.get('pid')} on {held.get('host')}) is using {self.out.uri}; "
            f"wait for it, or remove {LOCK} there if that sweep is dead")

    def _interrupted(self) -> UsageError:
        return UsageError(f"{self.out.uri} holds an interrupted sweep; continue it with --resume "
                          "(or choose another --out)")


def _read_lock(fd: int) -> dict:
    try:
        data = os.pread(fd, 65536, 0)
        held = json.loads(data) if data.strip() else {}
    except (ValueError, OSError):
        return {"pid": "?", "host": "?"}
    return held if isinstance(held, dict) else {"pid": "?", "host": "?"}


def _read_json(out: Storage, name: str) -> dict:
    try:
        held = json.loads(out.read_bytes(name))
    except (ValueError, OSError):
        return {}
    return held if isinstance(held, dict) else {}


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped) is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def run_sweep(space: SearchSpace, opts: SweepOptions) -> SweepSummary:
    """Run (or with `opts.resume`, continue) the sweep of `space` into `opts.out`; see the module docstring
    for the flow. Bad input is refused before Ray starts and before anything is written."""
    from .. import signals
    from .studies import StudyBook

    t0 = time.time()
    out = Storage.open(opts.out)
    _check_out_dir(out)
    existing = read_results(out, required=False)
    if len(existing) and not opts.resume:
        raise UsageError(f"{out.uri} already holds {len(existing)} trial rows; continue with --resume "
                         "or choose another --out")
    _check_objectives(space.objectives, space.constraints, space)
    if opts.resume:
        check_same_space(out, space)
    # Everything that can fail on bad input happens before anything is written.
    datasets = _load_datasets(space)
    preflight_space(space, datasets)
    connect_ray(opts.address, opts.num_cpus, verbose=opts.verbose)
    check_resources(space, opts.address, quiet=opts.quiet)
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    signals.route_sigterm()  # after ray.init, which installs its own (an abort mid-step)

    try:
        with OutputLock(out, opts.resume):
            existing = read_results(out, required=False)  # what landed before we held the lock
            RunDir(out).write_record(_space_record(space))
            book = StudyBook(space, out, space.objectives, space.constraints, space.sampler, space.search_seed)
            done = book.reconcile(existing)
            for note in book.notes:  # a repaired or rebuilt journal: always said, even with --quiet
                print(f"[flipsearch] {note}", file=sys.stderr, flush=True)
            keeper = Keeper(out, space.keep, space.objectives, space.constraints, existing,
                            ResultsWriter(out).append, space.templates)
            keeper.prune()  # nothing runs yet: models of trials interrupted before their row are dropped
            remaining = {k: max(0, space.trials_per_scenario - done.get(k, 0)) for k in book.studies}
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            total = sum(remaining.values())
            searcher = _run_tune(space, opts, out, book, remaining, run_id, total, datasets, keeper.write) \
                if total else None
            counts = {k: v for k, v in searcher.counts.items() if v} if searcher else {}
            interrupted = bool(searcher and (any(searcher.remaining.values()) or searcher.counts["interrupted"] > 0))
            n_reps = 0
            if space.replicates and not interrupted:
                from .replicates import run_replicates

                n_reps, reps_left = run_replicates(space, opts, out, run_id, datasets, keeper.write)
                interrupted = reps_left > 0  # Ctrl-C or a lost run: --resume runs what has no row
            if not interrupted:
                keeper.prune()
            n_trained, n_hits = _reference_counts(out, run_id)
            full = (sum(v for k, v in counts.items() if k != "interrupted")
                    * max(t.update_recipe.epochs for t in space.templates.values()))
            return SweepSummary(out.uri, run_id, sum(v for k, v in counts.items() if k != "interrupted"), counts,
                                n_trained, n_hits, time.time() - t0, interrupted or signals.received(),
                                searcher.epochs_run if searcher else 0, full if space.scheduler != "fifo" else 0,
                                n_reps, searcher.repeats if searcher else 0,
                                len(kept_uids(out)) if space.keep != "none" else None)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous_sigterm)


def _check_out_dir(out: Storage) -> None:
    """`--out` must be a directory (or not exist yet): an existing file is refused."""
    if out.is_local and os.path.exists(out.root) and not os.path.isdir(out.root):
        raise UsageError(f"--out {out.uri} is an existing file, not a directory; choose a directory")
    if not out.is_local:
        import pyarrow.fs as pafs

        try:
            kind = out.fs.get_file_info(out.root).type
        except OSError:
            return
        if kind == pafs.FileType.File:
            raise UsageError(f"--out {out.uri} is an existing object, not a prefix; choose another --out")


# What a resumed sweep must share with the run that started it: a change in any of these
# makes its studies (their distributions, directions) or its rows (their scenarios and
# recipes) disagree with what is already there.
SPACE_IDENTITY = (("methods", "methods and their distributions"), ("seeds", "scenario seeds"),
                  ("scenarios", "scenarios"), ("objectives", "objectives"), ("constraints", "constraints"),
                  ("sampler", "sampler"), ("templates", "scenario settings"))


def check_same_space(out: Storage, space: SearchSpace) -> None:
    """On `--resume`, refuse (one line, before anything runs) a search space that differs
    from the one in the run's `sweep.json` in what its studies and rows depend on; more
    trials (`--trials`), concurrency, resources and replicates may change."""
    if not out.exists(RunDir.SWEEP):
        return
    try:
        before = json.loads(out.read_bytes(RunDir.SWEEP))
    except (ValueError, OSError):
        return
    now = json.loads(json.dumps(_space_record(space).to_json(), default=str))
    for key, what in SPACE_IDENTITY:
        if key in before and before[key] != now.get(key):
            raise UsageError(f"--resume: the {what} differ from those {out.uri} was started with "
                             f"({_first_difference(key, before[key], now.get(key))}); a sweep cannot change "
                             "its search space: resume with the same space files and options, or start a new --out")


def _first_difference(path: str, a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b:
                return f"{path}.{k} was {_short(a[k])}, now absent"
            if k not in a:
                return f"{path}.{k} is new: {_short(b[k])}"
            if a[k] != b[k]:
                return _first_difference(f"{path}.{k}", a[k], b[k])
    return f"{path}: {_short(a)} -> {_short(b)}"


def _short(v) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


def preflight_space(space: SearchSpace, datasets: dict) -> None:
    """The checks a trial makes before it trains, made once per scenario and method on the
    driver, so a sweep refuses bad input before Ray starts instead of failing every trial."""
    from ..methods import get_method
    from ..trial import preflight
    from .trainable import dataset_key

    for key in space.templates:
        for method in space.methods:
            first, *others = space.recipe_corners(key, method)  # the recipe settings it searches, at their edges
            preflight(first, datasets.get(dataset_key(first)))
            for cfg in others:
                get_method(method).check(cfg)


def _run_tune(space, opts, out, book, remaining, run_id, total, datasets, write_row):
    from ray import tune

    from .searcher import FlipSearcher

    scheduler = _scheduler(space, out)
    stopped = (lambda trial_id: trial_id in scheduler.stopped) if scheduler is not None else (lambda trial_id: False)
    pack_sizes = None
    if space.pack == "auto":
        from .auto_pack import auto_pack_sizes

        pack_sizes = auto_pack_sizes(space, out, list(remaining), datasets, quiet=opts.quiet)
    from .searcher import method_counts, trained_configs

    earlier = read_results(out, required=False)
    searcher = FlipSearcher(space, book, write_row, run_id, remaining, quiet=opts.quiet,
                            stopped_by_scheduler=stopped, pack_sizes=pack_sizes,
                            trained=trained_configs(earlier), method_done=method_counts(earlier))
    run = {"run_id": run_id, "out_uri": out.uri, "report_epochs": scheduler is not None, "keep": space.keep}
    board = None
    if scheduler is not None and space.pack != 1:  # the scheduler stops single members of packs
        from .pack_stops import start_board

        board, scheduler.publish_member_stops = start_board(run_id)
    tuner = tune.Tuner(
        tune_trainable(space, out, run, datasets),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=total,
                                    max_concurrent_trials=space.concurrency, reuse_actors=True),
        run_config=tune_run_config(out, f"tune-{run_id}", space.max_failures),
    )
    if not opts.quiet:
        print(f"[flipsearch] sweep {space.name}: {total} trials over {len(remaining)} scenario(s), "
              f"{space.concurrency} at a time, scheduler {space.scheduler}; results -> {out.uri}",
              file=sys.stderr, flush=True)
    try:
        tuner.fit()
    finally:
        if scheduler is not None:  # its rungs survive a resume
            RunDir(out).write_scheduler_state(scheduler.state_dict())
        if board is not None:
            import ray

            ray.kill(board)
    return searcher


def _reference_counts(out: Storage, run_id: str) -> tuple[int, int]:
    """Reference models (M1, φ_new, the CE update) this run trained and found cached, over
    its search trials and replicate runs."""
    rows = read_results(out, required=False)
    mine = rows[rows["run_id"] == run_id] if len(rows) and "run_id" in rows else rows
    # A pack's members share their references: count each pack once.
    packs = mine.drop_duplicates("pack_id") if len(mine) and "pack_id" in mine else mine
    ref_cols = [c for c in packs.columns if c.startswith("ref_")]
    trained = int(sum((packs[c] == "miss").sum() for c in ref_cols))
    hits = int(sum((packs[c] == "hit").sum() for c in ref_cols))
    return trained, hits


def _scheduler(space: SearchSpace, out: Storage):
    """None (FIFO: every trial runs its full budget) or the multi-objective ASHA scheduler
    (`search.scheduler`: mo-asha or stratified-asha) over the sweep's validation objectives,
    with the rungs of an earlier run restored."""
    if space.scheduler == "fifo":
        return None
    from .method_rungs import MethodMOASHAScheduler
    from .scheduler import MOASHAScheduler
    from .stratified import StratifiedMOASHAScheduler

    # a per-method budget ranks each method's trials against its own: equal compute per method
    kind = MethodMOASHAScheduler if space.budget == "per-method" else MOASHAScheduler
    max_t = max(t.update_recipe.epochs for t in space.templates.values())
    kw = dict(time_attr="epoch", max_t=max_t, grace_period=space.grace_period,
              reduction_factor=space.reduction_factor)
    if space.scheduler == StratifiedMOASHAScheduler.name:
        # its strata include the method, so a per-method budget's trials are ranked per method there too
        categorical = {m: [p for p, d in dists.items() if d.kind == "choice"] for m, dists in space.methods.items()}
        scheduler = StratifiedMOASHAScheduler(space.objectives, space.constraints, categorical=categorical,
                                              front=space.front_strata, **kw)
    else:
        scheduler = kind(space.objectives, space.constraints, **kw)
    state = RunDir(out).read_scheduler_state()
    if state is not None:
        scheduler.load_state_dict(state)
    return scheduler


def connect_ray(address: str | None, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join the cluster at `address` ('auto', 'ray://host:10001', 'host:6379'), or start an
    embedded Ray with this machine's CPUs/GPUs and no dashboard.

    The embedded Ray listens on 127.0.0.1 only (nothing on the machine's network
    interfaces), and its processes are stopped when this process dies, however it dies
    (`reaper.py`). Unless `verbose`, Ray's and Ray Tune's own output (log lines, Tune's
    tables and hints) is kept off the terminal, which then shows flipsearch's lines only."""
    if address:
        _check_reachable(address)
    quiet_ray(verbose)
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray prestarts one default worker per CPU for the first driver; none of them can run a
    # trial (Ray Tune gives its trial actors a runtime env of their own, so each starts a
    # worker of that env), so they would only cost a Python start each (~1 s of CPU).
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    kw = {"include_dashboard": False, "log_to_driver": verbose,
          "logging_level": logging.INFO if verbose else logging.ERROR}
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            from .reaper import descendants, start_reaper

            before = set(descendants([os.getpid()])) if os.path.isdir("/proc") else set()
            with _loopback_node():
                ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kw)
            if os.path.isdir("/proc"):
                start_reaper(sorted(set(descendants([os.getpid()])) - before - {os.getpid()}))
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise FlipsearchError(f"cannot reach a Ray cluster at {address!r}: {str(e).splitlines()[0]} "
                              "(start one with `ray start --head`, or omit --address for a local Ray)") from None


class _loopback_node:
    """While `ray.init` starts an embedded Ray, treat this node as local-only, so Ray keeps
    127.0.0.1 as its node address (it otherwise swaps a loopback `_node_ip_address` for the
    machine's network address) and its servers bind there. This is Ray's own switch for
    machines that never join a cluster (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read when
    Ray is imported, hence also its module constant); both are restored afterwards."""

    KEY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

    def __enter__(self):
        from ray._private import ray_constants

        self._env = os.environ.get(self.KEY)
        self._const = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
        os.environ[self.KEY] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        return self

    def __exit__(self, *exc):
        from ray._private import ray_constants

        if self._env is None:
            os.environ.pop(self.KEY, None)
        else:
            os.environ[self.KEY] = self._env
        if self._const is not None:
            ray_constants.ENABLE_RAY_CLUSTER = self._const


def quiet_ray(verbose: bool) -> None:
    """Keep Ray's and Ray Tune's output off the terminal (unless `verbose`): their loggers
    at ERROR, Tune's legacy reporter at verbosity 0 instead of the new engine (which
    prints its experiment box and TensorBoard hint at any verbosity), and no per-trial
    TensorBoard/CSV/JSON loggers (flipsearch's rows are the results). An environment
    variable the user set wins."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray", "ray.tune", "ray.train", "ray.air", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_resources(space: SearchSpace, address: str | None, quiet: bool = False) -> None:
    """Refuse a per-trial request no node can ever meet, before any trial waits for it.

    An embedded Ray cannot grow: if no node has the CPUs and GPUs one trial asks for, the
    sweep is refused at once (one line). A cluster joined with `--address` may autoscale:
    then the autoscaler is asked for such a node, the sweep says it waits, and fails with
    one line after `search.resource_timeout` seconds if none joined; when the autoscaler's
    own configuration shows no node type could ever fit, it is refused at once."""
    import ray

    need = {k.upper(): v for k, v in trial_resources(space).items() if v}
    if not need or _fitting_node(ray.nodes(), need):
        return
    have = _largest(ray.nodes())
    what = _describe(need, have, space)
    if not address:
        raise UsageError(f"{what}; this local Ray cannot grow: lower the request, or run on a cluster (--address)")
    possible = _autoscaler_can_fit(need)
    if possible is False:
        raise UsageError(f"{what}, and no node type of its autoscaler has that much; lower the request")
    timeout = space.resource_timeout
    if not quiet:
        print(f"[flipsearch] {what}; asking the autoscaler for one and waiting up to {timeout:g}s "
              "(search.resource_timeout)", file=sys.stderr, flush=True)
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[need])
    deadline = time.time() + timeout
    try:
        while not _fitting_node(ray.nodes(), need):
            if time.time() >= deadline:
                raise FlipsearchError(f"{what}, and none joined within {timeout:g}s (search.resource_timeout); "
                                      "check the cluster's node types and limits, or lower the request")
            time.sleep(min(5.0, max(0.1, deadline - time.time())))
    finally:
        request_resources(bundles=[])  # Tune's pending trials keep their own demand


def _fitting_node(nodes: list[dict], need: dict[str, float]) -> bool:
    return any(n.get("Alive", True) and all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items())
               for n in nodes)


def _largest(nodes: list[dict]) -> dict[str, float]:
    have: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for n in nodes:
        if n.get("Alive", True):
            for k in have:
                have[k] = max(have[k], float(n.get("Resources", {}).get(k, 0)))
    return have


def _describe(need: dict[str, float], have: dict[str, float], space: SearchSpace) -> str:
    flags = {"CPU": f"--cpus-per-trial {space.cpus_per_trial:g}", "GPU": f"--gpus-per-trial {space.gpus_per_trial:g}"}
    asked = " and ".join(f"{v:g} {k}{'s' if v != 1 else ''}" for k, v in need.items())
    return (f"a trial asks for {asked} ({', '.join(flags[k] for k in need)}) but no Ray node has that "
            f"(the largest has {have['CPU']:g} CPUs, {have['GPU']:g} GPUs)")


def _autoscaler_can_fit(need: dict[str, float]) -> bool | None:
    """Whether a node type of the cluster's autoscaler fits `need` (None: unknown)."""
    try:
        import ray

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older Ray, or no autoscaler state: unknown
        return None
    if config is None or not len(config.node_group_configs):
        return None
    return any(g.max_count != 0 and all(g.resources.get(k, 0) >= v for k, v in need.items())
               for g in config.node_group_configs)


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not minutes, when a cluster address does not answer (ray.init
    would retry for about two minutes)."""
    import socket as _socket

    if address == "auto":
        if not (os.environ.get("RAY_ADDRESS") or os.path.exists("/tmp/ray/ray_current_cluster")):
            raise FlipsearchError("--address auto: no running Ray cluster found on this machine "
                                  "(start one with `ray start --head`, or omit --address for a local Ray)")
        return
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        with _socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise FlipsearchError(f"cannot reach a Ray cluster at {address!r} ({getattr(e, 'strerror', None) or e}); "
                              "check the address, or omit --address for a local Ray") from None


def _load_datasets(space: SearchSpace) -> dict:
    """Each dataset loaded once on the driver (at its pool and test scales); Ray ships it to
    workers once."""
    from ..trial import load_data
    from .trainable import dataset_key

    return {dataset_key(t): load_data(t) for t in space.templates.values() if not t.explicit}


def _check_objectives(objectives, constraints, space) -> None:
    from ..metrics import is_known_metric

    for o in list(objectives) + list(constraints):
        if not is_known_metric(o.metric):
            raise UsageError(f"{space.path}: unknown metric {o.metric!r} in an objective or constraint; "
                             "see `flipsearch list` for metric names")
        if o.metric.startswith("critical_") and not any(t.critical_classes or t.critical_mask
                                                        for t in space.templates.values()):
            raise UsageError(f"{space.path}: {o.metric} needs scenario.critical_classes (or critical_mask)")


def _space_record(space: SearchSpace) -> SweepRecord:
    """The run's sweep.json: what it searched and how (`check_same_space` and the report read it)."""
    return SweepRecord(
        name=space.name, path=os.path.abspath(space.path),
        objectives=[f"{o.metric}:{o.direction}" for o in space.objectives],
        constraints=[str(c) for c in space.constraints],
        scenarios=[s.key for s in space.scenarios], seeds=space.seeds,
        methods={m: {p: [d.kind, list(d.args)] for p, d in ps.items()} for m, ps in space.methods.items()},
        scenario_options=space.scenario_options, sampler=space.sampler,
        trials_per_scenario=space.trials_per_scenario, scheduler=space.scheduler,
        reduction_factor=space.reduction_factor, grace_period=space.grace_period,
        replicates=space.replicates, pack=space.pack, budget=space.budget, keep=space.keep,
        cpus_per_trial=space.cpus_per_trial,
        templates={k: t.to_dict() for k, t in space.templates.items()})
