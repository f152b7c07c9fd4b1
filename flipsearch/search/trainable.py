"""What runs on a Ray worker for one sweep trial: `run_trial`, turned into one result row.

Any exception becomes a `failed` row with a one-line error (the sweep goes on); a NaN loss
is a `diverged` row. Datasets arrive once through the object store (`tune.with_parameters`);
the reference-model store is kept per worker process, so a reused actor keeps its cache.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

from ..references import ReferenceStore
from ..storage import Storage

_STORES: dict[str, ReferenceStore] = {}
REFS_DIR = "references"


def reference_store(out_uri: str, lock_actor: Any = None) -> ReferenceStore:
    if out_uri not in _STORES:
        storage = Storage.open(out_uri).sub(REFS_DIR)
        lock = None
        if not storage.is_local and lock_actor is not None:
            from .coordination import lease_lock

            lock = lambda key: lease_lock(lock_actor, key)  # noqa: E731
        _STORES[out_uri] = ReferenceStore(storage, lock=lock)
    return _STORES[out_uri]


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
    try:
        cfg = trial_config(config)
        result = run_trial(cfg, store=reference_store(config["out_uri"], lock_actor),
                           dataset=(datasets or {}).get((cfg.dataset, cfg.subset)))
        row.update(result.to_row())
    except Exception as e:  # noqa: BLE001 - every failure becomes a row, the sweep goes on
        row.update(status="failed", error=one_line(e))
        row.update({f"hp_{k}": v for k, v in config["hparams"].items()})
    row.update(run_id=config["run_id"], study=config["study"], trial_number=config["trial_number"],
               hostname=socket.gethostname(), pid=os.getpid(), node_id=_node_id(),
               started_at=t0, finished_at=time.time(), wall_seconds=time.time() - t0)
    tune.report({"row_json": json.dumps(row, default=_jsonable), "status_ok": row["status"] == "ok"})


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
