"""The optimism gap: what choosing on the test set would have claimed, against what the
validation-chosen front really scores on it.

A report picks its front on validation metrics and then shows that front's test values.
Had it picked the front on the test values themselves, it would have reported the best test
values of all trials — a biased claim, since the test set chose them. The difference is the
optimism gap:

- hypervolume: the test-chosen front's test hypervolume (`claimed`) against the
  validation-chosen front's test hypervolume (`real`), both over one reference point
  (`default_reference` of the trials' test values); gap = claimed − real.
- per objective: the best test value on the test-chosen front (the best of every feasible
  trial) against the best test value on the validation-chosen front; the gap is signed so
  that a positive gap is optimism (claimed better than real) in either direction.

Constraints are applied on each side's own values (validation for the chosen front, test for
the claim); `test_infeasible` counts validation-chosen points that break a constraint on
test, which can make a gap negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..objectives import Constraint, Objective
from .pareto import default_reference, hypervolume, pareto_front
from .recommend import feasible_mask


@dataclass
class Optimism:
    """The optimism gap of a scenario: hypervolume and best values of the validation-chosen front on test
    (real) against the test-chosen front (claimed)."""
    objectives: list[Objective]
    reference: list[float]             # test hypervolume reference
    hv_val: float                      # validation-chosen front, validation values (val reference)
    hv_real: float                     # validation-chosen front, test values
    hv_claimed: float                  # test-chosen front, test values
    best_real: dict[str, float] = field(default_factory=dict)
    best_claimed: dict[str, float] = field(default_factory=dict)
    n_val_front: int = 0
    n_test_front: int = 0
    n_shared: int = 0                  # trials on both fronts
    test_infeasible: int = 0

    @property
    def hv_gap(self) -> float:
        return self.hv_claimed - self.hv_real

    def gap(self, metric: str) -> float:
        o = next(o for o in self.objectives if o.metric == metric)
        sign = 1.0 if o.direction == "max" else -1.0
        return sign * (self.best_claimed.get(metric, math.nan) - self.best_real.get(metric, math.nan))

    def to_json(self) -> dict:
        return {
            "hypervolume": {"validation": self.hv_val, "real": self.hv_real, "claimed": self.hv_claimed,
                            "gap": self.hv_gap, "reference": self.reference},
            "objectives": {o.metric: {"direction": o.direction, "real": self.best_real.get(o.metric),
                                      "claimed": self.best_claimed.get(o.metric), "gap": self.gap(o.metric)}
                           for o in self.objectives},
            "val_front_points": self.n_val_front, "test_front_points": self.n_test_front,
            "shared_points": self.n_shared, "val_front_infeasible_on_test": self.test_infeasible,
        }


def _best(values: np.ndarray, direction: str) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan
    return float(v.max() if direction == "max" else v.min())


def _hv(rows: pd.DataFrame, objectives: Sequence[Objective], reference: Sequence[float]) -> float:
    if len(rows) == 0 or not np.isfinite(np.asarray(reference, dtype=float)).all():
        return 0.0
    pts = np.column_stack([rows[o.metric].to_numpy(dtype=float, na_value=np.nan) for o in objectives])
    return hypervolume(pts, [o.direction for o in objectives], reference)


def optimism(val_search: pd.DataFrame, test_search: pd.DataFrame, val_front_index: pd.Index,
             objectives: Sequence[Objective], constraints: Sequence[Constraint],
             val_reference: Sequence[float]) -> Optimism:
    """The gap for one scenario. `val_search` / `test_search`: its ok search trials with
    validation / test values under the plain names (same index); `val_front_index`: the
    validation-chosen front."""
    objs = list(objectives)
    ref = default_reference(test_search, objs)
    test_front = pareto_front(test_search, objs, constraints) if len(test_search) else test_search
    chosen_test = test_search.loc[val_front_index]
    chosen_val = val_search.loc[val_front_index]
    infeasible = int((~feasible_mask(chosen_test, constraints)).sum()) if len(chosen_test) else 0
    return Optimism(
        objs, [float(r) for r in ref], _hv(chosen_val, objs, val_reference), _hv(chosen_test, objs, ref),
        _hv(test_front, objs, ref),
        best_real={o.metric: _best(chosen_test[o.metric].to_numpy(dtype=float, na_value=np.nan), o.direction)
                   for o in objs},
        best_claimed={o.metric: _best(test_front[o.metric].to_numpy(dtype=float, na_value=np.nan), o.direction)
                      for o in objs},
        n_val_front=len(val_front_index), n_test_front=len(test_front),
        n_shared=len(set(val_front_index) & set(test_front.index)), test_infeasible=infeasible)
