"""`compare`: the flip audit of two saved checkpoints on a dataset split.

Checkpoints are state_dicts as flipsearch saves them (`torch.save(model.state_dict())`),
read with `torch.load(weights_only=True)`; each model's output count is the row count of
the last 2-D `.weight` tensor (the final Linear layer), so M1 may know fewer classes than
M2 (class-incremental). Every bad input is one `UsageError` line, raised before any
prediction.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from .core import FlipAudit, flip_audit

SPLITS = ("test", "val", "update", "train")


def split_tensors(source: Any, split: str):
    """(x, y) of `split` from a `Scenario` (test, val, update = D_update, train = D_train)
    or a `Dataset` (test, train = its whole training pool)."""
    if split == "test":
        return source.x_test, source.y_test
    if split == "val":
        if getattr(source, "x_val", None) is None:
            raise UsageError("split 'val' needs a scenario with a validation set carved from D_update, and this "
                             "one has none; use --split test, update or train")
        return source.x_val, source.y_val
    if split in ("update", "train"):
        if not hasattr(source, f"x_{split}"):
            raise UsageError(f"split {split!r} needs an arrangement (D_train / D_update); give --arrangement")
        return getattr(source, f"x_{split}"), getattr(source, f"y_{split}")
    raise UsageError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def load_state_dict(path: str | os.PathLike, what: str) -> dict:
    """The state_dict in `path`, read with weights_only=True (torch's pickle warnings muted)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} checkpoint {str(p)!r} does not exist or is not a file")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch's zip format or a pickle
        raise UsageError(f"cannot load {what} checkpoint {str(p)!r}: not a torch checkpoint (neither torch.save's "
                         "zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickles weights_only refuses, truncated archives
        import pickle

        why = ("torch.load(weights_only=True) refuses it: not a plain state_dict, save one with "
               "torch.save(model.state_dict(), path)") if isinstance(e, pickle.UnpicklingError) else (
               f"cannot read it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})")
        raise UsageError(f"cannot load {what} checkpoint {str(p)!r}: {why}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UsageError(f"{what} checkpoint {str(p)!r} is not a state_dict (a dict of name -> tensor)")
    return state


def output_count(state: dict, what: str = "model") -> int:
    """Outputs of the model behind `state`: rows of its last 2-D `.weight` (the final Linear)."""
    for key in reversed(list(state)):
        if key.endswith("weight") and state[key].dim() == 2:
            return int(state[key].shape[0])
    raise UsageError(f"{what} checkpoint has no 2-D .weight tensor (a final Linear layer) to count its outputs from")


def _load_error(e: Exception, limit: int = 300) -> str:
    """torch's multi-line load_state_dict error as one line ("Missing key(s) ...; size mismatch ...")."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = "; ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _critical_mask(y, critical_classes: Sequence[int], critical_mask: Any, num_classes: int, split: str):
    import torch

    if critical_mask is not None and len(critical_classes):
        raise UsageError("give either critical classes or a critical mask, not both")
    if critical_mask is not None:
        if isinstance(critical_mask, (str, os.PathLike)):
            try:
                critical_mask = np.load(critical_mask, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot read critical mask {str(critical_mask)!r}: "
                                 f"{str(e).splitlines()[0]}") from None
        mask = np.asarray(critical_mask.cpu() if isinstance(critical_mask, torch.Tensor) else critical_mask)
        if mask.dtype != np.bool_ and not (np.issubdtype(mask.dtype, np.integer) and set(np.unique(mask)) <= {0, 1}):
            raise UsageError(f"critical mask must be bool (or 0/1), got dtype {mask.dtype}")
        mask = mask.astype(bool).reshape(-1)
        if mask.size != len(y):
            raise UsageError(f"critical mask has {mask.size} entries but the {split} split has {len(y)} samples")
        return mask
    if len(critical_classes):
        bad = [c for c in critical_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise UsageError(f"critical classes {bad} do not exist; classes are 0..{num_classes - 1}")
        return np.isin(y.cpu().numpy(), np.asarray(critical_classes, dtype=np.int64))
    return None


@dataclass(frozen=True, eq=False)
class LoadedPair:
    """Two checkpoints loaded into their architecture, and the split they are compared on."""

    old: Any          # nn.Module (M1)
    new: Any          # nn.Module (M2)
    x: Any            # the split's inputs (normalised NCHW)
    y: Any            # its labels
    critical_mask: np.ndarray | None
    dataset: Any      # the `Dataset`
    model: str        # the architecture's name


def load_pair(old_path: str | os.PathLike, new_path: str | os.PathLike, dataset: str, *, model: str | None = None,
              split: str = "test", arrangement: str = "exclusive-op", seed: int = 0, old_fraction: float = 0.5,
              critical_classes: Sequence[int] = (), critical_mask: Any = None,
              data_root: str | os.PathLike | None = None, download: bool = False) -> LoadedPair:
    """Load checkpoints `old_path` (M1) and `new_path` (M2) into `model` (default by dataset)
    and pick `split` of `dataset` (see `compare`); every bad input is a one-line `UsageError`."""
    from ..arrangements import ARRANGEMENTS, make_scenario
    from ..data import load_dataset
    from ..models import DEFAULT_MODEL, build_model

    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split != "test" and arrangement not in ARRANGEMENTS:
        raise UsageError(f"unknown arrangement {arrangement!r}; known: {', '.join(ARRANGEMENTS)}")
    states = {"old": load_state_dict(old_path, "old"), "new": load_state_dict(new_path, "new")}
    ds = load_dataset(dataset, data_root, download)
    name = model or DEFAULT_MODEL.get(ds.name, "cnn8")
    models = {}
    for what, state in states.items():
        k = output_count(state, what)
        if k > ds.num_classes:
            raise UsageError(f"{what} model has {k} outputs but {ds.name} has {ds.num_classes} classes")
        net = build_model(name, k, ds.input_shape)
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            path = old_path if what == "old" else new_path
            raise UsageError(f"{what} checkpoint {str(path)!r} does not fit model {name!r} with {k} outputs for "
                             f"{'x'.join(map(str, ds.input_shape))} inputs: {_load_error(e)}") from None
        models[what] = net
    source = ds if split == "test" else make_scenario(ds, arrangement, seed, old_fraction)
    x, y = split_tensors(source, split)
    mask = _critical_mask(y, tuple(critical_classes), critical_mask, ds.num_classes, split)
    return LoadedPair(models["old"], models["new"], x, y, mask, ds, name)


def compare(old_path: str | os.PathLike, new_path: str | os.PathLike, dataset: str, *, model: str | None = None,
            split: str = "test", arrangement: str = "exclusive-op", seed: int = 0, old_fraction: float = 0.5,
            critical_classes: Sequence[int] = (), critical_mask: Any = None, out: str | os.PathLike | None = None,
            data_root: str | os.PathLike | None = None, download: bool = False, device: str = "auto") -> FlipAudit:
    """Audit the update from checkpoint `old_path` (M1) to `new_path` (M2) on `split` of
    `dataset`; with `out`, also write index.html, audit.json and flips.parquet there.

    `model`: architecture of both (default by dataset: digits -> small, else cnn8).
    `split`: test, val (the scenario's validation set, when it has one), update (D_update)
    or train (D_train) of `arrangement` with `seed`. `critical_classes` or
    `critical_mask` (bool per sample of the split, or a .npy path) add the critical_ metrics.
    """
    from ..train import pick_device
    from .images import pixel_range
    from .page import write_audit

    pair = load_pair(old_path, new_path, dataset, model=model, split=split, arrangement=arrangement, seed=seed,
                     old_fraction=old_fraction, critical_classes=critical_classes, critical_mask=critical_mask,
                     data_root=data_root, download=download)
    ds = pair.dataset
    dev = pick_device(device)
    audit = flip_audit(pair.old.to(dev), pair.new.to(dev), pair.x, pair.y,
                       class_names=ds.class_names or [str(c) for c in range(ds.num_classes)],
                       critical_mask=pair.critical_mask)
    audit.meta.update({
        "title": f"{Path(old_path).name} → {Path(new_path).name} on {ds.name} {split}",
        "old": str(old_path), "new": str(new_path), "dataset": ds.name, "split": split, "model": pair.model,
        **({"arrangement": arrangement, "seed": seed} if split != "test" else {}),
    })
    if out is not None:
        write_audit(audit, out, pair.x, value_range=pixel_range(ds.x_train))
    return audit
