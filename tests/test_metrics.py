"""Flip metrics against answers computed by hand (METHODS.md §2)."""

import math

import numpy as np
import pytest
import torch

from flipsearch.metrics import RATE_COUNTS
from flipsearch.metrics import (
    METRICS,
    base_metric,
    compute_metrics,
    is_known_metric,
    metric_info,
    metric_names,
)

# Ten samples, labels 0..9. Per sample (M1 right?, M2 right?):
#   0-3 both right (RR), 4-5 negative flips (RW), 6 positive flip (WR), 7-9 both wrong (WW).
# Wrong answers differ between the models (y+1 vs y+2): both-wrong does not need equal answers.
Y = np.arange(10)
OLD = np.where(np.arange(10) <= 5, Y, (Y + 1) % 10)
NEW = np.where(np.isin(np.arange(10), [0, 1, 2, 3, 6]), Y, (Y + 2) % 10)

# P1=6, P2=5, N1=4, N2=5, n=10.
EXPECTED = {
    "accuracy_old": 0.6, "accuracy_new": 0.5, "er_old": 0.4, "er_new": 0.5,
    "nfr": 0.2, "pfr": 0.1, "br": 2 / 6, "btc": 4 / 6, "bec": 3 / 5, "bec_n1": 3 / 4,
    "accuracy_ratio": 1.2, "accuracy_gain": -0.1, "nfr_rel": 0.2 / (0.6 * 0.5),
    "n_negative_flips": 2, "n_positive_flips": 1, "n": 10,
}
# Old classes = labels 0..4 -> samples 0-3 RR, 4 RW: P1=5, P2=4, N1=0, N2=1, n=5.
OLD_CLASS_MASK = Y < 5
EXPECTED_OLD_CLASSES = {
    "accuracy_old": 1.0, "accuracy_new": 0.8, "er_old": 0.0, "er_new": 0.2,
    "nfr": 0.2, "pfr": 0.0, "br": 0.2, "btc": 0.8, "bec": 0.0, "bec_n1": math.nan,
    "accuracy_ratio": 1.25, "accuracy_gain": -0.2, "nfr_rel": 0.2 / (1.0 * 0.2),
    "n_negative_flips": 1, "n_positive_flips": 0, "n": 5,
}
# Critical samples 4,5,6,7 -> RW, RW, WR, WW: P1=2, P2=1, N1=2, N2=3, n=4.
CRITICAL_MASK = np.isin(np.arange(10), [4, 5, 6, 7])
EXPECTED_CRITICAL = {
    "accuracy_old": 0.5, "accuracy_new": 0.25, "er_old": 0.5, "er_new": 0.75,
    "nfr": 0.5, "pfr": 0.25, "br": 1.0, "btc": 0.0, "bec": 1 / 3, "bec_n1": 1 / 2,
    "accuracy_ratio": 2.0, "accuracy_gain": -0.25, "nfr_rel": 0.5 / (0.5 * 0.75),
    "n_negative_flips": 2, "n_positive_flips": 1, "n": 4,
}


def assert_metrics(got: dict, expected: dict, prefix: str = "", suffix: str = ""):
    for name, want in expected.items():
        value = got[prefix + name + suffix]
        assert isinstance(value, float), name
        if math.isnan(want):
            assert math.isnan(value), f"{prefix}{name}{suffix} = {value}, expected NaN"
        else:
            assert value == pytest.approx(want, abs=1e-12), f"{prefix}{name}{suffix}"


def test_base_metrics_by_hand():
    got = compute_metrics(Y, OLD, NEW)
    assert list(got) == metric_names()
    assert_metrics(got, EXPECTED)


def test_torch_tensors_give_the_same_answer():
    got = compute_metrics(torch.from_numpy(Y), torch.from_numpy(OLD), torch.from_numpy(NEW),
                          old_class_mask=torch.from_numpy(OLD_CLASS_MASK),
                          critical_mask=torch.from_numpy(CRITICAL_MASK))
    want = compute_metrics(Y, OLD, NEW, old_class_mask=OLD_CLASS_MASK, critical_mask=CRITICAL_MASK)
    assert got.keys() == want.keys()
    assert all(got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])) for k in got)


