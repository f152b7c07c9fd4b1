"""How metric values and names are shown: percent for rates, labels for axes and headers.

Rates in [0, 1] (accuracy, NFR, BR, BEC, ...) and `accuracy_gain` (a difference of two
accuracies, so percentage points) are shown ×100; ratios (`accuracy_ratio`, `nfr_rel`) and
counts as they are.
"""

from __future__ import annotations

import math
from typing import Any

from ..metrics import CRITICAL_PREFIX, OLD_CLASSES_SUFFIX, base_metric, metric_info

# Short column headers for the metrics a report shows most.
_SHORT = {"accuracy_old": "acc M1", "accuracy_new": "acc M2", "accuracy_ratio": "acc ratio",
          "accuracy_gain": "acc gain", "nfr": "NFR", "pfr": "PFR", "br": "BR", "btc": "BTC", "bec": "BEC",
          "bec_n1": "BEC(N1)", "nfr_rel": "rel NFR", "er_old": "err M1", "er_new": "err M2"}


def is_percent(metric: str) -> bool:
    base = base_metric(metric)
    if base is None:
        return False
    return metric_info(metric).unit_interval or base == "accuracy_gain"


def _variant(metric: str) -> tuple[str, str, str]:
    """(prefix, base, suffix) words of a metric variant, e.g. critical_nfr -> ('critical ', 'nfr', '')."""
    base = base_metric(metric) or metric
    prefix = "critical " if metric.startswith(CRITICAL_PREFIX) and metric != base else ""
    suffix = " (old classes)" if metric.endswith(OLD_CLASSES_SUFFIX) and metric != base else ""
    return prefix, base, suffix


def short(metric: str) -> str:
    """A short name: 'NFR', 'acc ratio', 'critical BR', 'NFR (old classes)'."""
    prefix, base, suffix = _variant(metric)
    return prefix + _SHORT.get(base, base) + suffix


def header(metric: str) -> str:
    """A short column header with its unit: 'NFR %', 'acc ratio', 'critical BR %'."""
    return short(metric) + (" %" if is_percent(metric) else "")


def axis_label(metric: str, direction: str | None = None, compact: bool = False) -> str:
    """An axis label: 'negative flip rate — nfr (%), lower is better' ('nfr (%), lower is
    better' when `compact`)."""
    prefix, base, suffix = _variant(metric)
    try:
        meaning = metric_info(metric).meaning.split(":")[0]
    except KeyError:
        meaning = base
    unit = " (%)" if is_percent(metric) else ""
    better = {"max": ", higher is better", "min": ", lower is better"}.get(direction or "", "")
    return f"{metric}{unit}{better}" if compact else f"{prefix}{meaning}{suffix} — {metric}{unit}{better}"


def fmt(metric: str, value: Any, std: Any = None) -> str:
    """'1.23' (percent) or '0.9871' (ratio), with ' ± s' when `std` is a number; '—' for NaN."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    scale, spec = (100.0, ".2f") if is_percent(metric) else (1.0, ".4f")
    text = format(v * scale, spec)
    try:
        s = float(std)
    except (TypeError, ValueError):
        return text
    return text if math.isnan(s) else f"{text} ± {format(s * scale, spec)}"


def fmt_unit(metric: str, value: Any, std: Any = None) -> str:
    """`fmt` followed by ' %' for a percent metric: '1.23 ± 0.10 %'."""
    text = fmt(metric, value, std)
    return text + (" %" if is_percent(metric) and text != "—" else "")


def fmt_hparams(hp: dict[str, Any]) -> str:
    """'lambda_c=0.5, variant=new-error' (floats to 4 significant digits)."""
    parts = []
    for k, v in hp.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float):
            v = format(v, ".4g")
        parts.append(f"{k}={v}")
    return ", ".join(parts) or "defaults"
