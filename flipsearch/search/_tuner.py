"""The Ray Tune wiring one sweep's phases share (the search and the replicates): the
trainable with its run constants and resources, and where Tune keeps its state."""

from __future__ import annotations

from ..rundir import RunDir
from ..storage import Storage
from .space import SearchSpace

__all__ = ["trial_resources", "tune_run_config", "tune_trainable"]


def tune_trainable(space: SearchSpace, out: Storage, run: dict, datasets: dict):
    """The Ray Tune trainable of a run: `flip_trainable` with the run constants and the
    datasets bound once (`tune.with_parameters`), and the run's resources per trial."""
    from ray import tune

    from .coordination import LeaseLocks
    from .trainable import flip_trainable

    locks = None if out.is_local else LeaseLocks.options(name=f"flipsearch-locks-{run['run_id']}").remote()
    return tune.with_resources(tune.with_parameters(flip_trainable, run=run, datasets=datasets, lock_actor=locks),
                               trial_resources(space))


def trial_resources(space: SearchSpace) -> dict[str, float]:
    """What Ray reserves for one trial."""
    return {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial}


def tune_run_config(out: Storage, name: str, max_failures: int):
    """Tune's experiment state lives in the output too. An object store is handed over as the
    filesystem object itself, so endpoint options in the URI (`?endpoint_override=…`) reach it."""
    from ray import tune

    storage = {"storage_path": out.path(RunDir.RAY)}
    if not out.is_local:
        storage["storage_filesystem"] = out.fs
    return tune.RunConfig(name=name, **storage, verbose=0, failure_config=tune.FailureConfig(max_failures=max_failures))
