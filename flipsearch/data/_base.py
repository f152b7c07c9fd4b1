"""The in-memory dataset every part of flipsearch works on.

A dataset is held as tensors (uint8 images are normalised to float32 once, here), so the
training loop only ever indexes tensors: no per-sample Python, no DataLoader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset split into a training pool and a test set.

    `x_*` are float32 `[N, C, H, W]`, normalised per channel with the training pool's
    statistics; `y_*` are int64 `[N]` class ids in `[0, num_classes)`.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.y_train), move(self.x_test),
                       move(self.y_test), self.num_classes, self.class_names)


def from_uint8(name: str, x_train, y_train, x_test, y_test, num_classes: int | None = None,
               class_names: tuple[str, ...] = (), channels_last: bool | None = None) -> Dataset:
    """Build a `Dataset` from uint8 image arrays (NHW, NHWC or NCHW) and integer labels.

    Pixels are scaled to [0, 1] and standardised per channel with the mean/std of the
    training pool (never the test set), once. The result is bitwise the same whatever
    the thread count (see `level_tables`).
    """
    xtr, xte = _as_nchw(_as_uint8(x_train), channels_last), _as_nchw(_as_uint8(x_test), channels_last)
    tables = level_tables(xtr)
    ytr = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    yte = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
    n_cls = int(num_classes if num_classes is not None else int(max(ytr.max(), yte.max())) + 1)
    return Dataset(name, _standardise(xtr, tables), ytr, _standardise(xte, tables), yte, n_cls,
                   tuple(class_names) or tuple(str(i) for i in range(n_cls)))


def level_tables(xtr: np.ndarray) -> np.ndarray:
    """`[C, 256]` float32: the standardised value ((v/255 − μ_c) / σ_c) of each uint8 level
    v in each channel c of the NCHW uint8 training pool `xtr`.

    μ_c and σ_c (sample std, ddof 1) come from the pool's exact level counts, summed in
    float64 over 256 levels in a fixed order, so they are the same bits whatever the
    thread count or process; a multi-threaded float32 reduction over the pool (what this
    replaced) gives last bits that follow the thread count, and so would the whole dataset.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    tables = np.empty((xtr.shape[1], 256), dtype=np.float32)
    for c in range(xtr.shape[1]):
        counts = np.bincount(xtr[:, c].reshape(-1), minlength=256).astype(np.float64)  # exact integers
        n = counts.sum()
        mean = float(counts @ levels) / n
        var = float(counts @ (levels - mean) ** 2) / max(n - 1.0, 1.0)
        tables[c] = (levels - mean) / max(math.sqrt(var), 1e-6)
    return tables


def _standardise(x: np.ndarray, tables: np.ndarray) -> torch.Tensor:
    """NCHW uint8 -> float32 through each channel's level table (a lookup: no arithmetic
    whose rounding could depend on how the work is split)."""
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(x.shape[1]):
        out[:, c] = tables[c][x[:, c]]
    return torch.from_numpy(out)


def _as_uint8(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.size and (not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255):
        raise ValueError(f"images must be uint8 (or integers in 0..255), got {x.dtype}")
    return x.astype(np.uint8)


def _as_nchw(x: np.ndarray, channels_last: bool | None) -> np.ndarray:
    if x.ndim == 3:  # N, H, W (grey)
        return np.ascontiguousarray(x[:, None])
    if x.ndim != 4:
        raise ValueError(f"images must be 3-D or 4-D, got shape {x.shape}")
    if channels_last is None:  # guess: channels are the small axis
        channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if channels_last else x)

