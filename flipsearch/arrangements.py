"""Scenarios: how a dataset's training pool is split into D_train (trains M1) and D_update
(updates M1 into M2). The test set is never part of either.

| id                  | relation               | D_train : D_update |
|---------------------|------------------------|--------------------|
| `exclusive-op`      | disjoint, union = pool | 1 : 4              |
| `exclusive-dev`     | disjoint, union = pool | 4 : 1              |
| `inclusive-1-5`     | D_train ⊂ D_update     | 1 : 5 (D_update = pool) |
| `inclusive-4-5`     | D_train ⊂ D_update     | 4 : 5 (D_update = pool) |
| `class-incremental` | D_train ⊂ D_update     | M1 knows classes 0..C_old−1, C_old = round(f · C) |

With a pool of N samples, |D_train| = round(r · N) for r = 1/5 or 4/5 (halves up), and
every class gives the same share: class c contributes ⌊r · N_c⌋ or ⌊r · N_c⌋ + 1 samples,
the +1s going to the largest remainders so the total is exact. Which samples a class gives
is drawn from `numpy.random.RandomState(seed)`, never the global RNG, so a seed fixes the
split. In `class-incremental`, D_train = every pool sample of an old class and D_update =
the whole pool (all C classes): there is no random choice, the seed only names the scenario.

Validation split: before the arrangement splits the pool, a stratified validation split of
`val_fraction` × |D_update| samples (default 10 %, at least one) is drawn from the pool with
`RandomState(seed + 104729)` and set aside; the ratios above then hold exactly on the rest.
So no model — M1, φ_new, the CE update, any update — ever trains on it, and NeuRecover's
repair split (drawn from D_update) never contains it. It is stratified over all classes,
so in class-incremental it keeps the old/new class mix. The search (objectives, constraints, fronts, early stopping) reads validation
metrics only; the test set is only reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .data import Dataset, round_half_up, stratified_subset
from .errors import UsageError

ARRANGEMENTS: dict[str, str] = {
    "exclusive-op": "disjoint D_train and D_update, 1:4 (operation-oriented: little data for M1)",
    "exclusive-dev": "disjoint D_train and D_update, 4:1 (development-oriented: M1 saw most data)",
    "inclusive-1-5": "D_train inside D_update, 1:5 (D_update is the whole pool)",
    "inclusive-4-5": "D_train inside D_update, 4:5 (D_update is the whole pool)",
    "class-incremental": "M1 trained on the first old_fraction of the classes, M2 on all (MPT)",
}

# D_train's share of the pool, and whether D_update is the complement (disjoint) or the pool.
_RATIOS: dict[str, tuple[float, bool]] = {
    "exclusive-op": (1 / 5, True),
    "exclusive-dev": (4 / 5, True),
    "inclusive-1-5": (1 / 5, False),
    "inclusive-4-5": (4 / 5, False),
}
SPLITS = ("train", "update", "val", "test")
VAL_SEED_OFFSET = 104729
NOMINAL_RATIO = {"exclusive-op": "1:4", "exclusive-dev": "4:1", "inclusive-1-5": "1:5",
                 "inclusive-4-5": "4:5"}


@dataclass(frozen=True, eq=False)
class Scenario:
    """A dataset plus the index sets of D_train and D_update into its training pool.

    `train_idx`, `update_idx` and `val_idx` are sorted int64 tensors into
    `dataset.x_train`; `val_idx` is disjoint from the other two. M1 has `num_old_classes`
    outputs (the classes 0..num_old_classes−1); M2 has `num_classes`.
    """

    dataset: Dataset
    arrangement: str
    seed: int
    train_idx: torch.Tensor
    update_idx: torch.Tensor
    num_old_classes: int
    val_idx: torch.Tensor = torch.zeros(0, dtype=torch.int64)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def _take(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # The whole pool (sorted, so it is 0..N-1) is returned as is: no copy of the images.
        return t if idx.numel() == t.shape[0] else t[idx]

    @cached_property
    def x_train(self) -> torch.Tensor:
        return self._take(self.dataset.x_train, self.train_idx)

    @cached_property
    def y_train(self) -> torch.Tensor:
        return self._take(self.dataset.y_train, self.train_idx)

    @cached_property
    def x_update(self) -> torch.Tensor:
        return self._take(self.dataset.x_train, self.update_idx)

    @cached_property
    def y_update(self) -> torch.Tensor:
        return self._take(self.dataset.y_train, self.update_idx)

    @cached_property
    def x_val(self) -> torch.Tensor:
        return self.dataset.x_train[self.val_idx]

    @cached_property
    def y_val(self) -> torch.Tensor:
        return self.dataset.y_train[self.val_idx]

    @property
    def x_test(self) -> torch.Tensor:
        return self.dataset.x_test

    @property
    def y_test(self) -> torch.Tensor:
        return self.dataset.y_test

    @cached_property
    def old_class_test_mask(self) -> torch.Tensor:
        """Bool over the test set: the sample's class is one M1 knows (label < num_old_classes)."""
        return self.dataset.y_test < self.num_old_classes

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of a split by name: train, update, val or test."""
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def to(self, device: torch.device | str) -> "Scenario":
        """This scenario with its splits and the test set on `device`. Each split is cut from
        the pool where the pool lies and moved once; the pool itself stays there (a trial
        trains and evaluates on the splits only), so a GPU holds each split once, not the
        pool besides (about half the memory in the disjoint arrangements)."""
        data = dataclasses.replace(self.dataset, x_test=self.dataset.x_test.to(device),
                                   y_test=self.dataset.y_test.to(device))
        moved = Scenario(data, self.arrangement, self.seed, self.train_idx, self.update_idx,
                         self.num_old_classes, self.val_idx)
        for name in ("x_train", "y_train", "x_update", "y_update", "x_val", "y_val"):
            moved.__dict__[name] = getattr(self, name).to(device)  # the cached_property's slot
        return moved


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UsageError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def make_scenario(dataset: Dataset, arrangement: str, seed: int,
                  old_fraction: float = 0.5, val_fraction: float = 0.1) -> Scenario:
    """Split `dataset`'s training pool by `arrangement` (see the module doc), from `seed`,
    after setting the validation split aside."""
    seed = _check_seed(seed)
    y_all = dataset.y_train.detach().cpu().numpy().astype(np.int64)
    if arrangement not in ARRANGEMENTS:
        raise UsageError(f"unknown arrangement {arrangement!r}; known: {', '.join(ARRANGEMENTS)}")
    update_share = 1 - _RATIOS[arrangement][0] if _RATIOS.get(arrangement, (0, False))[1] else 1.0
    rest, val = hold_out_validation(y_all, val_fraction * update_share, seed)
    y = y_all[rest]
    n = y.size
    if arrangement in _RATIOS:
        share, disjoint = _RATIOS[arrangement]
        train = stratified_subset(y, round_half_up(share * n), np.random.RandomState(seed))
        if disjoint:
            keep = np.ones(n, dtype=bool)
            keep[train] = False
            update = np.flatnonzero(keep)
        else:
            update = np.arange(n)
        num_old = dataset.num_classes
    else:  # class-incremental
        if not 0.0 < float(old_fraction) < 1.0:
            raise UsageError(f"old_fraction must lie strictly between 0 and 1, got {old_fraction}")
        num_old = round_half_up(float(old_fraction) * dataset.num_classes)
        if not 1 <= num_old < dataset.num_classes:
            raise UsageError(f"old_fraction {old_fraction} of {dataset.num_classes} classes leaves "
                             f"{num_old} old classes; choose it so that 1..{dataset.num_classes - 1} "
                             "classes are old")
        train = np.flatnonzero(y < num_old)
        update = np.arange(n)
    as_idx = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    scenario = Scenario(dataset, arrangement, seed, as_idx(rest[train]), as_idx(rest[update]), int(num_old),
                        as_idx(val))
    check_nonempty(scenario)
    return scenario


def hold_out_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, val): a stratified `fraction` of the indices of `y` (at least one sample when
    the fraction is positive) set aside as the validation split, from `seed`."""
    if not 0.0 <= float(fraction) < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return np.arange(y.size), np.zeros(0, dtype=np.int64)
    val = stratified_subset(y, max(1, round_half_up(float(fraction) * y.size)),
                            np.random.RandomState(seed + VAL_SEED_OFFSET))
    keep = np.ones(y.size, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def check_nonempty(s: Scenario) -> None:
    """Refuse a scenario that cannot be trained and evaluated: fewer than two classes, an
    empty split, an old class M1 would never see (D_train holds no sample of it), or a new
    class M2 would never see (class-incremental: D_update holds no sample of it)."""
    if s.num_classes < 2:
        raise UsageError(f"{s.dataset.name} has {s.num_classes} class; an update needs at least two classes")
    for name, idx in (("D_train", s.train_idx), ("D_update", s.update_idx)):
        if idx.numel() == 0:
            raise UsageError(f"{s.arrangement}: {name} is empty ({s.dataset.x_train.shape[0]} pool samples); "
                             "use more data (a larger --scale)")
    if s.dataset.y_test.numel() == 0:
        raise UsageError("the test set is empty; use a larger --test-scale")
    y = s.dataset.y_train.cpu()
    seen = torch.unique(y[s.train_idx.cpu()]).numel()
    if seen < s.num_old_classes:
        raise UsageError(f"{s.arrangement}: D_train holds only {seen} of M1's {s.num_old_classes} classes; "
                         "use more data (a larger --scale)")
    new_classes = set(range(s.num_old_classes, s.num_classes))
    missing = sorted(new_classes - set(torch.unique(y[s.update_idx.cpu()]).tolist()))
    if missing:
        raise UsageError(f"{s.arrangement}: D_update holds no sample of the new class(es) "
                         f"{', '.join(map(str, missing[:5]))}; use more data (a larger --scale)")


def explicit_scenario(train_path: str, update_path: str, test_path: str, val_path: str | None = None,
                      val_fraction: float = 0.1) -> Scenario:
    """A scenario from three user files: D_train, D_update and the test set.

    Each path is an `.npz` with `x` and `y`, a Parquet file with `label` and `image` or
    feature columns, or an image-folder tree (`arrays:` / `imagefolder:` prefixes allowed).
    The dataset's pool is D_train followed by D_update, normalised with the pool's
    statistics; arrangement `"explicit"`, seed 0. When D_train covers only the first
    classes (named classes: those in D_train are listed first), M1 gets that many outputs.
    A `val_path` is the validation split; without one it is carved from D_update.
    """
    from .data.user import load_explicit

    dataset, n_train, n_update, n_val, num_old = load_explicit(train_path, update_path, test_path, val_path)
    train = np.arange(n_train, dtype=np.int64)
    update = np.arange(n_train, n_train + n_update, dtype=np.int64)
    if n_val:
        val = np.arange(n_train + n_update, n_train + n_update + n_val, dtype=np.int64)
    else:  # carved from D_update
        keep, val_local = hold_out_validation(dataset.y_train.numpy()[update], val_fraction, 0)
        update, val = update[keep], update[val_local]
    as_idx = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    scenario = Scenario(dataset, "explicit", 0, as_idx(train), as_idx(update), num_old, as_idx(val))
    check_nonempty(scenario)
    return scenario


def describe(scenario: Scenario) -> dict:
    """JSON-serialisable summary: split sizes, overlap, ratio and per-class counts."""
    c = scenario.num_classes
    counts = lambda y: torch.bincount(y.detach().cpu(), minlength=c).tolist()  # noqa: E731
    train_idx, update_idx = scenario.train_idx.cpu(), scenario.update_idx.cpu()
    n_train, n_update, n_val = train_idx.numel(), update_idx.numel(), scenario.val_idx.numel()
    overlap = int(torch.isin(train_idx, update_idx).sum())
    return {
        "dataset": scenario.dataset.name,
        "arrangement": scenario.arrangement,
        "seed": scenario.seed,
        "input_shape": list(scenario.dataset.input_shape),
        "num_classes": c,
        "num_old_classes": scenario.num_old_classes,
        "class_names": list(scenario.dataset.class_names),
        "sizes": {"pool": int(scenario.dataset.x_train.shape[0]), "train": n_train,
                  "update": n_update, "val": n_val, "test": int(scenario.y_test.numel()),
                  "train_and_update": overlap,
                  "test_old_classes": int(scenario.old_class_test_mask.sum())},
        "nominal_ratio": NOMINAL_RATIO.get(scenario.arrangement),
        "ratio": round(n_train / n_update, 6) if n_update else None,
        "per_class": {"train": counts(scenario.y_train), "update": counts(scenario.y_update),
                      "val": counts(scenario.y_val), "test": counts(scenario.y_test)},
    }
