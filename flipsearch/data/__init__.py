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
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..train import TrainRecipe
from ._base import Dataset, from_uint8
from .mini import load_fashion_mnist_mini
from .embedded import (class_quotas, load_digits_dataset, round_half_up, stratified_holdout,
                       stratified_subset)
from .torchvision_sets import (TORCHVISION_SETS, default_data_root, fashion_mnist_debian_dir,
                               load_torchvision_dataset)
from .user import load_arrays, load_imagefolder

__all__ = ["Dataset", "from_uint8", "load_dataset", "subsample", "DATASETS", "clear_cache",
           "stratified_subset", "stratified_holdout", "class_quotas", "round_half_up",
           "canonical_dataset", "dataset_defaults", "DatasetDefaults"]

DATASETS: dict[str, str] = {
    "digits": "scikit-learn's 8x8 grey digits, 10 classes, 1,258 train / 539 test (embedded default)",
    "fashion-mnist-mini": "a stratified 9,000 of the real Fashion-MNIST (Zalando Research, MIT licence), 28x28 grey, 10 classes, 6,000 / 3,000 (embedded)",
    "fashion-mnist": "Fashion-MNIST, 28x28 grey, 10 classes, 60,000 / 10,000 (torchvision or Debian package)",
    "cifar10": "CIFAR-10, 32x32 RGB, 10 classes, 50,000 / 10,000 (torchvision)",
    "cifar100": "CIFAR-100, 32x32 RGB, 100 classes, 50,000 / 10,000 (torchvision)",
    "imagefolder:PATH": "your images in PATH/<class>/* or PATH/{train,test}/<class>/* (?size=N, default 32)",
    "arrays:PATH": "your .npz (x_train, y_train, x_test, y_test) or Parquet (label, split, image|features)",
}

_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100", "sklearn-digits": "digits"}


@dataclass(frozen=True)
class DatasetDefaults:
    """What a trial on a built-in dataset uses unless told otherwise."""

    model: str
    recipe: TrainRecipe


# Paper 1: 8-layer CNN, 5 epochs, batch 128; MPT: ResNet-18, SGD 0.1 cosine, 100 epochs, crop+flip.
_DEFAULTS: dict[str, DatasetDefaults] = {
    "digits": DatasetDefaults("small", TrainRecipe(epochs=10, batch_size=32, lr=0.05)),
    "fashion-mnist-mini": DatasetDefaults("compact", TrainRecipe(epochs=3, batch_size=64, lr=0.05, grad_clip=2.0)),
    "fashion-mnist": DatasetDefaults("cnn8", TrainRecipe(epochs=5, batch_size=128, lr=0.05)),
    "cifar10": DatasetDefaults("cnn8", TrainRecipe(epochs=5, batch_size=128, lr=0.05)),
    "cifar100": DatasetDefaults("resnet18", TrainRecipe(epochs=100, batch_size=128, lr=0.1, schedule="cosine",
                                                        augment=True)),
}
_GENERIC = DatasetDefaults("cnn8", TrainRecipe(epochs=5, batch_size=64, lr=0.05))


def canonical_dataset(spec: str) -> str:
    """The registry name of a dataset spec (aliases and case folded); user data specs
    (`imagefolder:`, `arrays:`) are returned as given. Unknown names are a `UsageError`."""
    text = str(spec).strip()
    kind, sep, _ = text.partition(":")
    if sep and kind.lower() in ("imagefolder", "arrays"):
        return text
    name = text.lower().replace("_", "-")
    name = _ALIASES.get(name, name)
    if name not in _DEFAULTS:
        raise UsageError(f"unknown dataset {text!r}; known: {', '.join(DATASETS)}")
    return name


def dataset_defaults(spec: str) -> DatasetDefaults:
    """Default model and training recipe for a dataset spec (a generic pair for user data)."""
    return _DEFAULTS.get(canonical_dataset(spec), _GENERIC)

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
    name = canonical_dataset(text)
    if name in ("digits", "fashion-mnist-mini"):
        key: tuple = (name,)
    elif name in TORCHVISION_SETS:
        debian = str(fashion_mnist_debian_dir()) if name == "fashion-mnist" else None
        key = (name, str(root), debian)
    else:
        raise UsageError(f"unknown dataset {text!r}; known: {', '.join(DATASETS)}")
    if key not in _CACHE:
        _CACHE[key] = (load_digits_dataset() if name == "digits"
                       else load_fashion_mnist_mini() if name == "fashion-mnist-mini"
                       else load_torchvision_dataset(name, root, download))
    return _CACHE[key]


def subsample(dataset: Dataset, fraction: float, seed: int = 0, test_fraction: float | None = None) -> Dataset:
    """A stratified `fraction` of the training pool and `test_fraction` (default: the same)
    of the test set, with a fixed seed: a paper-scale preset at laptop scale (`scale:` and
    `test_scale:` in a scenario). The two are separate so that a small pool can still be
    evaluated on the full test set, as published settings are."""
    test_fraction = fraction if test_fraction is None else test_fraction
    if fraction >= 1.0 and test_fraction >= 1.0:
        return dataset
    for f in (fraction, test_fraction):
        if not 0 < f <= 1:
            raise UsageError(f"scale fractions must be in (0, 1], got {f}")
    import numpy as np
    import torch

    def pick(y, share):
        if share >= 1.0:
            return None
        labels = y.cpu().numpy()
        idx = stratified_subset(labels, max(1, round_half_up(share * labels.size)), np.random.RandomState(seed))
        return torch.from_numpy(idx).to(y.device)

    tr, te = pick(dataset.y_train, fraction), pick(dataset.y_test, test_fraction)
    take = lambda t, i: t if i is None else t[i]  # noqa: E731
    return Dataset(dataset.name, take(dataset.x_train, tr), take(dataset.y_train, tr), take(dataset.x_test, te),
                   take(dataset.y_test, te), dataset.num_classes, dataset.class_names)
