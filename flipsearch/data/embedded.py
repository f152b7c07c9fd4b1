"""The embedded default dataset (scikit-learn's 8x8 digits) and the stratified splitter.

`load_digits` ships inside scikit-learn, so this dataset needs no file and no network.
It has no test split of its own; a fixed stratified 30 % is held out with seed 0,
independent of any scenario seed, so every run sees the same test set.

`stratified_subset` lives here because the digits hold-out is its first user; the
image-folder hold-out and every arrangement (`flipsearch.arrangements`) use it too.
"""

from __future__ import annotations

import numpy as np

from ._base import Dataset, from_uint8

DIGITS_TEST_FRACTION = 0.3
HOLDOUT_SEED = 0


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (Python's `round` rounds halves to even)."""
    return int(np.floor(x + 0.5))


def class_quotas(class_counts: np.ndarray, n: int) -> np.ndarray:
    """Split a total of `n` over classes in proportion to `class_counts`, exactly.

    Quota q_c = n · N_c / N is floored, and the remainder n − Σ⌊q_c⌋ goes one sample each to
    the classes with the largest fractional parts (ties: lower class id first), so the
    quotas sum to exactly `n` and each differs from its ideal share by less than 1.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total} samples")
    if total == 0:
        return np.zeros_like(counts)
    ideal = counts * (n / total)
    quotas = np.floor(ideal).astype(np.int64)
    short = n - int(quotas.sum())
    order = np.argsort(-(ideal - quotas), kind="stable")  # largest remainder first
    quotas[order[:short]] += 1
    return quotas


def stratified_subset(y: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """Pick exactly `n` indices of `y`, each class in proportion to its size; sorted int64.

    Vectorised: one random permutation, stably grouped by class, so each class's members
    appear in random order; a sample is taken when its rank within its class is below the
    class quota (`class_quotas`). Deterministic for a given `rng` state.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.bincount(y)
    quotas = class_quotas(counts, n)
    perm = rng.permutation(y.size)
    grouped = perm[np.argsort(y[perm], kind="stable")]  # by class, random within class
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(y.size) - np.repeat(starts, counts)
    chosen = grouped[rank < np.repeat(quotas, counts)]
    return np.sort(chosen).astype(np.int64)


def stratified_holdout(y: np.ndarray, test_fraction: float, seed: int = HOLDOUT_SEED
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): a stratified hold-out of round(test_fraction · N)."""
    y = np.asarray(y, dtype=np.int64)
    test = stratified_subset(y, round_half_up(test_fraction * y.size), np.random.RandomState(seed))
    keep = np.ones(y.size, dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep).astype(np.int64), test


def _read_digits_csv() -> tuple[np.ndarray, np.ndarray]:
    """(pixels [N, 64] in 0..16, labels [N]) of the file scikit-learn's `load_digits` reads,
    read here without importing scikit-learn: that import costs a fresh process (every Ray trial
    actor) about a second, and the embedded default is what most sweeps and tests run."""
    import gzip
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the embedded digits dataset ships with scikit-learn: pip install scikit-learn")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1], data[:, -1].astype(np.int64)


def load_digits_dataset() -> Dataset:
    """scikit-learn's digits: 1,797 grey 8x8 images, 10 classes, 70/30 stratified split.

    Pixel values 0..16 are mapped to 0..255 (round(v · 255 / 16)) before normalisation.
    """
    pixels, labels = _read_digits_csv()
    images = np.rint(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
    train, test = stratified_holdout(labels, DIGITS_TEST_FRACTION)
    return from_uint8("digits", images[train], labels[train], images[test], labels[test],
                      num_classes=10, class_names=tuple(str(d) for d in range(10)))