def test_old_class_variant_by_hand():
    got = compute_metrics(Y, OLD, NEW, old_class_mask=OLD_CLASS_MASK)
    assert list(got) == metric_names(old_classes=True)
    assert_metrics(got, EXPECTED)                      # all-class figures unchanged
    assert_metrics(got, EXPECTED_OLD_CLASSES, suffix="_old_classes")
    assert "critical_nfr" not in got


def test_critical_variant_by_hand():
    got = compute_metrics(Y, OLD, NEW, critical_mask=CRITICAL_MASK)
    assert list(got) == metric_names(critical=True)
    assert_metrics(got, EXPECTED)
    assert_metrics(got, EXPECTED_CRITICAL, prefix="critical_")
    assert "nfr_old_classes" not in got


def test_both_variants_together():
    got = compute_metrics(Y, OLD, NEW, old_class_mask=OLD_CLASS_MASK, critical_mask=CRITICAL_MASK)
    assert list(got) == metric_names(old_classes=True, critical=True)
    assert_metrics(got, EXPECTED_OLD_CLASSES, suffix="_old_classes")
    assert_metrics(got, EXPECTED_CRITICAL, prefix="critical_")


def test_all_old_wrong_gives_nan_break_rate():
    y = np.array([0, 1, 2, 3])
    old = np.array([1, 2, 3, 0])                       # M1 wrong everywhere: P1 empty
    new = np.array([0, 1, 0, 0])                       # M2 right on two
    got = compute_metrics(y, old, new)
    for name in ("br", "btc", "nfr_rel"):              # all divide by n(P1) (nfr_rel: by acc_old)
        assert math.isnan(got[name]), name
    assert got["accuracy_ratio"] == 0.0                # 0 / 0.5, a real value
    assert got["nfr"] == 0.0 and got["pfr"] == 0.5
    assert got["bec"] == 1.0 and got["bec_n1"] == 0.5  # N1∩N2 = 2, N2 = 2, N1 = 4


def test_perfect_new_model_gives_nan_bec():
    y = np.array([0, 1, 2, 3])
    old = np.array([0, 1, 0, 0])
    got = compute_metrics(y, old, y)                   # N2 empty
    assert math.isnan(got["bec"])
    assert math.isnan(got["nfr_rel"])                  # er_new = 0 in the denominator
    assert got["bec_n1"] == 0.0                        # N1∩N2 empty, N1 = 2
    assert got["nfr"] == 0.0 and got["br"] == 0.0 and got["btc"] == 1.0
    assert got["accuracy_gain"] == 0.5 and got["accuracy_ratio"] == 0.5


def test_perfect_old_model_gives_nan_bec_n1():
    y = np.array([0, 1, 2, 3])
    new = np.array([0, 0, 0, 3])
    got = compute_metrics(y, y, new)                   # N1 empty
    assert math.isnan(got["bec_n1"])
    assert got["bec"] == 0.0                           # N2 = 2, none shared with M1
    assert got["br"] == 0.5 and got["nfr"] == 0.5 and got["nfr_rel"] == 1.0


def test_all_new_wrong_gives_nan_accuracy_ratio():
    y = np.array([0, 1, 2])
    got = compute_metrics(y, np.array([0, 1, 0]), np.array([1, 2, 0]))
    assert math.isnan(got["accuracy_ratio"])
    assert got["br"] == 1.0 and got["nfr_rel"] == pytest.approx((2 / 3) / ((2 / 3) * 1.0))


