"""Pareto fronts, hypervolume and infeasibility diagnostics on hand-made rows."""

import itertools

import numpy as np
import pandas as pd
import pytest

from flipsearch import _pareto
from flipsearch.errors import UsageError
from flipsearch.objectives import Objective, parse_constraint
from flipsearch.report import pareto
from flipsearch.report.pareto import (
    binding_constraints,
    closest_to_feasible,
    default_reference,
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_mask,
)

NAN = float("nan")


# ------------------------------------------------------------------ pareto_mask


def test_two_min_objectives_with_duplicates_and_nan():
    pts = [[1, 5], [2, 3], [3, 4], [4, 1], [2, 3], [5, 5], [NAN, 0]]
    # [3,4] and [5,5] are dominated by [2,3]; the two [2,3] do not dominate each other;
    # the NaN row is excluded although its second value (0) would be the best.
    assert pareto_mask(np.array(pts), ["min", "min"]).tolist() == [True, True, False, True, True, False, False]


def test_max_min_mix_and_ties():
    # (accuracy_new max, nfr min)
    pts = np.array([[0.90, 0.05], [0.85, 0.01], [0.80, 0.02], [0.90, 0.06], [0.95, 0.10]])
    # (0.80,0.02) loses to (0.85,0.01); (0.90,0.06) ties on accuracy and has worse nfr.
    assert pareto_mask(pts, ["max", "min"]).tolist() == [True, True, False, False, True]
    # Flipping directions flips what is good: now (0.80, 0.10)-like corners win.
    assert pareto_mask(pts, ["min", "max"]).tolist() == [False, False, True, True, True]


def test_equal_in_one_objective():
    pts = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 2.0]])
    assert pareto_mask(pts, ["min", "min"]).tolist() == [True, False, True]


def test_three_objectives():
    # (accuracy max, nfr min, br min)
    pts = np.array([
        [0.9, 0.05, 0.10],   # a: front
        [0.9, 0.05, 0.20],   # b: dominated by a (worse br only)
        [0.8, 0.01, 0.30],   # c: front (best nfr)
        [0.7, 0.02, 0.05],   # d: front (best br)
        [0.7, 0.02, 0.30],   # e: dominated by c (better acc and nfr, equal br)
    ])
    assert pareto_mask(pts, ["max", "min", "min"]).tolist() == [True, False, True, True, False]


def test_degenerate_inputs():
    assert pareto_mask(np.empty((0, 2)), ["min", "max"]).tolist() == []
    assert pareto_mask(np.full((3, 2), NAN), ["min", "min"]).tolist() == [False] * 3
    assert pareto_mask(np.array([[0.5, 0.5]]), ["max", "min"]).tolist() == [True]
    with pytest.raises(ValueError, match="directions"):
        pareto_mask(np.ones((2, 2)), ["min"])
    with pytest.raises(ValueError, match="'max' or 'min'"):
        pareto_mask(np.ones((2, 2)), ["min", "up"])


def test_blocked_computation_matches_the_definition(monkeypatch):
    monkeypatch.setattr(_pareto, "_BLOCK_ELEMENTS", 50)     # force many small blocks
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 6, size=(60, 3)).astype(float)   # coarse grid: many ties and duplicates
    pts[rng.integers(0, 60, 5), 1] = NAN
    dirs = ["max", "min", "min"]
    w = pts * np.array([-1, 1, 1])
    expected = [
        not np.isnan(w[i]).any()
        and not any((w[j] <= w[i]).all() and (w[j] < w[i]).any() for j in range(len(w)))
        for i in range(len(w))
    ]
    assert pareto_mask(pts, dirs).tolist() == expected


# ------------------------------------------------------------------ hypervolume


