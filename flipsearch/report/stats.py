"""Seed spread: mean ± sample std and the 95 % t-interval of a metric over runs that differ
only in their seed.

With n runs x_1..x_n the interval is mean ± t(0.975, n − 1) · s / √n (Student's t, s the
sample standard deviation, ddof 1), clipped to [0, 1] for a metric that cannot leave it
(a rate: with two or three seeds t is large and the raw interval of a small NFR reaches
below 0). One run has no spread: std and interval are NaN and a report says so instead of
printing ± 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided `confidence` quantile of Student's t with `df` degrees of freedom."""
    from scipy.special import stdtrit  # the inverse of Student's t CDF; scipy.stats takes seconds to import

    return float(stdtrit(df, 0.5 + confidence / 2.0))


@dataclass(frozen=True)
class Stat:
    """A metric over runs: mean, sample std, the 95 % t-interval [low, high], n runs and
    the values themselves (in run order)."""

    mean: float
    std: float
    low: float
    high: float
    n: int
    values: tuple[float, ...] = ()

    @property
    def has_spread(self) -> bool:
        return self.n >= 2 and math.isfinite(self.std)

    def overlaps(self, other: "Stat") -> bool:
        """Whether the two 95 % intervals share a point (False when either has no spread)."""
        if not (self.has_spread and other.has_spread):
            return False
        return self.low <= other.high and other.low <= self.high

    def to_json(self) -> dict:
        f = lambda v: None if v is None or not math.isfinite(v) else float(v)  # noqa: E731
        return {"mean": f(self.mean), "std": f(self.std), "ci95": [f(self.low), f(self.high)], "n": self.n,
                "values": [f(v) for v in self.values]}


def seed_stat(values: Iterable[float], bounds: tuple[float, float] | None = None) -> Stat:
    """`Stat` of the finite `values` (NaN ones, e.g. a metric a run lacks, are dropped);
    the interval is clipped to `bounds` when given."""
    v = np.asarray([float(x) for x in values], dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        nan = float("nan")
        return Stat(nan, nan, nan, nan, 0, ())
    mean = float(v.mean())
    if n == 1:
        nan = float("nan")
        return Stat(mean, nan, nan, nan, 1, (mean,))
    std = float(v.std(ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Stat(mean, std, low, high, n, tuple(float(x) for x in v))


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """(0, 1) for a metric that always lies in the unit interval, else None."""
    from ..metrics import base_metric, metric_info

    return (0.0, 1.0) if base_metric(metric) is not None and metric_info(metric).unit_interval else None


def stats_of(rows, metrics: Sequence[str]) -> dict[str, Stat]:
    """{metric: Stat over the rows of the frame `rows`} for those of `metrics` it has."""
    return {m: seed_stat(rows[m].to_numpy(dtype=float, na_value=np.nan), metric_bounds(m))
            for m in metrics if m in rows.columns}
