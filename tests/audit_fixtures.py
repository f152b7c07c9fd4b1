"""Two really trained tiny models on the embedded digits, for the flip-audit tests.

M1 and M2 differ in seed, data and epochs, so M2 both breaks and fixes samples. Trained
once per test process (cached); the checkpoints are state_dicts as flipsearch saves them.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from flipsearch.arrangements import make_scenario
from flipsearch.data import load_dataset
from flipsearch.models import build_model
from flipsearch.train import TrainRecipe, fit

RECIPE = TrainRecipe(epochs=2, batch_size=64, optimizer="adam", lr=0.01)


@dataclass(frozen=True)
class Pair:
    scenario: object
    old: torch.nn.Module
    new: torch.nn.Module
    old_path: str
    new_path: str


@functools.lru_cache(maxsize=None)
def trained_pair(arrangement: str = "exclusive-op") -> Pair:
    """M1 (seed 0, 2 epochs on D_train; in class-incremental only the old classes' outputs)
    and M2 (seed 1, 3 epochs on D_update, all classes), both model "small"."""
    ds = load_dataset("digits")
    sc = make_scenario(ds, arrangement, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's 2 cores are shared; one thread is fastest for this size
    try:
        old = build_model("small", sc.num_old_classes, ds.input_shape, seed=0)
        fit(old, sc.x_train, sc.y_train, RECIPE, seed=0)
        new = build_model("small", ds.num_classes, ds.input_shape, seed=1)
        fit(new, sc.x_update, sc.y_update, RECIPE.with_overrides(epochs=3), seed=1)
    finally:
        torch.set_num_threads(threads)
    folder = Path(tempfile.mkdtemp(prefix=f"flipsearch-audit-{arrangement}-"))
    old_path, new_path = folder / "m1.pt", folder / "m2.pt"
    torch.save(old.state_dict(), old_path)
    torch.save(new.state_dict(), new_path)
    return Pair(sc, old.eval(), new.eval(), str(old_path), str(new_path))