def test_hypervolume_2d_by_hand():
    # Staircase under (4,4): slabs x∈[1,2] h=1, x∈[2,3] h=2, x∈[3,4] h=3 -> 6.
    pts = np.array([[1, 3], [2, 2], [3, 1]])
    assert hypervolume(pts, ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # A dominated point, a duplicate, a NaN row and a point beyond the reference add nothing.
    more = np.vstack([pts, [[3, 3], [2, 2], [NAN, 0], [0, 5], [4, 0]]])
    assert hypervolume(more, ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_max_min_by_hand():
    # (accuracy max, nfr min), reference (0, 1): boxes 0.8·0.8 and 0.6·0.9, overlap 0.6·0.8.
    pts = np.array([[0.8, 0.2], [0.6, 0.1]])
    assert hypervolume(pts, ["max", "min"], [0.0, 1.0]) == pytest.approx(0.64 + 0.54 - 0.48)
    assert hypervolume(pts[:1], ["max", "min"], [0.0, 1.0]) == pytest.approx(0.64)


def test_hypervolume_3d_by_hand():
    ref = [1, 1, 1]
    assert hypervolume([[0.5, 0.5, 0.5]], ["min"] * 3, ref) == pytest.approx(0.125)
    # Two boxes 0.5 and 0.25 overlapping in 0.5³ -> 0.625.
    assert hypervolume([[0, 0, 0.5], [0.5, 0.5, 0]], ["min"] * 3, ref) == pytest.approx(0.625)
    # Three boxes of 0.25, pairwise and triple overlaps 0.125 -> 0.75 − 0.375 + 0.125.
    pts = [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    assert hypervolume(pts, ["min"] * 3, ref) == pytest.approx(0.5)
    # The same points as max objectives mirrored around 0.5, reference 0.
    mirrored = 1 - np.array(pts)
    assert hypervolume(mirrored, ["max"] * 3, [0, 0, 0]) == pytest.approx(0.5)


def test_hypervolume_3d_equal_last_objective_is_2d_times_thickness():
    pts = np.array([[1, 3, 2], [2, 2, 2], [3, 1, 2]])
    assert hypervolume(pts, ["min"] * 3, [4, 4, 5]) == pytest.approx(6.0 * 3)


@pytest.mark.parametrize("k, seed", [(2, 0), (2, 1), (3, 2), (3, 3)])
def test_hypervolume_matches_cell_count_on_a_grid(k, seed):
    # Integer points in {0..4}^k, reference 5: the volume is the number of unit cells whose
    # lower corner some point weakly dominates.
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 5, size=(12, k)).astype(float)
    cells = np.array(list(itertools.product(range(5), repeat=k)), dtype=float)
    covered = (pts[None, :, :] <= cells[:, None, :]).all(axis=2).any(axis=1)
    assert hypervolume(pts, ["min"] * k, [5] * k) == pytest.approx(covered.sum())


def test_hypervolume_empty_and_bad_reference():
    assert hypervolume(np.empty((0, 2)), ["min", "min"], [1, 1]) == 0.0
    assert hypervolume([[2, 2]], ["min", "min"], [1, 1]) == 0.0
    with pytest.raises(ValueError, match="reference"):
        hypervolume([[0, 0]], ["min", "min"], [1, NAN])


# ------------------------------------------------------------------ results frames


@pytest.fixture
def results():
    return pd.DataFrame({
        "trial": range(8),
        "status": ["ok", "ok", "ok", "failed", "ok", "ok", "diverged", "ok"],
        "accuracy_new": [0.90, 0.85, 0.80, 0.99, 0.95, NAN, NAN, 0.95],
        "nfr": [0.05, 0.01, 0.02, 0.00, 0.10, NAN, NAN, 0.10],
    })


def test_pareto_front_excludes_failed_and_nan_rows(results):
    front = pareto_front(results, ["accuracy_new:max", "nfr:min"])
    # Trial 3 would dominate everything but failed; 4 and 7 are exact duplicates; sorted by
    # accuracy (best first), ties in input order.
    assert front["trial"].tolist() == [4, 7, 0, 1]
    assert list(front.columns) == list(results.columns)


def test_pareto_front_with_constraints(results):
    front = pareto_front(results, [Objective("accuracy_new", "max"), Objective("nfr", "min")],
                         constraints=["nfr<=0.06"])
    assert front["trial"].tolist() == [0, 1]
    # Excluding trial 1 (nfr > 0.01) lets trial 2, which only 1 dominated, onto the front.
    front = pareto_front(results, ["accuracy_new:max", "nfr:min"], constraints=[parse_constraint("nfr>0.01")])
    assert front["trial"].tolist() == [4, 7, 0, 2]
    assert pareto_front(results, ["accuracy_new", "nfr"], constraints=["accuracy_new>=0.99"]).empty


def test_pareto_front_sorts_min_objective_first(results):
    front = pareto_front(results, ["nfr:min", "accuracy_new:max"])
    assert front["trial"].tolist() == [1, 0, 4, 7]


def test_pareto_front_without_status_column_and_missing_columns(results):
    plain = results.drop(columns="status")
    assert pareto_front(plain, ["accuracy_new:max", "nfr:min"])["trial"].tolist() == [3]
    with pytest.raises(UsageError, match="no column 'br'"):
        pareto_front(results, ["accuracy_new:max", "br:min"])
    with pytest.raises(UsageError, match="no column 'critical_nfr'"):
        pareto_front(results, ["accuracy_new:max"], constraints=["critical_nfr<=0.1"])
    with pytest.raises(UsageError, match="unknown metric"):
        pareto_front(results, ["speed:max"])


def test_hypervolume_history_by_hand():
    df = pd.DataFrame({
        "status": ["ok", "failed", "ok", "ok", "ok", "ok"],
        "nfr":    [0.2, 0.0, 0.35, 0.1, 0.3, NAN],
        "er_new": [0.2, 0.0, 0.35, 0.3, 0.1, 0.0],
    })
    objs = ["nfr:min", "er_new:min"]
    # ref (0.4, 0.4): 0.2·0.2; failed row ignored; dominated row; +0.1·0.1; +0.1·0.1; NaN row.
    got = hypervolume_history(df, objs, reference=[0.4, 0.4])
    assert got == pytest.approx([0.04, 0.04, 0.04, 0.05, 0.06, 0.06])
    # Default reference for min rates is 1: first volume 0.8·0.8.
    got = hypervolume_history(df, objs)
    assert got[0] == pytest.approx(0.64) and np.all(np.diff(got) >= 0)
    assert got[-1] == pytest.approx(hypervolume(df[["nfr", "er_new"]].to_numpy()[[0, 2, 3, 4]],
                                                ["min", "min"], [1, 1]))
    # With a constraint only feasible rows count.
    got = hypervolume_history(df, objs, reference=[0.4, 0.4], constraints=["er_new<=0.25"])
    assert got == pytest.approx([0.04, 0.04, 0.04, 0.04, 0.05, 0.05])


def test_default_reference():
    df = pd.DataFrame({
        "status": ["ok", "ok", "failed"],
        "accuracy_new": [0.9, 0.8, 0.1],
        "accuracy_gain": [0.05, -0.02, -0.5],
        "nfr_rel": [0.3, 0.6, 5.0],
        "critical_nfr": [0.1, 0.2, 0.9],
    })
    ref = default_reference(df, ["accuracy_new:max", "accuracy_gain:max", "nfr_rel:min", "critical_nfr:min"])
    # Rates in [0,1]: their natural bound; others: the worst value among ok rows.
    assert ref == pytest.approx([0.0, -0.02, 0.6, 1.0])
    none_ok = df.assign(status="failed")
    assert np.isnan(default_reference(none_ok, ["accuracy_gain:max"])[0])
    assert hypervolume_history(none_ok, ["accuracy_gain:max", "nfr_rel:min"]) == [0.0, 0.0, 0.0]


@pytest.fixture
def conflicted():
    # Constraints accuracy_new>=0.85 and nfr<=0.02: A meets only the first, B and C only the second.
    return pd.DataFrame({
        "name": ["A", "B", "C", "D"],
        "status": ["ok", "ok", "ok", "failed"],
        "accuracy_new": [0.90, 0.80, 0.70, 0.99],
        "nfr": [0.05, 0.01, 0.005, 0.0],
        "br": [0.1, 0.1, 0.1, 0.0],
    })


def test_closest_to_feasible(conflicted):
    cons = ["accuracy_new>=0.85", "nfr<=0.02"]
    # Normalised by the spread over ok rows: A 0.03/0.045 = 0.67, B 0.05/0.2 = 0.25, C 0.75.
    assert closest_to_feasible(conflicted, cons)["name"] == "B"
    # A feasible row has violation 0 and is chosen.
    assert closest_to_feasible(conflicted, ["nfr<=0.02", "accuracy_new>=0.75"])["name"] == "B"
    assert closest_to_feasible(conflicted.assign(status="failed"), cons) is None


def test_binding_constraints_pairwise_conflict(conflicted):
    cons = [parse_constraint(c) for c in ("accuracy_new>=0.85", "nfr<=0.02", "br<=0.5")]
    # Dropping either of the first two leaves a feasible row; br<=0.5 is met by all.
    assert binding_constraints(conflicted, cons) == cons[:2]
    assert binding_constraints(conflicted, ["nfr<=0.02", "accuracy_new>=0.75"]) == []


def test_binding_constraints_unsatisfiable_one(conflicted):
    # Only the failed row D reaches 0.95: that constraint alone is binding.
    assert binding_constraints(conflicted, ["accuracy_new>=0.95", "nfr<=0.1"]) == [parse_constraint("accuracy_new>=0.95")]
    # Both unsatisfiable by every ok row: both binding.
    assert binding_constraints(conflicted, ["accuracy_new>=0.95", "nfr<0.005"]) == \
        [parse_constraint("accuracy_new>=0.95"), parse_constraint("nfr<0.005")]
    assert binding_constraints(conflicted.assign(status="failed"), ["nfr<=0.1"]) == [parse_constraint("nfr<=0.1")]


def test_binding_constraints_three_way_conflict_falls_back_to_closest_row():
    # Each row meets exactly one constraint, so dropping one never suffices.
    df = pd.DataFrame({
        "name": ["X", "Y", "Z"],
        "status": "ok",
        "accuracy_new": [0.95, 0.70, 0.60],
        "nfr": [0.05, 0.005, 0.05],
        "br": [0.5, 0.5, 0.05],
    })
    cons = [parse_constraint(c) for c in ("accuracy_new>=0.9", "nfr<=0.01", "br<=0.1")]
    # Normalised totals: X 0.89+0.89, Y 0.57+0.89, Z 0.86+0.89 -> Y is closest, violating 1 and 3.
    assert closest_to_feasible(df, cons)["name"] == "Y"
    assert binding_constraints(df, cons) == [cons[0], cons[2]]
