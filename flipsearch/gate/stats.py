"""The release gate's statistics: exact binomial bounds and tests, nothing approximate.

Pure NumPy/SciPy on counts, so a reviewer can check every number by hand (docs/METHODS.md,
"Release gate"). α = 1 − confidence throughout.

**Rates** (NFR, BR, a critical NFR, a class's BR): k events among n trials. The one-sided
exact Clopper–Pearson upper bound at confidence 1 − α is

    U(k, n) = Beta⁻¹(1 − α; k + 1, n − k)   (k < n),    U(n, n) = 1,

the largest rate p whose P(Bin(n, p) ≤ k) is still above α. A rule "rate ≤ t" passes when
U ≤ t: the data show, at the confidence, that the true rate is at most t. By the
beta–binomial identity P(Bin(n, p) ≤ k) = 1 − I_p(k + 1, n − k), U ≤ t exactly when the
one-sided exact binomial test of H0: rate ≥ t has p = P(Bin(n, t) ≤ k) ≤ α (`rate_p_value`).
A threshold of 0 is a hard rule (k must be 0): no finite sample bounds a rate by 0.

**Accuracy change** (paired: both models on the same samples). Only the discordant pairs
carry information: b = negative flips (M1 right, M2 wrong), c = positive flips; with
m = b + c, the gain is Δ = (c − b) / n. Given m, exact McNemar: c ~ Bin(m, π) with π = 1/2
when the models are equally accurate. One-sided p-values

    p_regression  = P(Bin(m, ½) ≤ c),     p_improvement = P(Bin(m, ½) ≥ c)

give the four-way verdict at α: significant improvement (p_improvement ≤ α), significant
regression (p_regression ≤ α), else worse but within noise (c < b) or no significant change.
A minimum gain g is tested the same way: Δ ≥ g means π ≥ π_g = (1 + g·n/m) / 2, and the
rule fails when P(Bin(m, π_g) ≤ c) ≤ α (the data show the gain is below g); g = 0 is
exactly "no significant regression". The matching bound is the upper confidence bound of
Δ given m, (m/n)·(2·U(c, m) − 1): the rule fails when it is below g.

**Per-class rules** test one rate per class (classes with n > 0): K claims "class c's rate
≤ t" at once. Holm's step-down keeps the probability of passing *any* class whose true rate
exceeds t at most α: sort the per-class p-values p_(1) ≤ … ≤ p_(K); class (i) passes when
p_(j) ≤ α / (K − j + 1) for every j ≤ i. Its Holm-adjusted p-value is
max_{j ≤ i} min(1, (K − j + 1)·p_(j)); its printed bound is U at confidence
1 − α / (K − i + 1). (For the all-classes verdict alone an intersection–union argument needs
no correction, so Holm only makes the gate stricter; it is what makes each class's own
pass trustworthy.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def upper_bound(k: int, n: int, confidence: float) -> float:
    """One-sided exact (Clopper–Pearson) upper bound of a rate k/n at `confidence`
    (1.0 when n = 0: no sample bounds anything)."""
    k, n = int(k), int(n)
    _check_counts(k, n)
    if n == 0 or k >= n:
        return 1.0
    return float(stats.beta.ppf(confidence, k + 1, n - k))


def lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided exact (Clopper–Pearson) lower bound of a rate k/n at `confidence`."""
    k, n = int(k), int(n)
    _check_counts(k, n)
    if n == 0 or k == 0:
        return 0.0
    return float(stats.beta.ppf(1.0 - confidence, k, n - k + 1))


def rate_p_value(k: int, n: int, threshold: float) -> float:
    """Exact one-sided p-value of H0 "rate ≥ threshold" given k of n: P(Bin(n, t) ≤ k)."""
    k, n = int(k), int(n)
    _check_counts(k, n)
    if n == 0:
        return 1.0
    return float(stats.binom.cdf(k, n, threshold))


def _check_counts(k: int, n: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"counts must satisfy 0 <= k <= n, got k={k}, n={n}")


@dataclass(frozen=True)
class RateTest:
    """A rate rule's statistics: k of n, its estimate, bound, p-value and outcome."""

    k: int
    n: int
    threshold: float
    confidence: float
    bound: float           # upper bound at `confidence`
    p_value: float         # P(Bin(n, threshold) <= k)
    passed: bool

    @property
    def estimate(self) -> float:
        return self.k / self.n if self.n else float("nan")


