"""Pareto fronts, hypervolume and "why is nothing feasible" over a sweep's results frame.

The dominance maths itself (directions, `pareto_mask`, `hypervolume`, their conventions)
lives in `flipsearch._pareto`; `pareto_mask` and `hypervolume` are re-exported here for the
code that imported them from this module. This module applies them to result rows: status
and constraint filtering, reference points, the hypervolume curve, binding constraints.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .._pareto import hypervolume, hypervolume_min, pareto_mask, signs
from ..errors import UsageError
from ..metrics import base_metric, is_known_metric, metric_info
from ..objectives import Constraint, Objective, parse_constraint, parse_objective

__all__ = ["pareto_mask", "hypervolume", "feasible_mask", "pareto_front", "default_reference",
           "hypervolume_history", "closest_to_feasible", "binding_constraints"]


# ---------------------------------------------------------------- results-frame helpers


def _objectives(objectives: Iterable[Objective | str]) -> list[Objective]:
    objs = [parse_objective(o) for o in objectives]
    if not objs:
        raise UsageError("no objectives given; name at least one, e.g. accuracy_new:max")
    return objs


def _constraints(constraints: Iterable[Constraint | str]) -> list[Constraint]:
    return [parse_constraint(c) for c in constraints]


def _require_columns(df: pd.DataFrame, names: Iterable[str], what: str) -> None:
    missing = [n for n in dict.fromkeys(names) if n not in df.columns]
    if missing:
        have = [c for c in df.columns if is_known_metric(str(c))]
        raise UsageError(f"the results have no column {', '.join(map(repr, missing))} ({what}); "
                         f"metric columns present: {', '.join(have) or 'none'}")


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=float, na_value=np.nan)


def _ok(df: pd.DataFrame, status_col: str) -> np.ndarray:
    """Rows whose status is "ok" (every row when the frame has no status column)."""
    if status_col not in df.columns:
        return np.ones(len(df), dtype=bool)
    return (df[status_col] == "ok").fillna(False).to_numpy(dtype=bool)


def feasible_mask(df: pd.DataFrame, constraints: Sequence[Constraint]) -> np.ndarray:
    """Rows of `df` satisfying every constraint (a NaN or missing metric never does)."""
    mask = np.ones(len(df), dtype=bool)
    for c in constraints:
        values = _column(df, c.metric) if c.metric in df.columns else np.full(len(df), np.nan)
        mask &= c.satisfied_array(values)
    return mask


def pareto_front(df: pd.DataFrame, objectives: Iterable[Objective | str],
                 constraints: Iterable[Constraint | str] = (), status_col: str = "status") -> pd.DataFrame:
    """The Pareto-optimal rows of a results frame.

    Keeps rows whose `status_col` is "ok" (all rows if there is no such column) and that
    satisfy every constraint, then the non-dominated ones under `objectives` (Objective or
    "metric:dir" strings), sorted best first by the first objective (ties by the next).
    The original index is kept.
    """
    objs, cons = _objectives(objectives), _constraints(constraints)
    _require_columns(df, [o.metric for o in objs], "objective")
    _require_columns(df, [c.metric for c in cons], "constraint")
    sub = df[_ok(df, status_col) & feasible_mask(df, cons)]
    values = np.column_stack([_column(sub, o.metric) for o in objs]) if len(sub) else np.empty((0, len(objs)))
    front = sub[pareto_mask(values, [o.direction for o in objs])]
    return front.sort_values([o.metric for o in objs], ascending=[o.direction == "min" for o in objs],
                             kind="stable")


def default_reference(df: pd.DataFrame, objectives: Iterable[Objective | str],
                      status_col: str = "status") -> list[float]:
    """Hypervolume reference point: for metrics bounded in [0, 1] the natural bound (0 for a
    max objective, 1 for a min one); otherwise the worst value observed among ok rows
    (NaN when there is none)."""
    objs = _objectives(objectives)
    ok = _ok(df, status_col)
    ref = []
    for o in objs:
        if base_metric(o.metric) is not None and metric_info(o.metric).unit_interval:
            ref.append(0.0 if o.direction == "max" else 1.0)
            continue
        col = _column(df, o.metric)[ok]
        col = col[~np.isnan(col)]
        ref.append(float("nan") if col.size == 0 else float(col.min() if o.direction == "max" else col.max()))
    return ref


def hypervolume_history(df_sorted_by_trial: pd.DataFrame, objectives: Iterable[Objective | str],
                        reference: Sequence[float] | None = None, *,
                        constraints: Iterable[Constraint | str] = (), status_col: str = "status") -> list[float]:
    """Hypervolume of the front of the first t rows, for t = 1..n (a convergence curve).

    Only ok, feasible rows with no NaN objective count. `reference` defaults to
    `default_reference`. The front is kept incrementally and the volume recomputed only
    when a row enters it.
    """
    df = df_sorted_by_trial
    objs, cons = _objectives(objectives), _constraints(constraints)
    _require_columns(df, [o.metric for o in objs], "objective")
    _require_columns(df, [c.metric for c in cons], "constraint")
    if reference is None:
        reference = default_reference(df, objs, status_col)
    n = len(df)
    if n == 0:
        return []
    if np.isnan(np.asarray(reference, dtype=float)).any():
        return [0.0] * n                                  # no usable row at all
    directions = [o.direction for o in objs]
    signs_ = signs(directions, len(objs))
    ref = np.asarray(reference, dtype=float) * signs_
    w = np.column_stack([_column(df, o.metric) for o in objs]) * signs_
    usable = _ok(df, status_col) & feasible_mask(df, cons) & (w < ref).all(axis=1)
    front = np.empty((0, len(objs)))
    hv, history = 0.0, []
    for t in range(n):
        if usable[t] and not (front <= w[t]).all(axis=1).any():  # not weakly dominated
            front = np.vstack([front[~(w[t] <= front).all(axis=1)], w[t]])
            hv = hypervolume_min(front, ref)
        history.append(hv)
    return history


def _violation_matrix(ok_df: pd.DataFrame, constraints: Sequence[Constraint]) -> np.ndarray:
    """[rows, constraints] violations, each divided by the spread of its metric over the rows
    (or by |bound|, or 1, when the spread is 0) so that constraints on different scales add."""
    cols = []
    for c in constraints:
        v = _column(ok_df, c.metric)
        finite = v[np.isfinite(v)]
        spread = float(finite.max() - finite.min()) if finite.size else 0.0
        scale = spread if spread > 0 else (abs(c.value) if c.value != 0 else 1.0)
        cols.append(c.violation_array(v) / scale)
    return np.column_stack(cols) if cols else np.zeros((len(ok_df), 0))


def closest_to_feasible(df: pd.DataFrame, constraints: Iterable[Constraint | str],
                        status_col: str = "status") -> pd.Series | None:
    """The ok row with the smallest total normalised violation (see `_violation_matrix`);
    a feasible row when there is one. None when there is no ok row."""
    cons = _constraints(constraints)
    _require_columns(df, [c.metric for c in cons], "constraint")
    ok_df = df[_ok(df, status_col)]
    if len(ok_df) == 0:
        return None
    total = _violation_matrix(ok_df, cons).sum(axis=1)
    return ok_df.iloc[int(np.argmin(total))]


def binding_constraints(df: pd.DataFrame, constraints: Iterable[Constraint | str],
                        status_col: str = "status") -> list[Constraint]:
    """The constraints to relax when no ok row satisfies them all ([] when one does).

    A constraint is binding when no ok row satisfies it, or when some ok row satisfies all
    the other constraints but not it (dropping it alone would leave a feasible row). If the
    conflict needs two or more constraints dropped, the ones the closest-to-feasible row
    violates are returned. With no ok row at all every constraint is returned.
    """
    cons = _constraints(constraints)
    _require_columns(df, [c.metric for c in cons], "constraint")
    ok_df = df[_ok(df, status_col)]
    if len(ok_df) == 0:
        return list(cons)
    sat = np.column_stack([c.satisfied_array(_column(ok_df, c.metric)) for c in cons]) if cons \
        else np.ones((len(ok_df), 0), dtype=bool)
    if sat.all(axis=1).any():
        return []
    binding = []
    for i, c in enumerate(cons):
        others = np.delete(sat, i, axis=1).all(axis=1)
        if not sat[:, i].any() or others.any():
            binding.append(c)
    if not binding:
        row = closest_to_feasible(ok_df, cons, status_col)
        binding = [c for c in cons if not c.satisfied(row)]
    return binding
