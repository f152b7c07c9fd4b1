"""What runs on a Ray worker for one sweep trial: `run_trial`, turned into one result row.

A trial's Ray config is only what differs between trials: its identity (study, trial
number, trial uid) and its `TrialConfig` as a dict. What every trial of a run shares (run
id, output URI, whether to report each epoch) and the datasets arrive once through
`tune.with_parameters`. With an early-stopping scheduler the trial reports its validation
metrics after every update epoch (`epoch`, `val_*`, `seconds`); its last report carries the
finished row (`row_json`). Any exception becomes a `failed` row with a one-line error (the
sweep goes on); a NaN loss is a `diverged` row. A finished trial's M2 is written to
OUT/models/ first when the run keeps models (`run["keep"]`, `kept_models.py`). The
reference-model store is kept per worker process and sweep run, so a reused actor keeps its
cache (on the CPU: see `references.DerivedCache`). The device is the one Ray assigned: see
`assigned_device`; a process with a fraction of a GPU is capped to it (`limit_gpu_memory`),
and the CUDA cache is emptied after every trial (`release_gpu_memory`).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

from .._json import jsonable
from ..references import ReferenceStore
from ..rundir import RunDir
from ..storage import Storage

REFS_DIR = RunDir.REFERENCES
_STORES: dict[tuple[str, str], ReferenceStore] = {}


def reference_store(out_uri: str, lock_actor: Any = None, run_id: str = "") -> ReferenceStore:
    """This process's store for a run. Keyed by run too: a worker process that outlives one
    sweep (same Ray job) must not keep the previous run's lock actor."""
    key = (out_uri, run_id)
    if key not in _STORES:
        for stale in [k for k in _STORES if k[0] == out_uri]:
            del _STORES[stale]
        storage = Storage.open(out_uri).sub(REFS_DIR)
        lock = None
        if not storage.is_local and lock_actor is not None:
            from .coordination import lease_lock

            lock = lambda key: lease_lock(lock_actor, key)  # noqa: E731
        _STORES[key] = ReferenceStore(storage, lock=lock)
    return _STORES[key]


def assigned_device() -> str:
    """The torch device of this trial, from Ray's assignment. A trial given GPUs (whole or a
    fraction) sees only those, as Ray sets CUDA_VISIBLE_DEVICES, so `cuda` is its own GPU. A
    trial given none runs on the CPU even on a GPU node, and so does one whose GPU torch cannot
    use (a logical `num_gpus` on a CPU machine, no driver): the CPU path never needs CUDA."""
    import torch

    if _gpu_ids() and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def assigned_gpu_share() -> float:
    """The GPUs Ray gave this worker (0.25 with `gpus_per_trial 0.25`; 0 outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return 0.0
        return float(ray.get_runtime_context().get_assigned_resources().get("GPU") or 0.0)
    except Exception:  # noqa: BLE001 - outside Ray
        return 0.0


def limit_gpu_memory(share: float, device: str) -> bool:
    """Cap this process's CUDA allocations at `share` of its GPU when it holds a fraction of
    one (`gpus_per_trial` < 1): a trial that outgrows its share then fails alone with an
    out-of-memory row instead of starving the trials beside it. Returns whether it capped."""
    import torch

    if not 0 < share < 1 or not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    torch.cuda.set_per_process_memory_fraction(share, torch.device(device))
    return True


def release_gpu_memory() -> bool:
    """After a trial: hand the caching allocator's free blocks back to the GPU, which a
    reused actor (`reuse_actors=True`) would otherwise hold into the next trial and beyond.
    Returns whether there was a CUDA context to release from."""
    import gc

    import torch

    if not torch.cuda.is_initialized():
        return False
    gc.collect()  # the trial's tensors die with the frames that held them
    torch.cuda.empty_cache()
    return True


def gpu_trial_device() -> str:
    """`assigned_device()`, with this process's memory capped to its GPU share."""
    device = assigned_device()
    limit_gpu_memory(assigned_gpu_share(), device)
    return device


def one_line(e: BaseException) -> str:
    """An exception as one line "Type: first line" (at most 500 characters), as a failed row records it."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def identity(config: dict[str, Any], run: dict[str, Any], pack_id: str | None = None,
             pack_size: int = 1) -> dict[str, Any]:
    """A trial's identity columns, from its Ray config and the run constants."""
    return {"run_id": run["run_id"], "study": config["study"], "trial_number": config["trial_number"],
            "trial_uid": config["trial_uid"], "ray_trial_id": config.get("ray_trial_id", ""),
            "pack_id": pack_id or config["trial_uid"], "pack_size": pack_size,
            "replicate_of": config.get("replicate_of"), "replicate": config.get("replicate")}


def dataset_key(cfg) -> tuple:
    """The key a loaded dataset is shared under: (dataset, scale, test_scale)."""
    return (cfg.dataset, cfg.scale, cfg.test_scale)


