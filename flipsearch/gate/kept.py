"""The kept model of a sweep's trial, for `flipsearch gate OUT --trial UID`.

The run directory's kept models (`flipsearch.kept_models`: M2 under `OUT/models/` with its
checksum, naming the M1 in `OUT/references/` it was trained from) and the trial lookup of
`flipsearch export` are reused as they are, so gate, export and the report read one layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class KeptTrial:
    """A kept trial: its row, configuration, scenario, and M1 / M2 loaded on the CPU."""

    row: Any
    config: Any
    scenario: Any
    old: Any
    new: Any


def load_kept(out: str, trial: str) -> KeptTrial:
    """Row, scenario, M1 and M2 of the kept trial `trial` (its uid or a unique prefix) of the
    sweep in `out`; a one-line `UsageError` when it is not there (unknown id, a trial that
    kept no model, a changed or foreign file)."""
    from ..export import find_trial
    from ..kept_models import kept_networks, require_model
    from ..results import decode_config, read_results
    from ..storage import Storage
    from ..trial import load_scenario

    storage = Storage.open(out)
    row = find_trial(read_results(storage), str(trial), storage.uri)
    uid = str(row["trial_uid"])
    require_model(storage, uid)  # refused before the data loads
    cfg = decode_config(row).replace(device="cpu")
    scenario = load_scenario(cfg)
    net = kept_networks(storage, uid, cfg, scenario)
    return KeptTrial(row, cfg, scenario, net.m1, net.m2)
