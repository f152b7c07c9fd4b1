"""What a method must beat in one scenario: M1 itself, plain retraining (`ce`) and the
noise floor of flips.

- M1's accuracy: `accuracy_old` (or the matching variant) averaged over the ok rows; it is
  the same for every trial of a seed, so across seeds it is a mean.
- The `ce` baseline is defined, not chosen: the `ce` method with its default
  hyperparameters (`init=old`: fine-tune M1 with plain cross-entropy) on the scenario's
  training recipe. Its runs are the search trials of exactly that configuration and the
  replicate runs the sweep made of it (`replicate_of = "baseline:<study>"`, other seeds),
  one run per seed (a sampler repeating the point at the same seed adds no spread).
  `Baseline.source` says which of the two provided it; without either there is no
  baseline and the report says so.
- The noise floor: two CE trainings that differ only in the seed already disagree on some
  samples (METHODS.md §2). The floor is the baseline's NFR over its seeds: [min, max],
  mean ± std and the 95 % t-interval. One seed gives no spread; `--replicates 3` adds
  three more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import base_metric
from .configs import hparams_of
from .stats import Stat, metric_bounds, seed_stat, stats_of

BASELINE_METHOD = "ce"
BASELINE_REPLICATE = "baseline"    # replicate_of of the baseline's replicates: "baseline:<study>"
# Metrics whose seed-to-seed spread under `ce` is the noise floor.
NOISE_METRICS = ("nfr",)


@dataclass(frozen=True)
class Band:
    """A metric's spread over a baseline's runs (one per seed)."""

    metric: str
    low: float
    mean: float
    high: float
    n: int
    stat: Stat | None = None
    seeds: tuple[int, ...] = ()

    def to_json(self) -> dict:
        out = {"metric": self.metric, "low": self.low, "mean": self.mean, "high": self.high, "runs": self.n,
               "seeds": list(self.seeds)}
        if self.stat is not None:
            out.update(std=self.stat.to_json()["std"], ci95=self.stat.to_json()["ci95"])
        return out


@dataclass
class Baseline:
    """The scenario's `ce` baseline: its runs (test values under plain names; `val_runs`
    the same rows' validation values), where they come from, and their statistics."""

    runs: pd.DataFrame
    val_runs: pd.DataFrame
    source: str                                      # "search", "replicates", "search+replicates"
    test: dict[str, Stat] = field(default_factory=dict)
    val: dict[str, Stat] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.runs["seed"]] if "seed" in self.runs.columns else []

    @property
    def hparams(self) -> dict:
        return hparams_of(self.runs.iloc[0]) if len(self.runs) else {}

    @property
    def trial_numbers(self) -> list[int]:
        search = self.runs[self.runs["replicate_of"].isna()] if "replicate_of" in self.runs else self.runs
        return [int(t) for t in search["trial_number"]] if "trial_number" in search else []

    def mean_row(self, which: str = "test") -> pd.Series:
        """A row of the means (test or validation) with the configuration columns of the first run."""
        stats = self.test if which == "test" else self.val
        row = self.runs.iloc[0].copy()
        for m, s in stats.items():
            row[m] = s.mean
        return row

    def describe(self) -> str:
        """'search trial #3 (seed 0) and 2 replicate runs (seeds 1, 2)'."""
        parts = []
        if "replicate_of" in self.runs.columns:
            search = self.runs[self.runs["replicate_of"].isna()]
            reps = self.runs[self.runs["replicate_of"].notna()]
        else:
            search, reps = self.runs, self.runs.iloc[0:0]
        if len(search):
            trials = ", ".join(f"#{int(t)}" for t in search["trial_number"])
            seeds = ", ".join(str(int(s)) for s in search["seed"])
            parts.append(f"search trial{'s' if len(search) > 1 else ''} {trials} (seed{'s' if len(search) > 1 else ''}"
                         f" {seeds})")
        if len(reps):
            seeds = ", ".join(str(int(s)) for s in reps["seed"])
            parts.append(f"{len(reps)} replicate run{'s' if len(reps) > 1 else ''} (seed{'s' if len(reps) > 1 else ''}"
                         f" {seeds})")
        return " and ".join(parts)


