"""Which rows a front may hold, and which metric values choose it: the one place.

A report selects on VALIDATION and reports on TEST:

- `selection_frame(df)` is the rows with every metric column holding its validation value
  under the plain name (`val_nfr` as `nfr`, the column mapping of
  `flipsearch.objectives.selection_view`); test values are not in it at all, so a front,
  a hypervolume, a feasibility check or a recommendation computed on it cannot see them.
- `reported_frame(df)` is the same rows with the test values under the plain names and no
  `val_*` column: what the report shows as results.

Both keep `df`'s index, so a row chosen on one is looked up on the other with `.loc`.

`search_mask(df)` marks the rows that may enter a front: search trials (no
`replicate_of`) that finished (`status` ok). Early-stopped trials (`stopped`: validation
values of a truncated update, no test values), failed and diverged ones, and replicate runs
(the same configuration re-run with other seeds) never do; they appear in the all-trials
table, and replicates give the seed spread of the front points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import is_known_metric
from ..objectives import selection_view

REPLICATE_OF = "replicate_of"


def selection_columns(columns) -> dict[str, str]:
    """{plain metric name: validation column} for the metric columns among `columns`
    (`selection_view` applied to the column names themselves)."""
    view = selection_view({c: c for c in map(str, columns)})
    return {plain: col for plain, col in view.items() if is_known_metric(plain)}


def _metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if is_known_metric(str(c))]


def selection_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with validation values under the plain metric names and no test values."""
    mapping = selection_columns(df.columns)
    val_cols = list(mapping.values())
    keep = [c for c in df.columns if c not in val_cols and c not in _metric_columns(df)]
    out = df[keep].copy()
    for plain, col in mapping.items():
        out[plain] = df[col].to_numpy(dtype=float, na_value=np.nan)
    return out


def reported_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with the test values under the plain metric names and no `val_*` metric column."""
    val_cols = set(selection_columns(df.columns).values())
    return df[[c for c in df.columns if c not in val_cols]].copy()


def is_replicate(df: pd.DataFrame) -> np.ndarray:
    """Per row, whether it is a replicate run (has `replicate_of`) rather than a search trial."""
    if REPLICATE_OF not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[REPLICATE_OF].notna().to_numpy(dtype=bool)


def search_mask(df: pd.DataFrame) -> np.ndarray:
    """Rows that may enter a front: finished (status ok) search trials, no replicates."""
    ok = (df["status"] == "ok").fillna(False).to_numpy(dtype=bool) if "status" in df.columns \
        else np.ones(len(df), dtype=bool)
    return ok & ~is_replicate(df)


def finishing_order(df: pd.DataFrame) -> pd.DataFrame:
    """`df` in the order its trials finished (`finished_at`, then trial number; rows
    without a timestamp keep trial order, after the timed ones)."""
    cols = [c for c in ("finished_at", "trial_number") if c in df.columns]
    if not cols:
        return df
    return df.sort_values(cols, kind="stable", na_position="last")


def missing_selection(df: pd.DataFrame, metrics) -> list[str]:
    """Those of `metrics` that no search row has a validation value for."""
    mapping = selection_columns(df.columns)
    rows = df[search_mask(df)]
    out = []
    for m in metrics:
        col = mapping.get(m)
        if col is None or not len(rows) or rows[col].isna().all():
            out.append(m)
    return out


def runs_with_replicates(rows: pd.DataFrame, originals: pd.Index) -> pd.Index:
    """The rows `originals` (search trials) and the ok replicate runs of them (rows whose
    `replicate_of` is one of their `trial_uid`s), originals first. A `ce` trial at its
    defaults is the ce baseline's configuration, which the sweep replicates once, as the
    baseline (`replicate_of = "baseline:<study>"`): those runs are its replicates too, one
    per seed not already among its runs."""
    from .baselines import BASELINE_REPLICATE, is_default_ce

    out = list(originals)
    if REPLICATE_OF in rows.columns and "trial_uid" in rows.columns and len(originals):
        uids = {u for u in rows.loc[originals, "trial_uid"].dropna().astype(str)}
        reps = _ok(rows[rows[REPLICATE_OF].astype("string").isin(uids).fillna(False).to_numpy(dtype=bool)])
        order = [c for c in ("replicate", "seed") if c in reps.columns]
        out += list(reps.sort_values(order, kind="stable").index if order else reps.index)
        if "study" in rows.columns and "seed" in rows.columns:
            tags = {f"{BASELINE_REPLICATE}:{rows.at[i, 'study']}" for i in originals if is_default_ce(rows.loc[i])}
            shared = _ok(rows[rows[REPLICATE_OF].astype("string").isin(tags).fillna(False).to_numpy(dtype=bool)])
            shared = shared[~shared["seed"].isin(set(rows.loc[out, "seed"]))]
            shared = shared.sort_values([c for c in ("replicate", "seed") if c in shared.columns], kind="stable")
            out += list(shared.drop_duplicates("seed").index)
    return pd.Index(out)


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df
