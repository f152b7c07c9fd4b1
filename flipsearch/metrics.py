"""Flip metrics: how an update M1 -> M2 changed which test samples are classified right.

Pure functions on integer label vectors (numpy arrays or torch tensors). With
P1/N1 = the samples M1 classifies correctly/incorrectly, P2/N2 the same for M2 and
n = the number of test samples (METHODS.md §2):

    accuracy_old   = n(P1)/n                 accuracy_new = n(P2)/n
    er_old         = n(N1)/n                 er_new       = n(N2)/n
    nfr            = n(P1∩N2)/n              (negative flip rate, PCT eq. 2)
    pfr            = n(N1∩P2)/n              (positive flip rate)
    br             = n(P1∩N2)/n(P1)          (break rate, NeuRecover / paper 1)
    btc            = n(P1∩P2)/n(P1) = 1 − br (backward trust compatibility, BCML)
    bec            = n(N1∩N2)/n(N2)          (backward error compatibility as paper 1 prints it)
    bec_n1         = n(N1∩N2)/n(N1)          (BCML 1.4.2's `error_compatibility_score`)
    accuracy_ratio = acc_old/acc_new         (paper 1's "accuracy improvement rate", as printed)
    accuracy_gain  = acc_new − acc_old = pfr − nfr
    nfr_rel        = nfr / ((1 − er_old)·er_new)   (relative NFR, PCT eq. 11)

plus the counts `n_negative_flips` = n(P1∩N2), `n_positive_flips` = n(N1∩P2), `n` and the
denominators `n_correct_old` = n(P1), `n_correct_new`, `n_errors_old`, `n_errors_new`,
`n_both_wrong` (`RATE_COUNTS` maps each rate to its numerator and denominator).
Counts are returned as floats holding whole numbers, so every value of the result dict is
a float and a Parquet column never changes type between rows.

A zero denominator gives NaN, never 0 (BCML returns 0, which reads like a real score).
Identities (up to float rounding): nfr = acc_old·(1 − btc), br = 1 − btc, acc_new − acc_old = pfr − nfr.

Variants: with `old_class_mask` every base metric is also computed on the test samples of
the old classes, suffix `_old_classes` (MPT reports NFR there in the class-incremental
arrangement); with `critical_mask` on the critical samples, prefix `critical_`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OLD_CLASSES_SUFFIX = "_old_classes"
CRITICAL_PREFIX = "critical_"


@dataclass(frozen=True)
class MetricInfo:
    """What one base metric means.

    `direction` is the natural optimisation direction ("max", "min") or None when the
    metric is a count or a ratio with no better side. `unit_interval` marks metrics that
    always lie in [0, 1] (their natural hypervolume reference is 0 for max, 1 for min).
    """

    name: str
    meaning: str
    formula: str
    direction: str | None
    unit_interval: bool
    source: str = ""


def _info(name, meaning, formula, direction, unit_interval, source=""):
    return name, MetricInfo(name, meaning, formula, direction, unit_interval, source)


METRICS: dict[str, MetricInfo] = dict([
    _info("accuracy_old", "accuracy of the old model M1", "n(P1)/n", "max", True),
    _info("accuracy_new", "accuracy of the updated model M2", "n(P2)/n", "max", True),
    _info("er_old", "error rate of M1", "n(N1)/n", "min", True),
    _info("er_new", "error rate of M2", "n(N2)/n", "min", True),
    _info("nfr", "negative flip rate: share of samples M1 got right and M2 gets wrong",
          "n(P1∩N2)/n", "min", True, "PCT (Yan et al. 2021) eq. 2"),
    _info("pfr", "positive flip rate: share of samples M1 got wrong and M2 gets right",
          "n(N1∩P2)/n", "max", True),
    _info("br", "break rate: share of M1's correct samples that M2 breaks",
          "n(P1∩N2)/n(P1)", "min", True, "NeuRecover, paper 1"),
    _info("btc", "backward trust compatibility: share of M1's correct samples M2 keeps",
          "n(P1∩P2)/n(P1) = 1 - br", "max", True, "BCML (Srivastava et al. 2020)"),
    _info("bec", "backward error compatibility: share of M2's errors that M1 also made",
          "n(N1∩N2)/n(N2)", "max", True, "paper 1 (as printed)"),
    _info("bec_n1", "backward error compatibility, BCML's variant: share of M1's errors M2 repeats",
          "n(N1∩N2)/n(N1)", "max", True, "BCML 1.4.2 error_compatibility_score"),
    _info("accuracy_ratio", "paper 1's accuracy improvement rate (below 1 when M2 improves)",
          "acc_old/acc_new", None, False, "paper 1 (as printed)"),
    _info("accuracy_gain", "accuracy gained by the update", "acc_new - acc_old = pfr - nfr", "max", False),
    _info("nfr_rel", "relative negative flip rate: nfr over its value for independent errors",
          "nfr / ((1 - er_old) * er_new)", "min", False, "PCT eq. 11, MPT code"),
    _info("n_negative_flips", "number of negative flips", "n(P1∩N2)", None, False),
    _info("n_positive_flips", "number of positive flips", "n(N1∩P2)", None, False),
    _info("n", "number of samples evaluated", "n", None, False),
    _info("n_correct_old", "samples M1 classifies correctly (BR's and BTC's denominator)", "n(P1)", None, False),
    _info("n_correct_new", "samples M2 classifies correctly", "n(P2)", None, False),
    _info("n_errors_old", "samples M1 gets wrong (bec_n1's denominator)", "n(N1)", None, False),
    _info("n_errors_new", "samples M2 gets wrong (BEC's denominator)", "n(N2)", None, False),
    _info("n_both_wrong", "samples both models get wrong", "n(N1∩N2)", None, False),
])

# Each rate's (numerator, denominator) counts, so a report can say "NFR 0.37 % = 2 / 539".
RATE_COUNTS: dict[str, tuple[str, str]] = {
    "accuracy_old": ("n_correct_old", "n"), "accuracy_new": ("n_correct_new", "n"),
    "er_old": ("n_errors_old", "n"), "er_new": ("n_errors_new", "n"),
    "nfr": ("n_negative_flips", "n"), "pfr": ("n_positive_flips", "n"),
    "br": ("n_negative_flips", "n_correct_old"), "bec": ("n_both_wrong", "n_errors_new"),
    "bec_n1": ("n_both_wrong", "n_errors_old"),
}


def metric_names(old_classes: bool = False, critical: bool = False) -> list[str]:
    """Every name `compute_metrics` produces with these masks given, in its order."""
    names = list(METRICS)
    if old_classes:
        names += [m + OLD_CLASSES_SUFFIX for m in METRICS]
    if critical:
        names += [CRITICAL_PREFIX + m for m in METRICS]
    return names


def base_metric(name: str) -> str | None:
    """The base metric behind `name` (strips `critical_` / `_old_classes`), or None if unknown."""
    if name in METRICS:
        return name
    if name.startswith(CRITICAL_PREFIX) and name[len(CRITICAL_PREFIX):] in METRICS:
        return name[len(CRITICAL_PREFIX):]
    if name.endswith(OLD_CLASSES_SUFFIX) and name[: -len(OLD_CLASSES_SUFFIX)] in METRICS:
        return name[: -len(OLD_CLASSES_SUFFIX)]
    return None


def is_known_metric(name: str) -> bool:
    """True for a base metric name and for its `critical_` / `_old_classes` forms."""
    return base_metric(name) is not None


def metric_info(name: str) -> MetricInfo:
    """The `MetricInfo` of `name` or of the base metric it is a variant of (KeyError if unknown)."""
    base = base_metric(name)
    if base is None:
        raise KeyError(name)
    return METRICS[base]


def _as_labels(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{what} must be a 1-D vector of integer class labels, got shape "
                         f"{arr.shape} dtype {arr.dtype} (take argmax of logits first)")
    return arr


def _as_mask(x: Any, n: int, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.bool_ or arr.shape != (n,):
        raise ValueError(f"{what} must be a boolean vector of length {n}, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den != 0 else float("nan")


def _base_metrics(ok_old: np.ndarray, ok_new: np.ndarray) -> dict[str, float]:
    """All base metrics from the per-sample correctness of M1 (`ok_old`) and M2 (`ok_new`)."""
    n = int(ok_old.size)
    p1 = int(ok_old.sum())
    p2 = int(ok_new.sum())
    both_right = int(np.count_nonzero(ok_old & ok_new))
    neg = p1 - both_right                 # P1∩N2
    pos = p2 - both_right                 # N1∩P2
    both_wrong = n - p1 - pos             # N1∩N2
    n1, n2 = n - p1, n - p2
    # Every rate is a ratio of whole counts (no 1 - x), so no rounding error accumulates.
    return {
        "accuracy_old": _div(p1, n),
        "accuracy_new": _div(p2, n),
        "er_old": _div(n1, n),
        "er_new": _div(n2, n),
        "nfr": _div(neg, n),
        "pfr": _div(pos, n),
        "br": _div(neg, p1),
        "btc": _div(both_right, p1),
        "bec": _div(both_wrong, n2),
        "bec_n1": _div(both_wrong, n1),
        "accuracy_ratio": _div(p1, p2),  # (p1/n)/(p2/n)
        "accuracy_gain": _div(p2 - p1, n),
        # nfr / (acc_old · er_new) = (neg/n) / ((p1/n)(n2/n)) = neg·n / (p1·n2)
        "nfr_rel": _div(neg * n, p1 * n2),
        "n_negative_flips": float(neg),
        "n_positive_flips": float(pos),
        "n": float(n),
        "n_correct_old": float(p1),
        "n_correct_new": float(p2),
        "n_errors_old": float(n1),
        "n_errors_new": float(n2),
        "n_both_wrong": float(both_wrong),
    }


def compute_metrics(y, pred_old, pred_new, *, old_class_mask=None, critical_mask=None) -> dict[str, float]:
    """Flip metrics of an update from labels `y` and the two models' predicted labels.

    `y`, `pred_old`, `pred_new`: 1-D integer vectors of equal length (numpy or torch).
    `old_class_mask`: bool vector, True where the sample's label is an old class; adds every
    base metric on that subset with suffix `_old_classes`. `critical_mask`: bool vector of
    critical samples; adds every base metric on that subset with prefix `critical_`.
    An empty subset gives NaN rates and zero counts. Returns {name: float}, names in the
    order of `metric_names(old_classes=..., critical=...)`.
    """
    y = _as_labels(y, "y")
    pred_old = _as_labels(pred_old, "pred_old")
    pred_new = _as_labels(pred_new, "pred_new")
    if not (y.shape == pred_old.shape == pred_new.shape):
        raise ValueError(f"y, pred_old and pred_new differ in length: {y.size}, {pred_old.size}, {pred_new.size}")
    ok_old = pred_old == y
    ok_new = pred_new == y
    out = _base_metrics(ok_old, ok_new)
    if old_class_mask is not None:
        m = _as_mask(old_class_mask, y.size, "old_class_mask")
        out.update({k + OLD_CLASSES_SUFFIX: v for k, v in _base_metrics(ok_old[m], ok_new[m]).items()})
    if critical_mask is not None:
        m = _as_mask(critical_mask, y.size, "critical_mask")
        out.update({CRITICAL_PREFIX + k: v for k, v in _base_metrics(ok_old[m], ok_new[m]).items()})
    return out
