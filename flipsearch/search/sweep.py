"""`flipsearch sweep`: Ray Tune schedules the trials, Optuna chooses them, Parquet keeps them.

Flow: validate the space -> take the output lock -> open the studies and reconcile them
with the rows already written (resume) -> start or join Ray -> load each dataset once into
the object store -> run the remaining trials -> summarise. No early-stopping scheduler is
used: a truncated trial reported as complete would land on a multi-objective front.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass

from ..errors import FlipsearchError, UsageError
from ..results import ResultsWriter, read_results
from ..storage import Storage
from .space import SearchSpace

LOCK = "sweep.lock"
SCHEDULER_STATE = "scheduler.json"


@dataclass
class SweepOptions:
    """How to run a sweep (not what it searches: that is the `SearchSpace`, with every CLI
    override already merged into it by `load_space`)."""

    out: str
    resume: bool = False
    address: str | None = None
    num_cpus: int | None = None  # embedded Ray only
    quiet: bool = False


@dataclass
class SweepSummary:
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

    def line(self) -> str:
        saved = (f"; {self.epochs_run}/{self.epochs_full} update epochs run"
                 if self.epochs_full and self.epochs_run < self.epochs_full else "")
        reps = f", {self.replicates_run} replicate runs" if self.replicates_run else ""
        return (f"sweep {self.run_id}: {self.trials_run} trials this run ({', '.join(f'{k} {v}' for k, v in self.counts.items())}){reps}; "
                f"reference models: {self.references_trained} trained, {self.reference_hits} cache hits{saved}; "
                f"{self.seconds:.1f}s; results in {self.out}")


class OutputLock:
    """One sweep per output directory. A lock left by a dead sweep on this host is taken
    over only by `--resume`; a live one is always refused."""

    def __init__(self, out: Storage, resume: bool):
        self.out, self.resume = out, resume
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}

    def __enter__(self):
        if self.out.exists(LOCK):
            try:
                held = json.loads(self.out.read_bytes(LOCK))
            except (ValueError, OSError):
                held = {}
            alive = held.get("host") == socket.gethostname() and _pid_alive(int(held.get("pid", -1)))
            if alive or held.get("host") not in (None, socket.gethostname()):
                raise FlipsearchError(
                    f"another sweep (pid {held.get('pid')} on {held.get('host')}) is using {self.out.uri}; "
                    f"wait for it, or remove {LOCK} there if that sweep is dead")
            if not self.resume:
                raise UsageError(f"{self.out.uri} holds an interrupted sweep; continue it with --resume "
                                 "(or choose another --out)")
        self.out.write_bytes(json.dumps(self.mine).encode(), LOCK)
        return self

    def __exit__(self, *exc):
        self.out.delete(LOCK)


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
    from .studies import StudyBook

    t0 = time.time()
    out = Storage.open(opts.out)
    existing = read_results(out, required=False)
    if len(existing) and not opts.resume:
        raise UsageError(f"{out.uri} already holds {len(existing)} trial rows; continue with --resume "
                         "or choose another --out")
    _check_objectives(space.objectives, space.constraints, space)
    # Everything that can fail on bad input happens before anything is written.
    datasets = _load_datasets(space)
    preflight_space(space, datasets)
    connect_ray(opts.address, opts.num_cpus)

    with OutputLock(out, opts.resume):
        out.write_bytes(json.dumps(_space_record(space), indent=2).encode(), "sweep.json")
        book = StudyBook(space, out, space.objectives, space.constraints, space.sampler, space.search_seed)
        done = book.reconcile(existing)
        remaining = {k: max(0, space.trials_per_scenario - done.get(k, 0)) for k in book.studies}
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        total = sum(remaining.values())
        searcher, n_trained, n_hits = None, 0, 0
        if total:
            searcher, n_trained, n_hits = _run_tune(space, opts, out, book, remaining, run_id, total, datasets)
        counts = {k: v for k, v in searcher.counts.items() if v} if searcher else {}
        interrupted = bool(searcher and (any(searcher.remaining.values()) or searcher.counts["interrupted"] > 0))
        n_reps = 0
        if space.replicates and not interrupted:
            from .replicates import run_replicates

            n_reps = run_replicates(space, opts, out, run_id, datasets)
        full = (sum(v for k, v in counts.items() if k != "interrupted")
                * max(t.update_recipe.epochs for t in space.templates.values()))
        return SweepSummary(out.uri, run_id, sum(v for k, v in counts.items() if k != "interrupted"), counts,
                            n_trained, n_hits, time.time() - t0, interrupted,
                            searcher.epochs_run if searcher else 0, full if space.scheduler != "fifo" else 0, n_reps)


def preflight_space(space: SearchSpace, datasets: dict) -> None:
    """The checks a trial makes before it trains, made once per scenario and method on the
    driver, so a sweep refuses bad input before Ray starts instead of failing every trial."""
    from ..trial import preflight
    from .trainable import dataset_key

    for tmpl in space.templates.values():
        for method in space.methods:
            cfg = tmpl.replace(method=method)
            preflight(cfg, datasets.get(dataset_key(cfg)))


def tune_trainable(space: SearchSpace, out: Storage, run: dict, datasets: dict):
    """The Ray Tune trainable of a run: `flip_trainable` with the run constants and the
    datasets bound once (`tune.with_parameters`), and the run's resources per trial."""
    from ray import tune

    from .coordination import LeaseLocks
    from .trainable import flip_trainable

    locks = None if out.is_local else LeaseLocks.options(name=f"flipsearch-locks-{run['run_id']}").remote()
    return tune.with_resources(tune.with_parameters(flip_trainable, run=run, datasets=datasets, lock_actor=locks),
                               {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})


