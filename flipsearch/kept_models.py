"""Kept models: the M2 of a sweep's trials, written next to the rows so the front can be shipped.

`search.keep` (`flipsearch sweep --keep`) says which trials keep their M2:

- `front` (default): each scenario's validation front. A trial dominated by another
  finished feasible trial (on the sweep's validation objectives, under its constraints)
  can never return to the front, so its model is deleted as soon as its row and the
  dominating one are written; what stays is the front plus the trials in flight.
  Replicates of a front point keep theirs (the `ce` baseline's replicates when a front
  point is the baseline's configuration); pack members and NeuRecover's repairs are
  trials like any other.
- `all`: every finished trial's model. `none`: no model is written (and none deleted).

A kept model is `OUT/models/<trial_uid>.pt`: a `torch.save` dict (CPU tensors, readable
with `weights_only=True` on a machine without a GPU) holding M2's `state_dict`, the
content addresses of the reference models it was trained from (M1 lies in
`OUT/references/`), and the environment that trained it. `<trial_uid>.sha256` is written
after it: a model without its checksum, or whose bytes do not match it, is never loaded.
Every file goes through `Storage`, so local disks, NFS and `s3://` behave alike.
"""

from __future__ import annotations

import hashlib
import io
import platform
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import UsageError
from .rundir import RunDir
from .storage import Storage

MODELS_DIR = RunDir.MODELS  # under the sweep's output directory, beside references/
BASELINE_REPLICATE = "baseline"  # replicate_of of the ce baseline's replicates: "baseline:<study>"
KEEP_MODES = ("front", "all", "none")
DEFAULT_KEEP = "front"
FORMAT = "flipsearch-kept-model"
VERSION = 1


def models_storage(out: Storage | str) -> Storage:
    """The kept models' folder of the sweep output `out`."""
    return (Storage.open(out) if isinstance(out, str) else out).sub(MODELS_DIR)


def check_keep(value: Any, where: str = "search.keep") -> str:
    """`value` if it is a keep mode, else a one-line `UsageError`."""
    if value not in KEEP_MODES:
        raise UsageError(f"{where}={value!r}; choose from {', '.join(KEEP_MODES)}")
    return str(value)


# --------------------------------------------------------------------------- writing


