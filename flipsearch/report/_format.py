"""How metric values and names are shown: percent for rates, labels for axes and headers.

Rates in [0, 1] (accuracy, NFR, BR, BEC, ...) and `accuracy_gain` (a difference of two
accuracies, so percentage points) are shown ×100; ratios (`accuracy_ratio`, `nfr_rel`) and
counts as they are.

Every rate comes with its count and denominator when the row has them (`rate_of`: from
`metrics.RATE_COUNTS`, and for btc, accuracy_gain, accuracy_ratio and nfr_rel the same
formulas as `flipsearch.audit`); `fmt_rate` writes one run as the audit does,
'0.37 % (2 / 539)', and `counts_text` several runs' counts, '2, 3, 1 / 539'.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from ..audit.core import Rate, format_metric
from ..metrics import CRITICAL_PREFIX, OLD_CLASSES_SUFFIX, RATE_COUNTS, base_metric, metric_info

def esc(text: Any) -> str:
    """`text` escaped for HTML (text and attribute values)."""
    return html.escape(str(text))


def safe_name(text: str) -> str:
    """A file-name- and HTML-id-safe form of a scenario key (letters, digits, . _ - only)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(text))


def int_text(v: Any, missing: str = "") -> str:
    """An integer cell as text (`missing` for None/NaN), e.g. a trial number or a seed."""
    import pandas as pd

    return missing if v is None or pd.isna(v) else str(int(v))


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


# Rates RATE_COUNTS does not list, as (numerator, denominator) functions of the count columns
# (the formulas of flipsearch.audit.core._rates).
_DERIVED = {
    "btc": lambda c: (c["n_correct_old"] - c["n_negative_flips"], c["n_correct_old"]),
    "accuracy_gain": lambda c: (c["n_correct_new"] - c["n_correct_old"], c["n"]),
    "accuracy_ratio": lambda c: (c["n_correct_old"], c["n_correct_new"]),
    "nfr_rel": lambda c: (c["n_negative_flips"], c["n_correct_old"] * c["n_errors_new"] / c["n"] if c["n"] else 0),
}
_COUNTS = ("n", "n_correct_old", "n_correct_new", "n_errors_old", "n_errors_new", "n_negative_flips",
           "n_positive_flips", "n_both_wrong")


def _variant_column(metric: str, count: str) -> str:
    prefix, base, suffix = _variant(metric)
    return (CRITICAL_PREFIX if prefix else "") + count + (OLD_CLASSES_SUFFIX if suffix else "")


def rate_of(row: Any, metric: str) -> Rate | None:
    """`metric` of `row` (a dict or pandas row whose metric names hold the values to show:
    test or validation) as an audit `Rate` of its counts, or None when it is no rate or
    the row lacks the counts."""
    base = base_metric(metric)
    if base is None or (base not in RATE_COUNTS and base not in _DERIVED):
        return None
    need = RATE_COUNTS[base] if base in RATE_COUNTS else _COUNTS
    counts = {}
    for c in need:
        try:
            v = float(row[_variant_column(metric, c)])
        except (KeyError, TypeError, ValueError):
            return None
        if math.isnan(v):
            return None
        counts[c] = v
    num, den = (counts[need[0]], counts[need[1]]) if base in RATE_COUNTS else _DERIVED[base](counts)
    whole = lambda x: int(x) if float(x).is_integer() else x  # noqa: E731
    return Rate(whole(num), whole(den))


def count_text(row: Any, metric: str) -> str:
    """'2 / 539' for a rate of one run ('' when there are no counts); nfr_rel's denominator
    is the expected number of flips, '2 / 3.85 expected'."""
    r = rate_of(row, metric)
    if r is None:
        return ""
    if base_metric(metric) == "nfr_rel":
        return f"{_num(r.count)} / {float(r.denominator):.2f} expected"
    return f"{_num(r.count)} / {_num(r.denominator)}"


def _num(x: Any) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.2f}"


def fmt_rate(row: Any, metric: str) -> str:
    """One run's value with its counts: '0.37 % (2 / 539)' (the audit's `format_metric`),
    or `fmt_unit` when the row has no counts for it."""
    r = rate_of(row, metric)
    if r is None or math.isnan(r.value):
        return fmt_unit(metric, row[metric] if metric in row else float("nan"))
    return format_metric(metric, r)


def counts_text(rows, metric: str) -> str:
    """The counts of `metric` over several runs (a frame): '2, 3, 1 / 539' when the
    denominator is the same in every run, else '2 / 539, 3 / 530'; '' without counts."""
    texts = [(rate_of(r, metric)) for _, r in rows.iterrows()]
    if not texts or any(t is None for t in texts):
        return ""
    if len(texts) == 1:
        return count_text(rows.iloc[0], metric)
    dens = {float(t.denominator) for t in texts}
    if len(dens) == 1 and base_metric(metric) != "nfr_rel":
        return ", ".join(_num(t.count) for t in texts) + f" / {_num(texts[0].denominator)}"
    return ", ".join(count_text(r, metric) for _, r in rows.iterrows())