def rate_test(k: int, n: int, threshold: float, confidence: float) -> RateTest:
    """Does k of n show the rate is at most `threshold`? (module doc: U ≤ t; t = 0: k = 0)."""
    bound = upper_bound(k, n, confidence)
    if threshold <= 0:
        return RateTest(int(k), int(n), threshold, confidence, bound, 0.0 if k == 0 else 1.0, n > 0 and k == 0)
    p = rate_p_value(k, n, threshold)
    return RateTest(int(k), int(n), threshold, confidence, bound, p, n > 0 and bound <= threshold)


VERDICTS = ("significant improvement", "no significant change", "worse but within noise", "significant regression")


@dataclass(frozen=True)
class McNemar:
    """The exact McNemar test of an accuracy change on n paired samples: b negative and c
    positive flips (module doc)."""

    b: int
    c: int
    n: int
    confidence: float
    p_regression: float    # P(Bin(b + c, 1/2) <= c)
    p_improvement: float   # P(Bin(b + c, 1/2) >= c)
    p_two_sided: float     # scipy.stats.binomtest(c, b + c, 0.5).pvalue, for reference

    @property
    def gain(self) -> float:
        return (self.c - self.b) / self.n if self.n else float("nan")

    @property
    def verdict(self) -> str:
        alpha = 1.0 - self.confidence
        if self.p_improvement <= alpha:
            return VERDICTS[0]
        if self.p_regression <= alpha:
            return VERDICTS[3]
        return VERDICTS[2] if self.c < self.b else VERDICTS[1]

    def gain_upper_bound(self) -> float:
        """Upper confidence bound of the gain given the discordant pairs: (m/n)(2U(c, m) − 1)."""
        m = self.b + self.c
        if self.n == 0:
            return float("nan")
        return m / self.n * (2.0 * upper_bound(self.c, m, self.confidence) - 1.0) if m else 0.0

    def gain_p_value(self, min_gain: float) -> float:
        """Exact one-sided p-value of H0 "gain ≥ min_gain" given the discordant pairs:
        P(Bin(m, π_g) ≤ c), π_g = (1 + g·n/m)/2 (1 when π_g < 0, 0 when π_g > 1)."""
        m = self.b + self.c
        if m == 0:  # no discordant pair: the gain is exactly 0
            return 0.0 if min_gain > 0 else 1.0
        pi = (1.0 + min_gain * self.n / m) / 2.0
        if pi > 1.0:
            return 0.0
        if pi <= 0.0:
            return 1.0
        return float(stats.binom.cdf(self.c, m, pi))


def mcnemar(b: int, c: int, n: int, confidence: float) -> McNemar:
    """Exact McNemar on b negative and c positive flips among n paired samples."""
    b, c, n = int(b), int(c), int(n)
    if b < 0 or c < 0 or b + c > n:
        raise ValueError(f"flip counts must satisfy 0 <= b, c and b + c <= n, got b={b}, c={c}, n={n}")
    m = b + c
    if m == 0:
        return McNemar(b, c, n, confidence, 1.0, 1.0, 1.0)
    return McNemar(b, c, n, confidence, float(stats.binom.cdf(c, m, 0.5)), float(stats.binom.sf(c - 1, m, 0.5)),
                   float(stats.binomtest(c, m, 0.5).pvalue))


@dataclass(frozen=True)
class HolmResult:
    """Holm's step-down over K p-values: per input (in input order) whether it is
    rejected, its adjusted p-value, and the level α/(K − rank + 1) it was compared with."""

    rejected: np.ndarray
    adjusted: np.ndarray
    levels: np.ndarray


def holm(p_values, alpha: float) -> HolmResult:
    """Holm (1979) step-down at family-wise level `alpha` (module doc)."""
    p = np.asarray(p_values, dtype=np.float64)
    k = p.size
    order = np.argsort(p, kind="stable")
    factors = k - np.arange(k)                         # K, K-1, ..., 1 for ranks 1..K
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, factors * p[order]))
    rejected_sorted = np.cumprod(p[order] <= alpha / factors).astype(bool)
    rejected, adjusted, levels = np.zeros(k, bool), np.zeros(k), np.zeros(k)
    rejected[order], adjusted[order], levels[order] = rejected_sorted, adjusted_sorted, alpha / factors
    return HolmResult(rejected, adjusted, levels)


__all__ = ["upper_bound", "lower_bound", "rate_p_value", "rate_test", "RateTest", "mcnemar", "McNemar",
           "VERDICTS", "holm", "HolmResult"]
