"""The results table: what a row is, and one Parquet part file per finished trial.

This module owns the row. `row_schema()` declares every column with its Arrow type, so every
part file of a run has the same schema: `duckdb.read_parquet('OUT/trials/*.parquet')` and
`pandas.read_parquet('OUT/trials/')` read every column of every row. Columns:

| columns | meaning |
|---|---|
| `run_id`, `study`, `trial_number`, `trial_uid` | sweep invocation, Optuna study (scenario), its trial number, and a unique id (the row's identity: two trials never share it) |
| `ray_trial_id`, `pack_id`, `pack_size` | the Ray trial that ran it, and its pack (one configuration per pack when not packed) |
| `replicate_of`, `replicate` | for a replicate run (`--replicates K`): the `trial_uid` it re-runs with another seed, and k (null for search trials) |
| the `TrialConfig` fields | `dataset`, `arrangement`, `method`, `seed`, `model`, `old_fraction`, `val_fraction`, `scale`, `test_scale`, `critical_classes` ("3,5"), paths, `device` |
| `hp_<name>` | every registered method's hyperparameters, typed by its schema, null where the row's method lacks it |
| `m1_<key>`, `update_<key>` | the two training recipes |
| `<metric>`, `val_<metric>` | every metric on the test set and on the validation split (`*_old_classes`, `critical_*` where they apply, null otherwise); counts `n_*` are the denominators |
| `status`, `error`, `epochs` | `ok`, `failed`, `diverged` or `stopped` (early stopping: validation values only), a one-line error, update epochs run |
| `ref_<kind>` | reference cache outcome per reference model: `hit`, `miss`, `user` |
| `seconds_<phase>`, `wall_seconds`, `started_at`, `finished_at` | timings (timestamps in UTC) |
| `info_json` | method facts (NeuRecover's localisation, MPT's note) as one JSON object |
| `hostname`, `node_id`, `pid`, `gpu_ids` | where it ran |

Append-only parts make a crash lose at most the trials in flight, need no
read-modify-write, and work the same on a local disk or an object store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import uuid
from functools import lru_cache
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .config import RECIPE_KEYS, TrialConfig
from .errors import FlipsearchError, UsageError
from .objectives import SELECTION_PREFIX
from .rundir import RunDir
from .storage import Storage

PARTS_DIR = RunDir.TRIALS
STATUSES = ("ok", "failed", "diverged", "stopped")
VAL_PREFIX = SELECTION_PREFIX
# Columns every row has: they identify it (`read_results` orders and de-duplicates by them).
ROW_IDENTITY = ("study", "trial_number", "finished_at")

_ARROW = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
IDENTITY = [("run_id", pa.string()), ("study", pa.string()), ("trial_number", pa.int64()),
            ("trial_uid", pa.string()), ("ray_trial_id", pa.string()), ("pack_id", pa.string()),
            ("pack_size", pa.int64()), ("replicate_of", pa.string()), ("replicate", pa.int64())]


def _config_schema() -> list[tuple[str, pa.DataType]]:
    """One column per `TrialConfig` field, in field order (hyperparameters and recipes get
    their own prefixed columns): numbers and flags typed, everything else as text."""
    types = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
    return [(f.name, types.get(str(f.type).replace(" | None", ""), pa.string())) for f in dataclasses.fields(TrialConfig)
            if f.name not in ("hparams", "m1_recipe", "update_recipe")]


CONFIG = _config_schema()
OUTCOME = [("status", pa.string()), ("error", pa.string()), ("epochs", pa.int64())]
PHASES = ("data", "m1", "references", "update", "eval", "total")
WHERE = [("hostname", pa.string()), ("node_id", pa.string()), ("pid", pa.int64()), ("gpu_ids", pa.string()),
         ("wall_seconds", pa.float64()), ("started_at", pa.timestamp("us", tz="UTC")),
         ("finished_at", pa.timestamp("us", tz="UTC")), ("info_json", pa.string())]


def _hparam_columns() -> list[tuple[str, pa.DataType]]:
    from .methods import methods

    cols: dict[str, pa.DataType] = {}
    for method in methods().values():
        for h in method.hparams:
            t = _ARROW[h.python_type]
            if cols.setdefault(f"hp_{h.name}", t) != t:  # two methods, one name, two types: text
                cols[f"hp_{h.name}"] = pa.string()
    return sorted(cols.items())


def _reference_kinds() -> list[str]:
    from .methods import methods

    kinds = ["m1"]
    for method in methods().values():
        kinds += [r.kind for r in method.needs if r.kind not in kinds]
    return kinds


def metric_columns(prefix: str = "") -> list[str]:
    """Every metric column a row may have (old-classes and critical variants included), each with `prefix`."""
    from .metrics import metric_names

    return [prefix + m for m in metric_names(old_classes=True, critical=True)]


def row_schema() -> pa.Schema:
    """The declared schema of a row, from the registered methods' hyperparameters and
    reference models (so a method registered by a user module adds its columns)."""
    return _schema(tuple(sorted(_hparam_columns())), tuple(_reference_kinds()))


@lru_cache(maxsize=8)
def _schema(hparams: tuple, kinds: tuple) -> pa.Schema:
    recipe_types = {k: _ARROW[type(v)] for k, v in TrialConfig().m1_recipe.as_dict().items()}
    cols = IDENTITY + CONFIG + list(hparams)
    cols += [(f"{scope}_{k}", recipe_types[k]) for scope in ("m1", "update") for k in RECIPE_KEYS]
    cols += OUTCOME
    cols += [(m, pa.float64()) for m in metric_columns() + metric_columns(VAL_PREFIX)]
    cols += [(f"ref_{k}", pa.string()) for k in kinds]
    cols += [(f"seconds_{p}", pa.float64()) for p in PHASES]
    cols += [(f"seconds_ref_{k}", pa.float64()) for k in kinds if k != "m1"]
    cols += WHERE
    return pa.schema(cols)


def config_columns(cfg: TrialConfig) -> dict[str, Any]:
    """The row's configuration columns for `cfg` (`decode_config` is the inverse)."""
    d = cfg.to_dict()
    row = {k: d[k] for k, _ in CONFIG}
    row["critical_classes"] = ",".join(map(str, cfg.critical_classes))
    row["explicit"] = json.dumps(list(cfg.explicit)) if cfg.explicit else None
    row.update({f"hp_{k}": v for k, v in cfg.hparams.items()})
    row.update({f"m1_{k}": v for k, v in d["m1_recipe"].items()})
    row.update({f"update_{k}": v for k, v in d["update_recipe"].items()})
    return row


