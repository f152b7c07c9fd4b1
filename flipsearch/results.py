"""The results table: one Parquet part file per finished trial under `OUT/trials/`.

Append-only parts make a crash lose at most the trials in flight, need no read-modify-write,
and work the same on a local disk or an object store. Readers concatenate the parts
(columns may differ between methods) and keep one row per (study, trial_number).

Row schema (see README "Results schema"): identity columns (`run_id`, `study`,
`trial_number`, `ray_trial_id`, `node_id`, `hostname`), the scenario (`dataset`,
`arrangement`, `model`, `seed`, …), `method`, every hyperparameter as `hp_<name>`, the
recipes as `m1_<key>` / `update_<key>`, every metric by its own name, `status`
(`ok` | `failed` | `diverged`), `error`, timings `seconds_*`, and reference-cache outcomes
`ref_<kind>` (`hit` | `miss` | `user`).
"""

from __future__ import annotations

import io
import math
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import FlipsearchError, UsageError
from .storage import Storage

PARTS_DIR = "trials"
STATUSES = ("ok", "failed", "diverged")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple, dict)):
        return str(value)
    return value


class ResultsWriter:
    def __init__(self, out: Storage):
        self.out = out
        out.makedirs(PARTS_DIR)

    def append(self, row: dict[str, Any]) -> str:
        """Write one row as its own Parquet file, atomically; returns its name."""
        table = pa.Table.from_pylist([{k: _clean(v) for k, v in row.items()}])
        buf = io.BytesIO()
        pq.write_table(table, buf)
        name = f"part-{row.get('study', 'trial')}-{int(row.get('trial_number', 0)):06d}-{uuid.uuid4().hex[:8]}.parquet"
        self.out.write_bytes(buf.getvalue(), PARTS_DIR, name)
        return name


def read_results(out: Storage | str, *, required: bool = True) -> pd.DataFrame:
    """All rows of a sweep, one per (study, trial_number), in trial order.

    Raises a one-line error when `out` holds no sweep (and `required`), or when a part
    file is unreadable (naming it)."""
    out = Storage.open(out) if isinstance(out, str) else out
    names = out.list(PARTS_DIR, suffix=".parquet")
    if not names:
        if required:
            raise UsageError(f"{out.uri} holds no sweep results (no {PARTS_DIR}/*.parquet); "
                             "run `flipsearch sweep SPACE.yaml --out DIR` first")
        return pd.DataFrame()
    frames = []
    for name in names:
        try:
            frames.append(pq.read_table(io.BytesIO(out.read_bytes(PARTS_DIR, name))).to_pandas())
        except (pa.ArrowInvalid, OSError) as e:
            raise FlipsearchError(f"results file {PARTS_DIR}/{name} is unreadable ({str(e).splitlines()[0]}); "
                                  "move it away and rerun the sweep with --resume to redo that trial") from None
    df = pd.concat([f.dropna(axis=1, how="all") for f in frames], ignore_index=True, sort=False)
    if "study" in df and "trial_number" in df:
        df = (df.sort_values(["study", "trial_number", "finished_at"] if "finished_at" in df else ["study", "trial_number"])
                .drop_duplicates(["study", "trial_number"], keep="last").reset_index(drop=True))
    return df