def tune_run_config(out: Storage, name: str, max_failures: int):
    """Tune's experiment state lives in the output too. An object store is handed over as the
    filesystem object itself, so endpoint options in the URI (`?endpoint_override=…`) reach it."""
    from ray import tune

    storage = {"storage_path": out.path("ray")}
    if not out.is_local:
        storage["storage_filesystem"] = out.fs
    return tune.RunConfig(name=name, **storage, verbose=0, failure_config=tune.FailureConfig(max_failures=max_failures))


def _run_tune(space, opts, out, book, remaining, run_id, total, datasets):
    from ray import tune

    from .searcher import FlipSearcher

    writer = ResultsWriter(out)
    scheduler = _scheduler(space, out)
    stopped = (lambda trial_id: trial_id in scheduler.stopped) if scheduler is not None else (lambda trial_id: False)
    searcher = FlipSearcher(space, book, writer.append, run_id, remaining, quiet=opts.quiet,
                            stopped_by_scheduler=stopped)
    run = {"run_id": run_id, "out_uri": out.uri, "report_epochs": scheduler is not None}
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
            out.write_bytes(json.dumps(scheduler.state_dict()).encode(), SCHEDULER_STATE)
    rows = read_results(out, required=False)
    mine = rows[rows["run_id"] == run_id] if len(rows) and "run_id" in rows else rows
    # A pack's members share their references: count each pack once.
    packs = mine.drop_duplicates("pack_id") if len(mine) and "pack_id" in mine else mine
    ref_cols = [c for c in packs.columns if c.startswith("ref_")]
    trained = int(sum((packs[c] == "miss").sum() for c in ref_cols))
    hits = int(sum((packs[c] == "hit").sum() for c in ref_cols))
    return searcher, trained, hits


def _scheduler(space: SearchSpace, out: Storage):
    """None (FIFO: every trial runs its full budget) or the multi-objective ASHA scheduler
    over the sweep's validation objectives, with the rungs of an earlier run restored."""
    if space.scheduler == "fifo":
        return None
    from .scheduler import MOASHAScheduler

    max_t = max(t.update_recipe.epochs for t in space.templates.values())
    scheduler = MOASHAScheduler(space.objectives, space.constraints, time_attr="epoch", max_t=max_t,
                                grace_period=space.grace_period, reduction_factor=space.reduction_factor)
    if out.exists(SCHEDULER_STATE):
        scheduler.load_state_dict(json.loads(out.read_bytes(SCHEDULER_STATE)))
    return scheduler


def connect_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` ('auto', 'ray://host:10001', 'host:6379'), or start an
    embedded Ray with this machine's CPUs/GPUs and no dashboard."""
    import ray

    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise FlipsearchError(f"cannot reach a Ray cluster at {address!r}: {str(e).splitlines()[0]} "
                              "(start one with `ray start --head`, or omit --address for a local Ray)") from None


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


def _space_record(space: SearchSpace) -> dict:
    return {"name": space.name, "path": os.path.abspath(space.path),
            "objectives": [f"{o.metric}:{o.direction}" for o in space.objectives],
            "constraints": [str(c) for c in space.constraints],
            "scenarios": [s.key for s in space.scenarios], "seeds": space.seeds,
            "methods": {m: {p: [d.kind, list(d.args)] for p, d in ps.items()} for m, ps in space.methods.items()},
            "scenario_options": space.scenario_options, "sampler": space.sampler,
            "trials_per_scenario": space.trials_per_scenario, "scheduler": space.scheduler,
            "reduction_factor": space.reduction_factor, "grace_period": space.grace_period,
            "replicates": space.replicates, "pack": space.pack,
            "templates": {k: t.to_dict() for k, t in space.templates.items()}}