def decode_config(row: Mapping[str, Any]) -> TrialConfig:
    """The `TrialConfig` a row (a dict or a pandas row) was run with."""
    from .methods import get_method

    def cell(key):
        v = row.get(key)
        return None if is_missing(v) else (v.item() if hasattr(v, "item") else v)

    kw: dict[str, Any] = {k: cell(k) for k, _ in CONFIG if cell(k) is not None}
    try:
        kw["critical_classes"] = tuple(int(c) for c in str(kw.get("critical_classes") or "").split(",") if c)
    except ValueError:
        raise UsageError(f"the row of trial {cell('trial_uid') or cell('trial_number')} has critical_classes "
                         f"{kw['critical_classes']!r}, not comma-separated class ids; the rows were edited: "
                         "restore them (or rerun that trial)") from None
    if kw.get("explicit"):
        try:
            kw["explicit"] = tuple(json.loads(kw["explicit"]))
        except (ValueError, TypeError):
            raise UsageError(f"the row of trial {cell('trial_uid') or cell('trial_number')} has an unreadable "
                             "'explicit' cell (not a JSON list); the rows were edited: restore them") from None
    method = get_method(kw.get("method", "ce"))
    kw["hparams"] = {h.name: cell(f"hp_{h.name}") for h in method.hparams if cell(f"hp_{h.name}") is not None}
    for scope in ("m1", "update"):
        kw[f"{scope}_recipe"] = {k: cell(f"{scope}_{k}") for k in RECIPE_KEYS if cell(f"{scope}_{k}") is not None}
    return TrialConfig.from_dict(kw)


