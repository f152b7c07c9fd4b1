"""The numerics policy on GPUs: exact, repeatable float32 unless a user opts out.

The project's claims ("a pack member equals its solo run", "the same seed gives the same
row", exact re-runs from a report) hold on the CPU by construction. On CUDA they need:

- TF32 off (cuDNN convolutions use it by default, cuBLAS matmuls may): TF32 rounds inputs
  to 10 mantissa bits, so a grouped convolution (a pack) and a plain one (its solo run),
  which cuDNN serves with different algorithms, would differ by ~1e-3 instead of ~1e-6.
  `FLIPSEARCH_TF32=1` turns it on (faster on Ampere and later; packs and solo runs then
  agree only to TF32's tolerance). Determinism below stays on either way.
- deterministic kernels where they exist (`torch.use_deterministic_algorithms`, warn only:
  an op without one warns instead of failing a trial; cuDNN benchmarking off, its
  deterministic algorithms on; cuBLAS's fixed workspace). `index_add_` on CUDA, which
  NeuRecover's batched evaluation uses with repeated rows, then takes its deterministic path.

`apply(device)` sets this for a process before it trains on `device` (a trial, a pack, the
`pack: auto` probe); on the CPU it changes nothing. `tag(device)` names the numerics a
reference model was trained with, so a reference key (`references.ReferenceBuilder`) never
hands a model trained under one policy or device to a trial under another.
"""

from __future__ import annotations

import os

import torch

TF32_ENV = "FLIPSEARCH_TF32"


def tf32_allowed() -> bool:
    """Whether the user opted into TF32 (`FLIPSEARCH_TF32=1`)."""
    return os.environ.get(TF32_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def apply(device: torch.device | str) -> None:
    """Set the numerics policy for training on `device` (CUDA only; the module doc)."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    # cuBLAS reads this when its handle is created: set before the first matmul of the process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    tf32 = tf32_allowed()
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def tag(device: torch.device | str) -> str:
    """The device type plus, on CUDA, whether TF32 is on: `cpu`, `cuda`, `cuda+tf32`, `mps`."""
    device = torch.device(device)
    if device.type == "cuda" and tf32_allowed():
        return "cuda+tf32"
    return device.type


def flags() -> dict[str, object]:
    """The numerics settings in force now (bench/gpu_check.sh prints them)."""
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
            "matmul_precision": torch.get_float32_matmul_precision()}
