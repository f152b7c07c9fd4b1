"""The in-memory dataset every part of flipsearch works on.

A dataset is held as tensors (uint8 images are normalised to float32 once, here), so the
training loop only ever indexes tensors: no per-sample Python, no DataLoader workers.
"""

from __future__ import annotations

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
    training pool (never the test set), once.
    """
    xtr, xte = _as_nchw(np.asarray(x_train), channels_last), _as_nchw(np.asarray(x_test), channels_last)
    xtr_t = torch.from_numpy(xtr).float().div_(255.0)
    xte_t = torch.from_numpy(xte).float().div_(255.0)
    mean = xtr_t.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr_t.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    ytr = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
    yte = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
    n_cls = int(num_classes if num_classes is not None else int(max(ytr.max(), yte.max())) + 1)
    return Dataset(name, (xtr_t - mean) / std, ytr, (xte_t - mean) / std, yte, n_cls,
                   tuple(class_names) or tuple(str(i) for i in range(n_cls)))


def _as_nchw(x: np.ndarray, channels_last: bool | None) -> np.ndarray:
    if x.ndim == 3:  # N, H, W (grey)
        return np.ascontiguousarray(x[:, None])
    if x.ndim != 4:
        raise ValueError(f"images must be 3-D or 4-D, got shape {x.shape}")
    if channels_last is None:  # guess: channels are the small axis
        channels_last = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if channels_last else x)