def m1_metric(metric: str) -> str | None:
    """The M1 counterpart of an M2 metric (accuracy_new -> accuracy_old, critical_er_new ->
    critical_er_old), or None when the metric has none."""
    base = base_metric(metric)
    pairs = {"accuracy_new": "accuracy_old", "er_new": "er_old"}
    if base not in pairs:
        return None
    return metric.replace(base, pairs[base], 1)


def m1_value(ok_rows: pd.DataFrame, metric: str) -> float | None:
    """M1's value of the counterpart of `metric` (mean over ok rows), or None."""
    old = m1_metric(metric)
    if old is None or old not in ok_rows.columns or len(ok_rows) == 0:
        return None
    v = ok_rows[old].to_numpy(dtype=float, na_value=np.nan)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def is_default_ce(row: pd.Series) -> bool:
    """Whether `row` ran the scenario's ce baseline (`flipsearch.baseline`: ce at its defaults on
    the scenario's own update recipe, once the report marked its rows from the sweep's templates)."""
    from ..baseline import is_baseline

    return str(row.get("method")) == BASELINE_METHOD and is_baseline(row, hparams_of(row))


def find_baseline(test_rows: pd.DataFrame, val_rows: pd.DataFrame, study: str | None,
                  metrics) -> Baseline | None:
    """The scenario's `ce` baseline among its rows (`test_rows` / `val_rows`: the same rows,
    test and validation values), or None when neither the search nor the replicates ran it."""
    ok = test_rows[test_rows["status"] == "ok"] if "status" in test_rows.columns else test_rows
    if len(ok) == 0 or "method" not in ok.columns:
        return None
    rep_of = ok["replicate_of"] if "replicate_of" in ok.columns else pd.Series(None, index=ok.index, dtype=object)
    in_search = rep_of.isna() & ok.apply(is_default_ce, axis=1).astype(bool)
    tag = f"{BASELINE_REPLICATE}:{study}" if study else None
    replicated = rep_of.astype("string").fillna("").str.startswith(f"{BASELINE_REPLICATE}:")
    if tag is not None:
        replicated &= rep_of.astype("string").fillna("") == tag
    runs = ok[in_search | replicated]
    if len(runs) == 0:
        return None
    order = [c for c in ("replicate", "trial_number") if c in runs.columns]
    runs = runs.assign(_rep=runs["replicate_of"].notna() if "replicate_of" in runs else False)
    runs = runs.sort_values(["_rep", *order], kind="stable", na_position="first").drop(columns="_rep")
    if "seed" in runs.columns:
        runs = runs.drop_duplicates("seed", keep="first")            # one run per seed
    source = "+".join(s for s, m in (("search", in_search), ("replicates", replicated)) if m.loc[runs.index].any())
    val = val_rows.loc[runs.index]
    return Baseline(runs, val, source, stats_of(runs, metrics), stats_of(val, metrics))


def noise_floor(baseline: Baseline | None, metric: str) -> Band | None:
    """The spread of `metric` (test values) over the baseline's seeds, or None."""
    if baseline is None or metric not in baseline.runs.columns:
        return None
    runs = baseline.runs[baseline.runs[metric].notna()]
    if len(runs) == 0:
        return None
    v = runs[metric].to_numpy(dtype=float)
    seeds = tuple(int(s) for s in runs["seed"]) if "seed" in runs.columns else ()
    return Band(metric, float(v.min()), float(v.mean()), float(v.max()), int(v.size),
                seed_stat(v, metric_bounds(metric)), seeds)


def noise_metrics(metrics) -> list[str]:
    """Those of `metrics` whose base is a noise-floor metric (nfr and its variants)."""
    return [m for m in metrics if base_metric(m) in NOISE_METRICS]