def test_empty_input_and_empty_subset():
    empty = np.array([], dtype=np.int64)
    got = compute_metrics(empty, empty, empty)
    for name in METRICS:
        if not name.startswith("n_") and name != "n":
            assert math.isnan(got[name]), name
    assert got["n"] == 0.0 and got["n_negative_flips"] == 0.0
    got = compute_metrics(Y, OLD, NEW, critical_mask=np.zeros(10, dtype=bool))
    assert math.isnan(got["critical_nfr"]) and math.isnan(got["critical_accuracy_new"])
    assert got["critical_n"] == 0.0 and got["critical_n_negative_flips"] == 0.0
    assert got["nfr"] == EXPECTED["nfr"]


@pytest.mark.parametrize("seed", range(5))
def test_identities_hold(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 200)
    old = np.where(rng.random(200) < 0.7, y, rng.integers(0, 5, 200))
    new = np.where(rng.random(200) < 0.75, y, rng.integers(0, 5, 200))
    got = compute_metrics(y, old, new)
    assert got["nfr"] == pytest.approx(got["accuracy_old"] * (1 - got["btc"]))
    assert got["br"] == pytest.approx(1 - got["btc"])
    assert got["accuracy_new"] - got["accuracy_old"] == pytest.approx(got["pfr"] - got["nfr"])
    assert got["accuracy_gain"] == pytest.approx(got["pfr"] - got["nfr"])
    assert got["er_old"] == pytest.approx(1 - got["accuracy_old"])
    assert got["nfr_rel"] == pytest.approx(got["nfr"] / ((1 - got["er_old"]) * got["er_new"]))
    assert got["n_negative_flips"] == np.sum((old == y) & (new != y))
    assert got["n_positive_flips"] == np.sum((old != y) & (new == y))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="integer class labels"):
        compute_metrics(Y, OLD.astype(float), NEW)
    with pytest.raises(ValueError, match="integer class labels"):
        compute_metrics(Y, np.eye(10, dtype=np.int64), NEW)      # logits-shaped
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(Y, OLD[:9], NEW)
    with pytest.raises(ValueError, match="boolean vector of length 10"):
        compute_metrics(Y, OLD, NEW, critical_mask=np.array([4, 5, 6]))  # indices, not a mask
    with pytest.raises(ValueError, match="boolean vector of length 10"):
        compute_metrics(Y, OLD, NEW, old_class_mask=np.ones(9, dtype=bool))


def test_metric_catalogue():
    assert len(metric_names()) == len(METRICS) == 21
    assert len(metric_names(old_classes=True, critical=True)) == 63
    for rate, (num, den) in RATE_COUNTS.items():             # every rate's counts exist
        assert rate in METRICS and num in METRICS and den in METRICS
    for name, info in METRICS.items():
        assert info.name == name and info.meaning and info.formula
        assert info.direction in ("max", "min", None)
    assert METRICS["nfr"].direction == "min" and METRICS["accuracy_new"].direction == "max"
    assert METRICS["bec"].direction == "max" and METRICS["n"].direction is None
    assert METRICS["accuracy_ratio"].direction is None
    assert METRICS["nfr"].unit_interval and not METRICS["accuracy_gain"].unit_interval
    assert not METRICS["nfr_rel"].unit_interval


@pytest.mark.parametrize("name", ["nfr", "critical_nfr", "nfr_old_classes", "er_old_old_classes",
                                  "accuracy_old", "critical_n", "bec_n1_old_classes"])
def test_known_metric_names(name):
    assert is_known_metric(name)
    assert metric_info(name) is METRICS[base_metric(name)]


@pytest.mark.parametrize("name", ["foo", "critical_foo", "foo_old_classes", "critical_nfr_old_classes",
                                  "NFR", "critical_", "_old_classes", ""])
def test_unknown_metric_names(name):
    assert not is_known_metric(name)
    with pytest.raises(KeyError):
        metric_info(name)


def test_every_produced_name_is_known():
    got = compute_metrics(Y, OLD, NEW, old_class_mask=OLD_CLASS_MASK, critical_mask=CRITICAL_MASK)
    assert all(is_known_metric(k) for k in got)
    assert base_metric("er_old_old_classes") == "er_old"
    assert base_metric("critical_accuracy_old") == "accuracy_old"
