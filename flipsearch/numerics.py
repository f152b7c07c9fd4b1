"""Numerics: the policy a trial trains under, what its row records of it, and whether a
re-run can be exact.

**Recorded.** A trial's weights are a pure function of its configuration *and* of where its floats were
summed: the torch version (kernels change between releases), the device (CPU, which GPU),
the intra-op thread count (a reduction split over more threads rounds differently), and the
precision (AMP). The data itself does not depend on any of these (`data._base.level_tables`).
Same configuration and same `numerics()` on the same machine give bitwise-equal M1 and M2
(docs/METHODS.md, "Exact re-runs"); `rerun_differences` says which of them a re-run here
would change, so a report or a card can say why a re-run cannot be exact instead of
flagging a bare mismatch.

**Policy on GPUs.** The project's claims ("a pack member equals its solo run", "the same seed gives the same
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
from typing import Any, Mapping

import pyarrow as pa
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

# The row's numerics columns (results.row_schema declares them; old runs lack them).
NUMERICS_COLUMNS = [("torch_version", pa.string()), ("threads", pa.int64()), ("device_used", pa.string()),
                    ("device_name", pa.string()), ("precision", pa.string())]


def device_name(device) -> str:
    """The accelerator's model name for a CUDA device, else the CPU architecture."""
    import platform

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.machine() or device.type


def precision(device, m1_amp: bool, update_amp: bool) -> str:
    """`float32`, or where mixed precision ran (AMP is CUDA-only: ignored elsewhere)."""
    if torch.device(device).type != "cuda":
        return "float32"
    return {(False, False): "float32", (True, True): "amp", (True, False): "amp-m1",
            (False, True): "amp-update"}[(bool(m1_amp), bool(update_amp))]


def numerics(device, m1_amp: bool = False, update_amp: bool = False) -> dict[str, Any]:
    """This process's numerics for a trial on `device`: the row's `NUMERICS_COLUMNS`."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return {"torch_version": torch.__version__, "threads": int(torch.get_num_threads()),
            "device_used": str(device), "device_name": device_name(device),
            "precision": precision(device, m1_amp, update_amp)}


def _cell(row: Mapping[str, Any], key: str) -> Any:
    """A row's cell as a plain value, None where missing (None, NaN, pandas NA)."""
    import pandas as pd

    v = row.get(key) if hasattr(row, "get") else None
    if v is None or (not isinstance(v, str) and bool(pd.isna(v))):
        return None
    return v.item() if hasattr(v, "item") else v


def rerun_differences(row: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """Why a re-run with numerics `here` cannot reproduce `row` bitwise: one phrase per
    difference (empty: it can). A row from before these columns were recorded says so;
    a pack member (trained with K others in one step) matches a solo run only within
    float rounding."""
    reasons = []
    if _cell(row, "torch_version") is None:
        reasons.append("the row does not record its numerics (a run from an older flipsearch)")
    else:
        kind = lambda d: None if d is None else str(d).split(":")[0]  # noqa: E731 - cuda:1 and cuda:0 alike
        pairs = [("torch", _cell(row, "torch_version"), here.get("torch_version")),
                 ("device", kind(_cell(row, "device_used")), kind(here.get("device_used"))),
                 ("device", _cell(row, "device_name"), here.get("device_name")),
                 ("precision", _cell(row, "precision"), here.get("precision")),
                 ("threads", _cell(row, "threads"), here.get("threads"))]
        for what, old, new in pairs:
            if old is None or new is None or str(old) == str(new):
                continue
            if not (what == "device" and any(r.startswith("device ") for r in reasons)):
                reasons.append(f"{what} {old} in the row, {new} here")
    pack = _cell(row, "pack_size")
    if pack is not None and int(pack) > 1:
        reasons.append(f"the row was trained in a pack of {int(pack)} (equal to a solo run within float rounding)")
    return reasons


def threads_of(row: Mapping[str, Any]) -> int | None:
    """The intra-op thread count a row was trained with, when it records one."""
    v = _cell(row, "threads")
    return int(v) if v is not None else None