def flip_trainable(config: dict[str, Any], run: dict[str, Any], datasets: dict | None = None,
                   lock_actor: Any = None) -> None:
    """The Ray Tune trainable: run one trial (or one pack of trials) and report its row(s); every failure becomes
    a failed row, never a crash.

    Args:
        config: the searcher's suggestion (the trial's config, identity, or a pack's members).
        run: the run constants (run id, output URI, whether to report each epoch).
        datasets: the datasets loaded once on the driver, by `dataset_key`.
        lock_actor: the `LeaseLocks` actor for an object-store output, else None.
    """
    from ray import tune

    from ..config import TrialConfig
    from ..results import encode_row, failed_row
    from ..trial import VAL_PREFIX, run_trial

    if "pack" in config:
        return pack_trainable(config, run, datasets, lock_actor)
    t0 = time.time()
    use_assigned_cpus()
    ident = identity(config, run)
    cfg = None
    epochs = int(config["config"]["update_recipe"]["epochs"])

    def report_epoch(epoch: int, val: dict[str, float], seconds: float) -> bool:
        tune.report({"epoch": epoch, "seconds": seconds, **{VAL_PREFIX + k: v for k, v in val.items()}})
        return False  # a scheduler's STOP ends this process; nothing to decide here

    try:
        cfg = TrialConfig.from_dict(config["config"]).replace(device=gpu_trial_device())
        result = run_trial(cfg, store=reference_store(run["out_uri"], lock_actor, run["run_id"]),
                           dataset=(datasets or {}).get(dataset_key(cfg)),
                           epoch_report=report_epoch if run.get("report_epochs") else None)
        keep_model(run, ident["trial_uid"], result)
        row = encode_row(result, ident, _where(t0))
        epochs = result.epochs or epochs
        del result  # its models (M1, M2) go before the cache is emptied
    except Exception as e:  # noqa: BLE001 - every failure becomes a row, the sweep goes on
        row = failed_row(cfg, ident, one_line(e), where=_where(t0), fallback=_raw_cells(config["config"]))
    release_gpu_memory()
    final = {"epoch": epochs, "row_json": json.dumps(row, default=jsonable), "status_ok": row["status"] == "ok"}
    final.update({k: v for k, v in row.items() if k.startswith(VAL_PREFIX)})
    tune.report(final)


def pack_trainable(config: dict[str, Any], run: dict[str, Any], datasets: dict | None, lock_actor: Any) -> None:
    """A pack of configurations (`search.pack`): one `run_pack`, one row per member, all
    reported at once (`rows_json`). A failure fails every member of the pack. Under MO-ASHA
    each epoch reports every live member's validation values, and members the scheduler
    stops leave the pack as `stopped` rows."""
    from ray import tune

    from ..config import TrialConfig
    from ..pack_trial import run_pack
    from ..results import encode_row, failed_row

    t0 = time.time()
    use_assigned_cpus()
    members = config["pack"]
    idents = [identity(m, run, pack_id=config["ray_trial_id"], pack_size=len(members)) for m in members]
    cfgs = []
    try:
        device = gpu_trial_device()
        cfgs = [TrialConfig.from_dict(m["config"]).replace(device=device) for m in members]
        stop_members = None
        if run.get("report_epochs"):  # MO-ASHA ranks each member and may stop some (pack_stops.py)
            from .pack_stops import member_stopper

            stop_members = member_stopper(run["run_id"], config["ray_trial_id"], [m["trial_uid"] for m in members],
                                          tune.report)
        results = run_pack(cfgs, store=reference_store(run["out_uri"], lock_actor, run["run_id"]),
                           dataset=(datasets or {}).get(dataset_key(cfgs[0])), stop_members=stop_members)
        for r, i in zip(results, idents):
            keep_model(run, i["trial_uid"], r)
        rows = [encode_row(r, i, _where(t0)) for r, i in zip(results, idents)]
        del results
    except Exception as e:  # noqa: BLE001 - every failure becomes rows, the sweep goes on
        rows = [failed_row(cfgs[k] if k < len(cfgs) else None, i, one_line(e), where=_where(t0),
                           fallback=_raw_cells(members[k]["config"])) for k, i in enumerate(idents)]
    release_gpu_memory()
    epochs = max(int(r.get("epochs") or 0) for r in rows)
    tune.report({"epoch": epochs, "rows_json": json.dumps(rows, default=jsonable)})


def keep_model(run: dict[str, Any], trial_uid: str, result) -> None:
    """Write a finished trial's M2 to OUT/models/ unless the run keeps none (`search.keep`);
    the driver deletes it again once another trial rules it out. It is written before the
    row is reported, so a row's model is there when the row lands."""
    if run.get("keep", "none") != "none" and result.status == "ok" and result.model is not None:
        from ..kept_models import save_model

        save_model(run["out_uri"], trial_uid, result)


def _where(t0: float) -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "node_id": _node_id(),
            "gpu_ids": ",".join(_gpu_ids()), "started_at": t0, "finished_at": time.time(),
            "wall_seconds": time.time() - t0}


def _raw_cells(config: dict[str, Any]) -> dict[str, Any]:
    """The plain cells of a config that could not be built (method, seed, hyperparameters)."""
    from ..results import row_schema

    cells = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool)) and k not in ("device",)}
    cells.update({f"hp_{k}": v for k, v in (config.get("hparams") or {}).items()})
    declared = set(row_schema().names)
    return {k: v for k, v in cells.items() if k in declared}


def use_assigned_cpus() -> None:
    """One torch intra-op thread per CPU Ray gave this trial (at least one).

    Ray sets OMP_NUM_THREADS to a worker's CPUs only when the driver's environment does not
    set it; an inherited OMP_NUM_THREADS would give every concurrent trial that many threads
    whatever its CPUs. Outside Ray this does nothing. On the shared 2-core build machine,
    the smoke sweep with 2 concurrent trials of 2 threads each took 7.7x as long (median;
    3-10x) as with 1 thread each (bench/scaling.py --num-cpus 4 --settings 2:1 2:2)."""
    import torch

    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside Ray
        cpus = None
    if cpus:
        torch.set_num_threads(max(1, math.floor(cpus)))


def _gpu_ids() -> list[str]:
    """Ray's GPU ids for this worker ([] outside Ray or when it was given no GPU)."""
    try:
        import ray

        return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - outside Ray
        return []


def _node_id() -> str:
    try:
        import ray

        # guarded: outside Ray, asking for the runtime context would start a whole local Ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - outside Ray
        return ""