def encode_row(result, identity: Mapping[str, Any], where: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row for a finished `TrialResult` of a trial with `identity` (run_id, study, …)."""
    row = {**identity, **config_columns(result.config), "status": result.status, "error": result.error,
           "epochs": result.epochs}
    row.update(result.metrics)
    row.update({f"ref_{k}": v for k, v in result.references.items()})
    row.update({f"seconds_{k}": v for k, v in result.timings.items()})
    row["info_json"] = json.dumps(result.info, default=str, sort_keys=True)
    row.update(where or {})
    return row


def failed_row(config: TrialConfig | None, identity: Mapping[str, Any], error: str, *,
               status: str = "failed", metrics: Mapping[str, float] | None = None, epochs: int = 0,
               where: Mapping[str, Any] | None = None, fallback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A row for a trial that produced no `TrialResult`: it failed (one-line `error`), its
    worker died, or the early-stopping scheduler stopped it (`status="stopped"`, with its
    last validation `metrics`). `fallback` holds raw config cells when `config` could not
    even be built."""
    row = dict(identity)
    row.update(config_columns(config) if config is not None else (fallback or {}))
    row.update(status=status, error=error, epochs=epochs, **(metrics or {}))
    row.update(where or {})
    return row


def new_trial_uid() -> str:
    """A fresh, random trial uid (hex)."""
    return uuid.uuid4().hex


def is_missing(v: Any) -> bool:
    """None or a pandas/NumPy missing value (NaN, NA, NaT)."""
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _cell(value: Any, t: pa.DataType) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if pa.types.is_timestamp(t) and isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    if pa.types.is_string(t) and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return value


def to_table(rows: list[Mapping[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Rows as a table of the declared schema; a key the schema lacks is an error (a
    column nobody declared would silently vanish from some part files)."""
    schema = schema or row_schema()
    names = set(schema.names)
    for row in rows:
        extra = sorted(set(row) - names)
        if extra:
            raise FlipsearchError(f"result row has undeclared columns {extra[:5]}; declare them in results.row_schema")
    cols = {f.name: [_cell(r.get(f.name), f.type) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


class ResultsWriter:
    """Writes a sweep's rows under OUT/trials, one Parquet file per row (atomic, never rewritten)."""

    def __init__(self, out: Storage):
        self.out = out
        out.makedirs(PARTS_DIR)

    def append(self, row: Mapping[str, Any]) -> str:
        """Write one row as its own Parquet file, atomically; returns its name."""
        buf = io.BytesIO()
        pq.write_table(to_table([row]), buf)
        uid = str(row.get("trial_uid") or new_trial_uid())[:12]
        name = f"part-{row.get('study', 'trial')}-{int(row.get('trial_number') or 0):06d}-{uid}.parquet"
        self.out.write_bytes(buf.getvalue(), PARTS_DIR, name)
        return name


def read_results(out: Storage | str, *, required: bool = True) -> pd.DataFrame:
    """All rows of a sweep, one per trial (`trial_uid`; the last write wins when a retried
    trial wrote twice), in (study, trial_number) order.

    Raises a one-line error when `out` holds no sweep (and `required`), or when a part
    file is unreadable (naming it)."""
    out = Storage.open(out) if isinstance(out, str) else out
    where = f"{out.uri}/{PARTS_DIR}"
    names = out.list(PARTS_DIR, suffix=".parquet")
    if not names:
        if required:
            raise UsageError(f"{out.uri} holds no sweep results (no {PARTS_DIR}/*.parquet); "
                             "run `flipsearch sweep SPACE.yaml --out DIR` first")
        return pd.DataFrame()
    tables = []
    for name in names:
        try:
            tables.append(pq.read_table(io.BytesIO(out.read_bytes(PARTS_DIR, name))))
        except (pa.ArrowInvalid, OSError) as e:
            raise FlipsearchError(f"results file {PARTS_DIR}/{name} is unreadable ({str(e).splitlines()[0]}); "
                                  "move it away and rerun the sweep with --resume to redo that trial") from None
    # Integer columns stay integers (nullable Int64), not floats, where some rows lack them.
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    lacking = [c for c in ROW_IDENTITY if c not in df.columns]
    if lacking:
        raise UsageError(f"the result rows in {where} have no {', '.join(map(repr, lacking))} column; they were "
                         "not written by a flipsearch sweep, or were edited: restore them")
    key = "trial_uid" if "trial_uid" in df and df["trial_uid"].notna().all() else ["study", "trial_number"]
    return (df.sort_values(["study", "trial_number", "finished_at"])
              .drop_duplicates(key, keep="last").reset_index(drop=True))
