"""flipsearch._pareto: the one home of dominance, fronts and the ε-net order."""

import math

import numpy as np
import pytest

from flipsearch._pareto import dominates, dominates_by_name, eps_net_order, fronts, pareto_mask, signs


def test_dominates_respects_directions_and_refuses_nan():
    assert dominates([0.9, 0.01], [0.8, 0.02], ["max", "min"])
    assert not dominates([0.9, 0.01], [0.9, 0.01], ["max", "min"])          # equal: neither
    assert not dominates([0.9, 0.03], [0.8, 0.02], ["max", "min"])          # a trade-off
    assert not dominates([0.9, math.nan], [0.8, 0.02], ["max", "min"])
    assert dominates_by_name({"acc": 0.9, "nfr": 0.0}, {"acc": 0.9, "nfr": 0.1}, {"acc": "max", "nfr": "min"})
    assert not dominates_by_name({"acc": 0.9}, {"acc": 0.8, "nfr": 0.1}, {"acc": "max", "nfr": "min"})
    with pytest.raises(ValueError, match="'max' or 'min'"):
        signs([])


def test_fronts_peel_in_order_and_agree_with_the_mask():
    v = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [4, 4], [math.nan, 0]], dtype=float)
    peeled = fronts(v, ["min", "min"])
    assert peeled == [[0, 1, 2], [3], [4]]                                 # the NaN row is on none
    assert list(np.flatnonzero(pareto_mask(v, ["min", "min"]))) == peeled[0]


def test_eps_net_starts_at_the_best_first_objective_then_goes_farthest():
    w = np.array([[0.0, 1.0], [0.5, 0.5], [0.45, 0.55], [1.0, 0.0]])
    assert eps_net_order(w, [0, 1, 2, 3]) == [0, 3, 1, 2]
