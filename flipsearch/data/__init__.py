"""Datasets by spec: the embedded digits, torchvision's sets, and a user's own files.

    load_dataset("digits")                         # embedded, no file, no network
    load_dataset("fashion-mnist")                  # data root, or the Debian package
    load_dataset("cifar10", data_root="/data", download=True)
    load_dataset("imagefolder:/data/pets?size=64")
    load_dataset("arrays:/data/features.npz")

Built-in datasets are cached in-process by (spec, root), so repeated trials in one worker
read their files once. Callers must treat the returned tensors as read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ._base import Dataset, from_uint8
from .embedded import (class_quotas, load_digits_dataset, round_half_up, stratified_holdout,
                       stratified_subset)
from .torchvision_sets import (TORCHVISION_SETS, default_data_root, fashion_mnist_debian_dir,
                               load_torchvision_dataset)
from .user import load_arrays, load_imagefolder

__all__ = ["Dataset", "from_uint8", "load_dataset", "subsample", "DATASETS", "clear_cache",
           "stratified_subset", "stratified_holdout", "class_quotas", "round_half_up"]

DATASETS: dict[str, str] = {
    "digits": "scikit-learn's 8x8 grey digits, 10 classes, 1,258 train / 539 test (embedded default)",
    "fashion-mnist": "Fashion-MNIST, 28x28 grey, 10 classes, 60,000 / 10,000 (torchvision or Debian package)",
    "cifar10": "CIFAR-10, 32x32 RGB, 10 classes, 50,000 / 10,000 (torchvision)",
    "cifar100": "CIFAR-100, 32x32 RGB, 100 classes, 50,000 / 10,000 (torchvision)",
    "imagefolder:PATH": "your images in PATH/<class>/* or PATH/{train,test}/<class>/* (?size=N, default 32)",
    "arrays:PATH": "your .npz (x_train, y_train, x_test, y_test) or Parquet (label, split, image|features)",
}

_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100", "sklearn-digits": "digits"}

_CACHE: dict[tuple, Dataset] = {}


def clear_cache() -> None:
    """Forget every cached built-in dataset."""
    _CACHE.clear()


def _resolve_root(data_root: str | os.PathLike | None) -> Path:
    if data_root is None:
        return default_data_root()
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise UsageError(f"data root {root} does not exist or is not a directory; create it or "
                         "fix --data-root")
    return root.resolve()


def load_dataset(spec: str, data_root: str | os.PathLike | None = None,
                 download: bool = False) -> Dataset:
    """Load a dataset by spec (see `DATASETS`); `data_root` only matters for torchvision's
    sets, but when given it must be an existing directory."""
    text = str(spec).strip()
    root = _resolve_root(data_root)
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() == "imagefolder":
        return load_imagefolder(rest)
    if sep and kind.lower() == "arrays":
        return load_arrays(rest)
    name = text.lower().replace("_", "-")
    name = _ALIASES.get(name, name)
    if name == "digits":
        key: tuple = ("digits",)
    elif name in TORCHVISION_SETS:
        debian = str(fashion_mnist_debian_dir()) if name == "fashion-mnist" else None
        key = (name, str(root), debian)
    else:
        raise UsageError(f"unknown dataset {text!r}; known: {', '.join(DATASETS)}")
    if key not in _CACHE:
        _CACHE[key] = (load_digits_dataset() if name == "digits"
                       else load_torchvision_dataset(name, root, download))
    return _CACHE[key]


def subsample(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """A stratified `fraction` of the training pool and of the test set (fixed seed), for
    running a paper-scale preset at laptop scale (`scale:` in a search space)."""
    if fraction >= 1.0:
        return dataset
    if not 0 < fraction < 1:
        raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
    import numpy as np
    import torch

    def pick(y):
        labels = y.cpu().numpy()
        idx = stratified_subset(labels, max(1, round_half_up(fraction * labels.size)), np.random.RandomState(seed))
        return torch.from_numpy(idx).to(y.device)

    tr, te = pick(dataset.y_train), pick(dataset.y_test)
    return Dataset(dataset.name, dataset.x_train[tr], dataset.y_train[tr], dataset.x_test[te],
                   dataset.y_test[te], dataset.num_classes, dataset.class_names)