def environment() -> dict[str, Any]:
    """What decided the numerics of a trial run here: library versions, device, threads."""
    import torch

    def version(name: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(name)
        except Exception:  # noqa: BLE001 - not installed
            return None

    return {"torch": str(torch.__version__), "flipsearch": version("flipsearch"), "ray": version("ray"),
            "optuna": version("optuna"), "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cuda": str(torch.version.cuda) if torch.cuda.is_available() else None}


def save_model(out_uri: str, trial_uid: str, result) -> None:
    """Write the M2 of a finished `TrialResult` as the kept model of `trial_uid` (the
    checksum last, so a reader never trusts a half-published model)."""
    import torch

    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    device = next((p.device.type for p in result.model.parameters()), "cpu")
    payload = {"format": FORMAT, "version": VERSION, "trial_uid": str(trial_uid), "state_dict": state,
               "references": {str(k): str(v) for k, v in (result.reference_keys or {}).items()},
               "environment": {**environment(), "device": device}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    store = models_storage(out_uri)
    store.write_bytes(data, f"{trial_uid}.pt")
    store.write_bytes(hashlib.sha256(data).hexdigest().encode(), f"{trial_uid}.sha256")


def delete_model(store: Storage, trial_uid: str) -> None:
    """Delete the kept model of `trial_uid` from the models folder `store`."""
    store.delete(f"{trial_uid}.sha256")  # the checksum first: a half-deleted model is never trusted
    store.delete(f"{trial_uid}.pt")


def kept_uids(out: Storage | str) -> set[str]:
    """Trial uids with a published model (its `.pt` and its checksum)."""
    store = models_storage(out)
    pts = {n[:-3] for n in store.list(suffix=".pt")}
    return {n[:-7] for n in store.list(suffix=".sha256")} & pts


# --------------------------------------------------------------------------- reading


def require_model(out: Storage | str, trial_uid: str) -> None:
    """A one-line `UsageError` unless `trial_uid` has a published model."""
    store = models_storage(out)
    if not store.exists(f"{trial_uid}.pt") or not store.exists(f"{trial_uid}.sha256"):
        raise UsageError(f"trial {trial_uid} kept no model ({MODELS_DIR}/{trial_uid}.pt with its checksum is "
                         "missing); rerun it with its reproduce command and --save-model")


def read_model(out: Storage | str, trial_uid: str) -> tuple[dict, str]:
    """(the kept payload of `trial_uid`, the sha256 of its file). A missing model, a
    checksum mismatch (a changed or foreign file) or a file that is not a kept model of this
    trial is a one-line `UsageError`."""
    import torch

    store = models_storage(out)
    name = f"{MODELS_DIR}/{trial_uid}.pt"
    require_model(out, trial_uid)
    data = store.read_bytes(f"{trial_uid}.pt")
    want = store.read_bytes(f"{trial_uid}.sha256").decode(errors="replace").strip()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise UsageError(f"{name} fails its checksum (sha256 {got[:12]}…, recorded {want[:12]}…): "
                         "the file was changed or is not this sweep's; do not use it")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or non-weights file
        raise UsageError(f"{name} is not a plain-weights checkpoint: {str(e).splitlines()[0][:200]}") from None
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT
            and isinstance(payload.get("state_dict"), dict) and payload.get("trial_uid") == str(trial_uid)):
        raise UsageError(f"{name} is not the kept model of trial {trial_uid} (a foreign checkpoint)")
    return payload, got


def _m1_state(out: Storage, keys: dict, cfg, uid: str) -> tuple[dict, str]:
    """M1's state_dict for a kept model and where it came from."""
    from .references import read_user_state

    key = keys.get("m1")
    if not key:
        raise UsageError(f"the kept model of trial {uid} does not name its M1")
    if key.startswith("m1-user"):
        if not cfg.old_model:
            raise UsageError(f"trial {uid} used a user's M1 but its row does not name the file")
        return read_user_state(cfg.old_model), f"user checkpoint {cfg.old_model}"
    import torch

    refs = out.sub(RunDir.REFERENCES)
    if not (refs.exists(f"{key}.pt") and refs.exists(f"{key}.sha256")):
        raise UsageError(f"M1 of trial {uid} (references/{key}.pt with its checksum) is missing")
    data = refs.read_bytes(f"{key}.pt")
    if hashlib.sha256(data).hexdigest() != refs.read_bytes(f"{key}.sha256").decode(errors="replace").strip():
        raise UsageError(f"references/{key}.pt (M1 of trial {uid}) fails its checksum; do not use it")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - not plain weights
        raise UsageError(f"references/{key}.pt is not a plain-weights checkpoint: {str(e).splitlines()[0]}") from None
    return payload["state_dict"], f"references/{key}.pt"


@dataclass
class KeptNetworks:
    """A kept trial's M1 and M2 rebuilt on the CPU (eval mode), their state_dicts, and
    where they came from."""

    m1: Any
    m2: Any
    m1_state: dict
    m2_state: dict
    m1_source: str
    sha256: str                    # of the kept model's file
    environment: dict[str, Any]    # what the trial ran with


def kept_networks(storage: Storage, uid: str, cfg, scenario) -> KeptNetworks:
    """M1 and M2 of the kept trial `uid` (config `cfg`, its loaded `scenario`), checksums
    verified; a one-line `UsageError` when either is missing, changed or does not fit."""
    from .models import build_model

    payload, sha = read_model(storage, uid)
    m1_state, m1_source = _m1_state(storage, payload.get("references") or {}, cfg, uid)
    shape = scenario.dataset.input_shape
    m1 = build_model(cfg.model_name, scenario.num_old_classes, shape)
    m2 = build_model(cfg.model_name, scenario.num_classes, shape)
    for model, state, what in ((m1, m1_state, m1_source), (m2, payload["state_dict"], f"{MODELS_DIR}/{uid}.pt")):
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, KeyError) as e:
            raise UsageError(f"{what} does not fit model {cfg.model_name!r}: {str(e).splitlines()[0]}") from None
        model.eval()
    return KeptNetworks(m1, m2, m1_state, payload["state_dict"], m1_source, sha, dict(payload.get("environment") or {}))


# --------------------------------------------------------------------------- which to keep


_ROW_COLUMNS = ("trial_uid", "study", "status", "replicate_of", "method")  # and hp_*, val_*


