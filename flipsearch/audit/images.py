"""Split tensors back to pixels, and small PNG thumbnails of them.

A `Dataset` holds images standardised per channel with its training pool's mean and std
(`data/_base.py: from_uint8`) and keeps neither. The standardisation is affine per channel,
so mapping the pool's per-channel minimum to 0 and maximum to 255 inverts it exactly when
the pool has a black and a white pixel in every channel (the digits, MNIST-like sets,
CIFAR); otherwise the thumbnail is the same image contrast-stretched to full range.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

THUMB_PX = 64  # target edge of a thumbnail, in image pixels before CSS


def pixel_range(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) of normalised images `x` [N, C, H, W]: the values that were
    pixel 0 and 255. Pass the training pool (`dataset.x_train`) for the exact inverse."""
    t = torch.as_tensor(x)
    lo = t.amin(dim=(0, 2, 3)).float().cpu().numpy()
    hi = t.amax(dim=(0, 2, 3)).float().cpu().numpy()
    return lo, hi


def to_pixels(x: Any, value_range: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """uint8 [N, H, W, C] pixels of images `x` [N, C, H, W].

    uint8 input is taken as pixels already; float input is normalised and mapped back with
    `value_range` = per-channel (min, max) (default: `pixel_range(x)`)."""
    t = torch.as_tensor(x).detach().cpu()
    if t.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.permute(0, 2, 3, 1).contiguous().numpy()
    lo, hi = value_range if value_range is not None else pixel_range(t)
    lo_t = torch.as_tensor(np.asarray(lo, dtype=np.float32)).view(1, -1, 1, 1)
    span = (torch.as_tensor(np.asarray(hi, dtype=np.float32)).view(1, -1, 1, 1) - lo_t).clamp_min(1e-12)
    px = ((t.float() - lo_t) / span * 255.0).round().clamp(0, 255).to(torch.uint8)
    return px.permute(0, 2, 3, 1).contiguous().numpy()


def thumbnail_png(pixels: np.ndarray, target: int = THUMB_PX) -> bytes:
    """PNG bytes of one image [H, W, C] (C = 1 grey, 3 RGB; other counts: the mean as grey),
    upscaled by a whole factor with nearest neighbour so its longer edge is about `target`."""
    from PIL import Image

    px = np.asarray(pixels)
    if px.ndim == 2:
        px = px[:, :, None]
    if px.shape[2] not in (1, 3):
        px = px.mean(axis=2, keepdims=True).round().astype(np.uint8)
    h, w = px.shape[:2]
    factor = max(1, round(target / max(h, w)))
    img = Image.fromarray(np.ascontiguousarray(px[:, :, 0] if px.shape[2] == 1 else px))  # L or RGB
    if factor > 1:
        img = img.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
