"""What runs on a Ray worker for one sweep trial: `run_trial`, turned into one result row.

Any exception becomes a `failed` row with a one-line error (the sweep goes on); a NaN loss
is a `diverged` row. Datasets arrive once through the object store (`tune.with_parameters`);
the reference-model store is kept per worker process and sweep run, so a reused actor keeps
its cache. The device is the one Ray assigned: see `assigned_device`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import replace
from typing import Any

from ..references import ReferenceStore
from ..storage import Storage

REFS_DIR = "references"
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


def trial_config(config: dict[str, Any]):
    """The `TrialConfig` a sweep trial's Ray config describes."""
    from ..trial import TrialConfig

    opts = config["scenario_options"]
    explicit = opts.get("explicit")
    cfg = TrialConfig(
        dataset=config["dataset"], arrangement=config["arrangement"], method=config["method"],
        seed=config["seed"], model=config.get("model"), old_fraction=opts.get("old_fraction", 0.5),
        critical_classes=tuple(opts.get("critical_classes") or ()), critical_mask=opts.get("critical_mask"),
        data_root=opts.get("data_root"), download=bool(opts.get("download", False)),
        old_model=opts.get("old_model"), subset=float(opts.get("scale", 1.0)),
        explicit=tuple(explicit) if explicit else None)
    settings = dict(config["hparams"])
    settings.update({f"m1.{k}": v for k, v in config["m1_training"].items()})
    settings.update({f"update.{k}": v for k, v in config["update_training"].items()})
    return cfg.with_settings(settings)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def flip_trainable(config: dict[str, Any], datasets: dict | None = None, lock_actor: Any = None) -> None:
    from ray import tune

    from ..trial import run_trial

    row: dict[str, Any] = {k: config[k] for k in ("run_id", "study", "trial_number", "dataset", "arrangement",
                                                  "method", "seed")}
    row["model"] = config.get("model") or ""
    t0 = time.time()
    use_assigned_cpus()
    try:
        cfg = replace(trial_config(config), device=assigned_device())
        row["device"] = cfg.device
        result = run_trial(cfg, store=reference_store(config["out_uri"], lock_actor, config["run_id"]),
                           dataset=(datasets or {}).get((cfg.dataset, cfg.subset)))
        row.update(result.to_row())
    except Exception as e:  # noqa: BLE001 - every failure becomes a row, the sweep goes on
        row.update(status="failed", error=one_line(e))
        row.update({f"hp_{k}": v for k, v in config["hparams"].items()})
    row.update(run_id=config["run_id"], study=config["study"], trial_number=config["trial_number"],
               hostname=socket.gethostname(), pid=os.getpid(), node_id=_node_id(),
               gpu_ids=",".join(_gpu_ids()),
               started_at=t0, finished_at=time.time(), wall_seconds=time.time() - t0)
    tune.report({"row_json": json.dumps(row, default=_jsonable), "status_ok": row["status"] == "ok"})


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

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        return ""


def _jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)