def wanted(rows: pd.DataFrame, mode: str, objectives, constraints) -> set[str]:
    """The trial uids among `rows` whose models `mode` keeps: for `front`, every study's
    validation front (ok search trials, feasible under `constraints`, non-dominated under
    `objectives` by `_pareto.pareto_mask`) and the replicates of its points; for
    `all`, every ok row; for `none`, nothing.

    While no trial of a study is feasible, its front is empty and a report recommends the
    trial closest to feasible (least total violation, each constraint's scaled by its
    metric's spread). Whatever the scales, that trial is non-dominated in violations, so
    those trials keep their models (a dominated one can never be the closest)."""
    if mode == "none" or not len(rows) or "trial_uid" not in rows:
        return set()
    ok = rows[(rows["status"] == "ok").fillna(False).to_numpy(dtype=bool)] if "status" in rows else rows
    if mode == "all":
        return set(ok["trial_uid"].dropna().astype(str))
    from ._pareto import pareto_mask
    from .baseline import is_baseline
    from .objectives import Constraint, Objective

    # The front is chosen on validation values: the objectives and constraints read val_* columns.
    objs = [Objective("val_" + o.metric, o.direction) for o in objectives]
    cons = [Constraint("val_" + c.metric, c.op, c.value) for c in constraints]
    rep_of = ok["replicate_of"].astype("string") if "replicate_of" in ok else pd.Series(pd.NA, index=ok.index,
                                                                                          dtype="string")
    search = ok[rep_of.isna().to_numpy(dtype=bool)]
    keep: set[str] = set()
    for study, mine in search.groupby("study", sort=False):
        if any(o.metric not in mine for o in objs) or any(c.metric not in mine for c in cons):
            continue  # rows without validation values of an objective: no front
        column = lambda m: mine[m].to_numpy(dtype=float, na_value=np.nan)  # noqa: E731
        violations = np.column_stack([c.violation_array(column(c.metric)) for c in cons]) if cons \
            else np.zeros((len(mine), 0))
        feasible = (violations == 0).all(axis=1)
        if feasible.any():
            values = np.column_stack([column(o.metric) for o in objs])
            on_front = np.zeros(len(mine), dtype=bool)
            on_front[np.flatnonzero(feasible)[pareto_mask(values[feasible], [o.direction for o in objs])]] = True
        else:  # nothing feasible: the candidates for closest to feasible
            on_front = pareto_mask(violations, ["min"] * len(cons)) if cons else np.zeros(len(mine), dtype=bool)
        front = mine[on_front]
        keep |= set(front["trial_uid"].astype(str))
        if any(is_baseline(r) for _, r in front.iterrows()):  # the ce baseline's replicates serve it
            keep.add(f"{BASELINE_REPLICATE}:{study}")
    reps = ok[rep_of.isin(keep).fillna(False).to_numpy(dtype=bool)]
    keep |= set(reps["trial_uid"].astype(str))
    return {u for u in keep if not u.startswith(f"{BASELINE_REPLICATE}:")}


def _slim(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the keep rule reads of a row: identity, status, method and hyperparameters
    (is it the ce baseline's configuration?) and the validation values."""
    from .baseline import COLUMN

    return {k: v for k, v in row.items() if k in _ROW_COLUMNS or k == COLUMN or str(k).startswith(("hp_", "val_"))}


class Keeper:
    """The driver's side of `search.keep`: `write(row)` appends a finished row (through
    `write_row`) and then deletes the models the rows written so far rule out (a model
    whose row has not landed is in flight and never judged); `prune()`
    (when nothing is in flight: the start and the end of a sweep) also deletes models
    without a row (trials interrupted before their row landed)."""

    def __init__(self, out: Storage, mode: str, objectives, constraints, rows: pd.DataFrame,
                 write_row: Callable[[Mapping[str, Any]], Any], templates: Mapping[str, Any] | None = None):
        from .baseline import mark

        self.out, self.mode, self.templates = out, mode, templates  # templates: which rows are the ce baseline
        rows = mark(rows, templates)
        self.objectives, self.constraints = list(objectives), list(constraints)
        self.write_row = write_row
        self.store = models_storage(out)
        self.rows = [_slim(r) for r in rows.to_dict("records")] if len(rows) else []
        self.present = kept_uids(out) if mode != "none" else set()
        self.deleted = 0

    def write(self, row: Mapping[str, Any]) -> Any:
        written = self.write_row(row)
        if self.mode == "none":
            return written
        if self.templates:
            from .baseline import mark

            row = mark(pd.DataFrame([dict(row)]), self.templates).iloc[0].to_dict()
        self.rows = [r for r in self.rows if r.get("trial_uid") != row.get("trial_uid")] + [_slim(row)]
        if row.get("status") == "ok":
            self.present.add(str(row.get("trial_uid")))
        if self.mode == "front":  # only the landed row's study can change
            mine = [r for r in self.rows if r.get("study") == row.get("study")]
            judged = self.present & {str(r.get("trial_uid")) for r in mine}
            self._delete(judged - wanted(pd.DataFrame(mine), self.mode, self.objectives, self.constraints))
        return written

    def prune(self) -> int:
        """Delete every model `mode` does not keep, those of trials without a row included.
        Returns how many this keeper deleted in all."""
        if self.mode != "none":
            self.present = kept_uids(self.out)
            self._delete(self.present - wanted(self._frame(), self.mode, self.objectives, self.constraints))
            for name in self.store.list(suffix=".pt"):  # a model whose checksum never landed
                if name[:-3] not in self.present:
                    self.store.delete(name)
        return self.deleted

    def _frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def _delete(self, uids: Iterable[str]) -> None:
        for uid in sorted(uids):
            delete_model(self.store, uid)
            self.present.discard(uid)
            self.deleted += 1
