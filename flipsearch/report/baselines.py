"""What a method must beat in one scenario: M1 itself, plain retraining (`ce`) and the
noise floor of flips.

- M1's accuracy: `accuracy_old` (or the matching variant) averaged over the ok rows; it is
  the same for every trial of a seed, so across seeds it is a mean.
- The `ce` baseline: among the scenario's `ce` configurations, the one with the most runs
  (ties: the earliest trial), as its seed-mean row.
- The noise floor: two CE trainings that differ only in the seed already disagree on some
  samples (METHODS.md §2), so the NFR of `ce` varies from seed to seed. The floor is the
  range [min, max] and the mean of the baseline configuration's NFR over its runs; with a
  single run it is that one value. A method whose NFR lies inside the band has not shown
  an improvement over plain retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import base_metric
from .configs import CONFIG_KEY, config_keys

BASELINE_METHOD = "ce"
# Metrics whose seed-to-seed spread under `ce` is drawn as the noise floor.
NOISE_METRICS = ("nfr",)


@dataclass(frozen=True)
class Band:
    """A metric's spread over a baseline's runs."""

    metric: str
    low: float
    mean: float
    high: float
    n: int

    def to_json(self) -> dict:
        return {"metric": self.metric, "low": self.low, "mean": self.mean, "high": self.high, "runs": self.n}


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


def ce_baseline(configs: pd.DataFrame) -> pd.Series | None:
    """The baseline `ce` configuration's seed-mean row (see the module docstring), or None."""
    if len(configs) == 0 or "method" not in configs.columns:
        return None
    ce = configs[configs["method"] == BASELINE_METHOD]
    if len(ce) == 0:
        return None
    order = ["n_runs", "trial_number"] if "trial_number" in ce.columns else ["n_runs"]
    return ce.sort_values(order, ascending=[False] + [True] * (len(order) - 1), kind="stable").iloc[0]


def noise_floor(ok_rows: pd.DataFrame, baseline: pd.Series | None, metric: str) -> Band | None:
    """The spread of `metric` over the runs of the `baseline` configuration, or None."""
    if baseline is None or metric not in ok_rows.columns or len(ok_rows) == 0:
        return None
    ce = ok_rows[ok_rows["method"] == BASELINE_METHOD]
    same = ce[config_keys(ce) == baseline[CONFIG_KEY]]
    v = same[metric].to_numpy(dtype=float, na_value=np.nan)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return None
    return Band(metric, float(v.min()), float(v.mean()), float(v.max()), int(v.size))


def noise_metrics(metrics) -> list[str]:
    """Those of `metrics` whose base is a noise-floor metric (nfr and its variants)."""
    return [m for m in metrics if base_metric(m) in NOISE_METRICS]
