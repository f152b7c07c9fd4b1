"""What decides a trial's numerics, recorded with its row, and whether a re-run can be exact.

A trial's weights are a pure function of its configuration *and* of where its floats were
summed: the torch version (kernels change between releases), the device (CPU, which GPU),
the intra-op thread count (a reduction split over more threads rounds differently), and the
precision (AMP). The data itself does not depend on any of these (`data._base.level_tables`).
Same configuration and same `numerics()` on the same machine give bitwise-equal M1 and M2
(docs/METHODS.md, "Exact re-runs"); `rerun_differences` says which of them a re-run here
would change, so a report or a card can say why a re-run cannot be exact instead of
flagging a bare mismatch.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

# The row's numerics columns (results.row_schema declares them; old runs lack them).
NUMERICS_COLUMNS = [("torch_version", pa.string()), ("threads", pa.int64()), ("device_used", pa.string()),
                    ("device_name", pa.string()), ("precision", pa.string())]


def device_name(device) -> str:
    """The accelerator's model name for a CUDA device, else the CPU architecture."""
    import platform

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.machine() or device.type


def precision(device, m1_amp: bool, update_amp: bool) -> str:
    """`float32`, or where mixed precision ran (AMP is CUDA-only: ignored elsewhere)."""
    import torch

    if torch.device(device).type != "cuda":
        return "float32"
    return {(False, False): "float32", (True, True): "amp", (True, False): "amp-m1",
            (False, True): "amp-update"}[(bool(m1_amp), bool(update_amp))]


def numerics(device, m1_amp: bool = False, update_amp: bool = False) -> dict[str, Any]:
    """This process's numerics for a trial on `device`: the row's `NUMERICS_COLUMNS`."""
    import torch

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
