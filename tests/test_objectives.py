"""Objective and constraint parsing, satisfaction and violation signs."""

import math

import numpy as np
import pandas as pd
import pytest

from flipsearch.errors import UsageError
from flipsearch.objectives import (
    DEFAULT_OBJECTIVES,
    Constraint,
    Objective,
    parse_constraint,
    parse_objective,
)


@pytest.mark.parametrize("text, metric, direction", [
    ("accuracy_new:max", "accuracy_new", "max"),
    ("nfr:min", "nfr", "min"),
    ("nfr", "nfr", "min"),                         # natural direction
    ("accuracy_new", "accuracy_new", "max"),
    (" nfr : MIN ", "nfr", "min"),
    ("accuracy_new:maximize", "accuracy_new", "max"),
    ("nfr:minimise", "nfr", "min"),
    ("critical_nfr", "critical_nfr", "min"),      # variants inherit the direction
    ("nfr_old_classes:min", "nfr_old_classes", "min"),
    ("bec", "bec", "max"),
    ("n_negative_flips:min", "n_negative_flips", "min"),
    ("nfr:max", "nfr", "max"),                    # an explicit direction wins
])
def test_parse_objective(text, metric, direction):
    assert parse_objective(text) == Objective(metric, direction)


def test_objective_round_trip_and_optuna_direction():
    for o in (Objective("accuracy_new", "max"), Objective("critical_br", "min")):
        assert parse_objective(str(o)) == o
    assert str(Objective("nfr", "min")) == "nfr:min"
    assert Objective("nfr", "min").optuna_direction == "minimize"
    assert Objective("accuracy_new", "max").optuna_direction == "maximize"
    assert DEFAULT_OBJECTIVES == (Objective("accuracy_new", "max"), Objective("nfr", "min"))


@pytest.mark.parametrize("text, needle", [
    ("foo:max", "unknown metric 'foo'"),
    ("foo", "unknown metric 'foo'"),
    ("critical_nfr_old_classes:min", "unknown metric"),
    ("nfr:up", "direction 'up'"),
    ("nfr:", "direction ''"),
    ("n_negative_flips", "no natural direction"),   # a count: direction must be given
    ("accuracy_ratio", "no natural direction"),
])
def test_parse_objective_rejects(text, needle):
    with pytest.raises(UsageError) as err:
        parse_objective(text)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg
    if "unknown metric" in needle:
        assert "accuracy_new" in msg and "nfr" in msg   # lists what is allowed


def test_objective_rejects_bad_direction():
    with pytest.raises(UsageError, match="max or min"):
        Objective("nfr", "down")


@pytest.mark.parametrize("text, metric, op, value", [
    ("nfr<=0.01", "nfr", "<=", 0.01),
    ("accuracy_new >= 0.9", "accuracy_new", ">=", 0.9),
    ("  nfr   <   5e-3 ", "nfr", "<", 0.005),
    ("br==0", "br", "==", 0.0),
    ("accuracy_gain>-0.05", "accuracy_gain", ">", -0.05),
    ("nfr<=1%", "nfr", "<=", 0.01),
    ("accuracy_new >= 90 %", "accuracy_new", ">=", 0.9),
    ("accuracy_new≥0.9", "accuracy_new", ">=", 0.9),
    ("critical_nfr≤.001", "critical_nfr", "<=", 0.001),
    ("nfr_old_classes<=2", "nfr_old_classes", "<=", 2.0),
])
def test_parse_constraint(text, metric, op, value):
    c = parse_constraint(text)
    assert (c.metric, c.op) == (metric, op)
    assert c.value == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("text", ["nfr=<0.01", "nfr<=", "<=0.1", "nfr<=abc", "nfr 0.01", "nfr=0.01",
                                  "nfr<=0.01<=0.02", "nfr<=0.01 extra", ""])
def test_parse_constraint_rejects_malformed(text):
    with pytest.raises(UsageError) as err:
        parse_constraint(text)
    msg = str(err.value)
    assert repr(text) in msg and "METRIC<=VALUE" in msg and "\n" not in msg


