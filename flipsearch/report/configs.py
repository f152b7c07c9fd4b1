"""Configurations, seeds and scenarios in a sweep's results frame.

A *scenario* is one (dataset, arrangement, model) — one Optuna study, named by the row's
`study` column. A *configuration* is everything that determines a trial except its seed:
the scenario, `old_fraction`, `critical_classes`, the method, every `hp_*` column and every
training-recipe column (`m1_*`, `update_*`). Rows of one configuration that differ only in
`seed` are repeats; `aggregate_seeds` turns them into one row whose metrics are the mean
over seeds, with the sample standard deviation (ddof = 1, NaN for a single seed) beside it
as `<metric>_std`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import is_known_metric

SCENARIO_COLUMNS = ("dataset", "arrangement", "model")
# Columns besides hp_*/m1_*/update_* that belong to a configuration.
_CONFIG_EXTRA = ("old_fraction", "critical_classes", "method")
RECIPE_PREFIXES = ("m1_", "update_")
STD_SUFFIX = "_std"
CONFIG_KEY = "config_key"


def scenario_keys(df: pd.DataFrame) -> pd.Series:
    """Per row, its scenario's name: the `study` column when present (the sweep's study name
    `<dataset>__<arrangement>__<model>`), otherwise built the same way."""
    if "study" in df.columns:
        return df["study"].astype(str)
    parts = [df[c].astype(str) if c in df.columns else pd.Series("default", index=df.index)
             for c in SCENARIO_COLUMNS]
    return (parts[0] + "__" + parts[1] + "__" + parts[2]).str.replace(":", "_").str.replace("/", "_")


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The columns of `df` that are metrics (`accuracy_new`, `nfr_old_classes`, `critical_br`, ...)."""
    return [c for c in df.columns if is_known_metric(str(c))]


def hp_columns(df: pd.DataFrame) -> list[str]:
    """The hyperparameter columns (`hp_*`) of a results frame."""
    return [c for c in df.columns if str(c).startswith("hp_")]


def config_columns(df: pd.DataFrame) -> list[str]:
    """Every column that identifies a configuration (seed excluded)."""
    cols = [c for c in SCENARIO_COLUMNS + _CONFIG_EXTRA if c in df.columns]
    cols += hp_columns(df)
    cols += [c for c in df.columns if str(c).startswith(RECIPE_PREFIXES)]
    return cols


def config_keys(df: pd.DataFrame) -> pd.Series:
    """One string per row naming its configuration; equal strings = same configuration.
    A missing value (a hyperparameter the method does not have) reads as '<na>'."""
    cols = config_columns(df)
    if not cols:
        return pd.Series("", index=df.index, dtype=str)
    key = df[cols[0]].astype("string").fillna("<na>")
    for c in cols[1:]:
        key = key + "\x1f" + df[c].astype("string").fillna("<na>")
    return key.astype(str)


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration over the rows of `df` whose status is "ok".

    The row is the configuration's lowest-seed trial (so its identity columns, `seed` and
    `trial_number` name a real run) with every metric replaced by the mean over the
    configuration's runs; `<metric>_std` holds the sample standard deviation (ddof 1), `n_runs`
    the number of runs (one per seed, unless a sampler repeated a point) and `seeds` the
    distinct seeds as "0,1,2", `config_key` its `config_keys` string. The index is the
    representative row's.
    """
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if len(ok) == 0:
        return ok.assign(n_runs=pd.Series(dtype=int), seeds=pd.Series(dtype=str), config_key=pd.Series(dtype=str))
    keys = config_keys(ok)
    order = [c for c in ("seed", "trial_number") if c in ok.columns]
    ranked = ok.assign(_key=keys).sort_values(order, kind="stable") if order else ok.assign(_key=keys)
    rep = ranked.drop_duplicates("_key", keep="first")
    metrics = metric_columns(ok)
    grouped = ranked.groupby("_key", sort=False)
    means = grouped[metrics].mean().reindex(rep["_key"])
    stds = grouped[metrics].std(ddof=1).reindex(rep["_key"])
    out = rep.rename(columns={"_key": CONFIG_KEY}).copy()
    out[metrics] = means.to_numpy()
    std_frame = pd.DataFrame(stds.to_numpy(), index=out.index, columns=[m + STD_SUFFIX for m in metrics])
    seeds = (grouped["seed"].agg(lambda s: ",".join(str(int(v)) for v in sorted(set(s))))
             if "seed" in ok.columns else grouped.size().map(lambda _: ""))
    extra = pd.DataFrame({"n_runs": grouped.size().reindex(rep["_key"]).to_numpy(),
                          "seeds": seeds.reindex(rep["_key"]).to_numpy()}, index=out.index)
    out = pd.concat([out, std_frame, extra], axis=1)
    return out.sort_index()


def is_missing(value: Any) -> bool:
    """None, NaN or pandas NA (scalars only)."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def _typed(value: Any, kind: str) -> Any:
    """A Parquet cell as the Python value of a hyperparameter of `kind`."""
    if hasattr(value, "item"):
        value = value.item()                             # numpy scalar -> Python
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)
    return value


def hparams_of(row: pd.Series) -> dict[str, Any]:
    """The hyperparameters of `row`'s method, from its `hp_*` cells, typed by the method's
    schema and in schema order. A method outside the registry gets every non-missing hp_."""
    from ..methods import methods

    registry = methods()
    method = registry.get(str(row.get("method")))
    if method is None:
        return {str(c)[3:]: _typed(row[c], "") for c in row.index
                if str(c).startswith("hp_") and not is_missing(row[c])}
    out = {}
    for h in method.hparams:
        value = row.get(f"hp_{h.name}")
        if not is_missing(value):
            out[h.name] = _typed(value, h.kind)
    return out


def searched_or_changed(row: pd.Series, searched: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters worth showing for `row`: those the sweep varied for its method
    (`searched`: sweep.json's `methods` block, {param: [kind, args]}; kind "fixed" does not
    vary) and those not at the method's default, and the update-recipe settings its block
    searched (`update.lr`, read from the row's `update_lr`)."""
    from ..methods import methods

    hp = hparams_of(row)
    method = methods().get(str(row.get("method")))
    defaults = {h.name: h.default for h in method.hparams} if method else {}
    specs = (searched or {}).get(str(row.get("method"))) or {}
    keep = {p for p, spec in specs.items() if not (isinstance(spec, (list, tuple)) and spec and spec[0] == "fixed")}
    out = {k: v for k, v in hp.items() if k in keep or k not in defaults or v != defaults[k]}
    # the update-recipe settings the method's block searched (`update.lr`: the row's update_lr)
    out.update({p: row[f"update_{p[7:]}"] for p in sorted(keep) if p.startswith("update.")
                and f"update_{p[7:]}" in row.index and not is_missing(row[f"update_{p[7:]}"])})
    return out
