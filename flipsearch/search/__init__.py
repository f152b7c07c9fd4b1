"""The sweep: search-space files, Optuna studies, the Ray Tune searcher, scheduler and trainable.

Public names: `load_space` / `SearchSpace` (what a sweep searches), `run_sweep` with
`SweepOptions` -> `SweepSummary` (the driver), `FlipSearcher` (the Ray Tune searcher),
`MOASHAScheduler` and its Ray-free core `ParetoRungs`, `StratifiedMOASHAScheduler` and
`StratifiedRungs` (stratified-asha), `StudyBook` (the Optuna studies).
Importing this package imports none of them (Ray and Optuna load when a name is first used).
"""

from __future__ import annotations

import importlib

__all__ = ["FlipSearcher", "MOASHAScheduler", "ParetoRungs", "SearchSpace", "StratifiedMOASHAScheduler",
           "StratifiedRungs", "StudyBook", "SweepOptions", "SweepSummary", "load_space", "run_sweep"]

_HOME = {"FlipSearcher": "searcher", "MOASHAScheduler": "scheduler", "ParetoRungs": "scheduler",
         "SearchSpace": "space", "StratifiedMOASHAScheduler": "stratified", "StratifiedRungs": "stratified",
         "StudyBook": "studies", "SweepOptions": "sweep", "SweepSummary": "sweep",
         "load_space": "space", "run_sweep": "sweep"}


def __getattr__(name: str):
    """The public names, imported from their modules on first use."""
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