def test_parse_constraint_rejects_unknown_metric():
    with pytest.raises(UsageError) as err:
        parse_constraint("flips<=0.1")
    msg = str(err.value)
    assert "unknown metric 'flips'" in msg and "'flips<=0.1'" in msg and "METRIC<=VALUE" in msg


def test_constraint_rejects_bad_op_or_bound():
    with pytest.raises(UsageError, match="operator"):
        Constraint("nfr", "=<", 0.1)
    with pytest.raises(UsageError, match="finite"):
        Constraint("nfr", "<=", float("nan"))


@pytest.mark.parametrize("text", ["nfr<=0.01", "accuracy_new>=0.9", "br==0", "nfr<1e-05",
                                  "accuracy_gain>-0.05", "critical_nfr<=0.003", "nfr_rel<=1"])
def test_constraint_str_round_trips(text):
    c = parse_constraint(text)
    assert str(c) == text
    assert parse_constraint(str(c)) == c


def test_percent_prints_as_a_fraction():
    c = parse_constraint("nfr<=1%")
    assert str(c) == "nfr<=0.01" and parse_constraint(str(c)) == c
    assert parse_constraint("nfr<=0.1%") == parse_constraint(str(parse_constraint("nfr<=0.1%")))


def test_violation_signs_upper_bound():
    c = parse_constraint("nfr<=0.01")
    assert c.satisfied({"nfr": 0.005}) and c.violation({"nfr": 0.005}) == 0.0
    assert c.satisfied({"nfr": 0.01}) and c.violation({"nfr": 0.01}) == 0.0   # at the bound
    assert not c.satisfied({"nfr": 0.03})
    assert c.violation({"nfr": 0.03}) == pytest.approx(0.02)


def test_violation_signs_lower_bound():
    c = parse_constraint("accuracy_new>=0.9")
    assert c.violation({"accuracy_new": 0.95}) == 0.0
    assert c.violation({"accuracy_new": 0.85}) == pytest.approx(0.05)
    assert not c.satisfied({"accuracy_new": 0.85})


def test_strict_inequality_at_the_bound_is_a_positive_violation():
    c = parse_constraint("nfr<0.01")
    assert not c.satisfied({"nfr": 0.01})
    assert c.violation({"nfr": 0.01}) > 0                # Optuna: > 0 means infeasible
    assert c.violation({"nfr": 0.0099}) == 0.0
    g = parse_constraint("accuracy_new>0.9")
    assert not g.satisfied({"accuracy_new": 0.9}) and g.violation({"accuracy_new": 0.9}) > 0


def test_equality():
    c = parse_constraint("accuracy_new==0.3")
    assert c.satisfied({"accuracy_new": 3 / 10}) and c.satisfied({"accuracy_new": 0.1 + 0.2})
    assert c.violation({"accuracy_new": 0.25}) == pytest.approx(0.05)
    assert c.violation({"accuracy_new": 0.35}) == pytest.approx(0.05)


def test_nan_or_missing_values_never_satisfy():
    c = parse_constraint("nfr<=0.01")
    assert not c.satisfied({"nfr": float("nan")}) and c.violation({"nfr": float("nan")}) == math.inf
    assert not c.satisfied({"accuracy_new": 0.9}) and c.violation({}) == math.inf
    assert not c.satisfied({"nfr": None}) and c.violation({"nfr": None}) == math.inf


def test_pandas_rows_and_vectorised_form_agree():
    df = pd.DataFrame({"nfr": [0.005, 0.01, 0.03, np.nan], "accuracy_new": [0.9, 0.8, 0.95, 0.7]})
    c = parse_constraint("nfr<=0.01")
    scalar = np.array([c.violation(row) for _, row in df.iterrows()])
    vector = c.violation_array(df["nfr"].to_numpy())
    np.testing.assert_array_equal(scalar, vector)
    np.testing.assert_allclose(vector, [0.0, 0.0, 0.02, np.inf])
    np.testing.assert_array_equal(c.satisfied_array(df["nfr"].to_numpy()), [True, True, False, False])
    assert [c.satisfied(row) for _, row in df.iterrows()] == [True, True, False, False]
