"""Where a sweep's kept models are: the one place `flipsearch gate OUT --trial UID` looks.

M1 is the reference model the trial loaded from `OUT/references` (content-addressed by its
scenario and recipe, so it is found again from the row's configuration); M2 is the kept
model `flipsearch sweep --keep` writes under `OUT/models/`. `kept_m2_parts` is the single
statement of that layout.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import UsageError
from ..rundir import RunDir


def kept_m2_parts(trial_uid: str) -> tuple[str, ...]:
    """Path parts, under OUT, of trial `trial_uid`'s kept M2 state_dict."""
    return (RunDir.MODELS, f"{trial_uid}.pt")


def find_row(out: str, trial: str) -> pd.Series:
    """The row of `out` whose `trial_uid` is `trial` or starts with it (a unique prefix)."""
    from ..results import read_results

    rows = read_results(out)
    uids = rows["trial_uid"].astype(str)
    hits = rows[uids == trial] if (uids == trial).any() else rows[uids.str.startswith(trial)]
    if len(hits) == 0:
        raise UsageError(f"no trial {trial!r} in {out}; trial ids are the trial_uid column of its rows")
    if len(hits) > 1:
        raise UsageError(f"trial id prefix {trial!r} matches {len(hits)} trials in {out}; give more of it")
    row = hits.iloc[0]
    if row["status"] != "ok":
        raise UsageError(f"trial {row['trial_uid']} ended {row['status']}: it has no model to gate")
    return row


def _state(data: bytes, where: str) -> dict:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - not plain weights, truncated
        raise UsageError(f"cannot load {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise UsageError(f"{where} is not a state_dict")
    return state


@dataclass(frozen=True, eq=False)
class KeptTrial:
    """A kept trial: its row, configuration, scenario, and M1 / M2 loaded on the CPU."""

    row: Any
    config: Any
    scenario: Any
    old: Any
    new: Any


def load_kept(out: str, trial: str) -> KeptTrial:
    """Row, scenario, M1 and M2 of the kept trial `trial` of the sweep in `out` (one-line
    `UsageError` when it is not there: unknown id, a trial that kept no model, a foreign file)."""
    from ..models import build_model
    from ..references import ReferenceStore, reference_key
    from ..results import decode_config
    from ..storage import Storage
    from ..trial import PreparedTrial

    row = find_row(out, trial)
    uid = str(row["trial_uid"])
    storage = Storage.open(out)
    parts = kept_m2_parts(uid)
    if not storage.exists(*parts):
        raise UsageError(f"trial {uid} kept no model ({storage.child_uri(*parts)} is missing); run the sweep "
                         "with --keep all, or gate the front's trials")
    cfg = decode_config(row).replace(device="cpu")
    prep = PreparedTrial(cfg, ReferenceStore(storage.sub(RunDir.REFERENCES)))
    if cfg.old_model:
        old_state = _state(open(cfg.old_model, "rb").read(), f"M1 checkpoint {cfg.old_model!r}")
    else:
        key = reference_key("m1", {**prep.refs.spec, **prep.refs.m1_key_spec()})
        payload = prep.store._load(key)  # None when absent or failing its checksum; never trained here
        if payload is None:
            raise UsageError(f"M1 of trial {uid} is not in {storage.child_uri(RunDir.REFERENCES)} (or fails its checksum)")
        old_state = payload["state_dict"]
    new_state = _state(storage.read_bytes(*parts), storage.child_uri(*parts))
    models = []
    for what, state, k in (("M1", old_state, prep.n_old), ("M2", new_state, prep.n_all)):
        net = build_model(cfg.model_name, k, prep.scenario.dataset.input_shape)
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise UsageError(f"{what} of trial {uid} does not fit model {cfg.model_name!r}: "
                             f"{str(e).splitlines()[0]}") from None
        models.append(net.eval())
    return KeptTrial(row, cfg, prep.scenario, models[0], models[1])
