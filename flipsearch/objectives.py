"""Objectives (what a sweep optimises) and constraints (what a result must satisfy).

An objective is a metric name plus a direction: `accuracy_new:max`, `nfr:min`, or just
`nfr` (the metric's natural direction from `flipsearch.metrics.METRICS`). A constraint is
`METRIC OP VALUE` with OP one of <=, >=, <, >, ==, e.g. `nfr<=0.01`, `accuracy_new >= 0.9`
or `nfr<=1%` (a percent is divided by 100).

A constraint's violation is 0 when it is satisfied and the distance to its bound otherwise
(always > 0 then, even at the bound of a strict inequality), which is the sign convention
of Optuna's `constraints_func`: a trial is feasible when every value is <= 0. A missing or
NaN metric value violates every constraint on it, by +inf.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import UsageError
from .metrics import METRICS, is_known_metric, metric_info

DIRECTIONS = ("max", "min")
_DIRECTION_ALIASES = {"max": "max", "maximize": "max", "maximise": "max",
                      "min": "min", "minimize": "min", "minimise": "min"}
OPERATORS = ("<=", ">=", "<", ">", "==")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
# Tolerance of "==": metrics are ratios of counts, so a printed value rarely matches bit for bit.
_EQ_REL_TOL, _EQ_ABS_TOL = 1e-9, 1e-12
# Violation reported when a strict inequality is violated exactly at its bound.
_STRICT_EPS = 1e-12


def _known_metrics_text() -> str:
    return (", ".join(METRICS) + " (each also as critical_NAME and NAME_old_classes)")


@dataclass(frozen=True)
class Objective:
    """Optimise `metric` in `direction` ("max" or "min")."""

    metric: str
    direction: str

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise UsageError(f"objective {self.metric}: direction {self.direction!r} is not allowed; use max or min")

    @property
    def optuna_direction(self) -> str:
        """"maximize" or "minimize", as `optuna.create_study(directions=...)` wants."""
        return "maximize" if self.direction == "max" else "minimize"

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


def parse_objective(text: str) -> Objective:
    """Parse `METRIC[:max|min]` (also maximize/minimize); without a direction the metric's
    natural one is used. Unknown metric or direction -> one-line `UsageError`."""
    if isinstance(text, Objective):
        return text
    raw = str(text)
    metric, sep, direction = raw.strip().partition(":")
    metric, direction = metric.strip(), direction.strip().lower()
    if not is_known_metric(metric):
        raise UsageError(f"unknown metric {metric!r} in objective {raw!r}; known metrics: {_known_metrics_text()}")
    if not sep:
        natural = metric_info(metric).direction
        if natural is None:
            raise UsageError(f"metric {metric!r} has no natural direction; write {metric}:max or {metric}:min")
        return Objective(metric, natural)
    if direction not in _DIRECTION_ALIASES:
        raise UsageError(f"direction {direction!r} in objective {raw!r} is not allowed; write {metric}:max or {metric}:min")
    return Objective(metric, _DIRECTION_ALIASES[direction])


DEFAULT_OBJECTIVES = (Objective("accuracy_new", "max"), Objective("nfr", "min"))


def _value(values: Mapping[str, Any] | Any, metric: str) -> float:
    """values[metric] as a float; NaN when missing or not a number (dicts and pandas rows)."""
    try:
        v = values[metric]
    except (KeyError, IndexError, TypeError):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _format_value(value: float) -> str:
    text = repr(float(value))  # repr round-trips exactly
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Constraint:
    """`metric op value`, e.g. Constraint("nfr", "<=", 0.01)."""

    metric: str
    op: str
    value: float

    def __post_init__(self):
        if self.op not in OPERATORS:
            raise UsageError(f"constraint {self.metric}: operator {self.op!r} is not allowed; use one of {' '.join(OPERATORS)}")
        if not math.isfinite(float(self.value)):
            raise UsageError(f"constraint {self.metric}{self.op}{self.value}: the bound must be a finite number")
        object.__setattr__(self, "value", float(self.value))

    def violation_array(self, values) -> np.ndarray:
        """Vectorised `violation` over an array of this metric's values (e.g. a results column)."""
        v = np.asarray(values, dtype=float)
        if self.op == "==":
            ok = np.isclose(v, self.value, rtol=_EQ_REL_TOL, atol=_EQ_ABS_TOL)
            gap = np.abs(v - self.value)
        else:
            ok = _OPS[self.op](v, self.value)
            gap = v - self.value if self.op in ("<=", "<") else self.value - v
        # A violated strict inequality sits at gap 0 when the value equals the bound: report eps.
        out = np.where(ok, 0.0, np.maximum(gap, _STRICT_EPS))
        return np.where(np.isnan(v), np.inf, out)

    def satisfied_array(self, values) -> np.ndarray:
        """Vectorised `satisfied`: a bool array, False where the value is NaN."""
        return self.violation_array(values) == 0.0

    def violation(self, values: Mapping[str, Any] | Any) -> float:
        """0.0 when satisfied, otherwise how far `values[metric]` (a dict or a pandas row) is
        from the bound (> 0); +inf when the value is missing or NaN. Optuna's convention:
        <= 0 means feasible."""
        return float(self.violation_array([_value(values, self.metric)])[0])

    def satisfied(self, values: Mapping[str, Any] | Any) -> bool:
        """True when `values[metric]` satisfies the constraint; a missing or NaN value never does."""
        return self.violation(values) == 0.0

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{_format_value(self.value)}"


_CONSTRAINT_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<pct>%?)\s*$"
)


def parse_constraint(text: str) -> Constraint:
    """Parse `METRIC OP VALUE` (spaces allowed, ≤/≥ accepted, `1%` = 0.01).
    Malformed text or an unknown metric -> one-line `UsageError`."""
    if isinstance(text, Constraint):
        return text
    raw = str(text)
    m = _CONSTRAINT_RE.match(raw.replace("≤", "<=").replace("≥", ">="))
    if m is None:
        raise UsageError(f"cannot parse constraint {raw!r}: expected METRIC<=VALUE "
                         f"(operators {' '.join(OPERATORS)}), e.g. nfr<=0.01 or accuracy_new>=90%")
    metric = m["metric"]
    if not is_known_metric(metric):
        raise UsageError(f"unknown metric {metric!r} in constraint {raw!r} (expected METRIC<=VALUE); "
                         f"known metrics: {_known_metrics_text()}")
    value = float(m["value"])
    if m["pct"]:
        value /= 100.0
    return Constraint(metric, m["op"], value)


# The prefix of a row's validation metrics (`val_nfr`): the one spelling of it in the package.
SELECTION_PREFIX = "val_"


def selection_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's validation metrics under their plain names (`val_nfr` as `nfr`): what every
    objective and constraint of a search is evaluated on. Test metrics never enter it."""
    n = len(SELECTION_PREFIX)
    return {k[n:]: v for k, v in dict(row).items() if str(k).startswith(SELECTION_PREFIX)}
