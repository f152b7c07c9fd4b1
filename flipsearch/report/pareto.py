"""Pareto fronts, hypervolume and "why is nothing feasible" over sweep results.

Conventions. Each objective has a direction ("max" or "min"); internally every value is
turned into a minimisation by flipping the sign of max objectives. Point a dominates b
when a is no worse in every objective and strictly better in at least one. The Pareto
front is the set of points no other point dominates; exact duplicates do not dominate each
other, so all copies of a front point are on the front. Rows with a NaN objective are
never on the front and never dominate anything.

The hypervolume of a set S with reference point r (minimisation form) is the Lebesgue
measure of {z : some s in S has s <= z <= r}; only points strictly better than r in every
objective contribute. It is computed exactly by slicing: sort by the last objective and sum
slab thickness × the (k−1)-dimensional hypervolume of the points below the slab, down to
a vectorised 2-D sweep. That is O(n² log n) for three objectives, fine for sweep sizes.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..metrics import base_metric, is_known_metric, metric_info
from ..objectives import Constraint, Objective, parse_constraint, parse_objective

# Candidate rows compared at once in `pareto_mask`: bounds the [block, n] temporaries.
_BLOCK_ELEMENTS = 4_000_000


def _signs(directions: Sequence[str], k: int) -> np.ndarray:
    if len(directions) != k:
        raise ValueError(f"{len(directions)} directions given for {k} objectives")
    bad = [d for d in directions if d not in ("max", "min")]
    if bad:
        raise ValueError(f"directions must be 'max' or 'min', got {bad}")
    return np.array([-1.0 if d == "max" else 1.0 for d in directions])


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Bool mask [n] of the non-dominated rows of `values` [n, k] under `directions`.

    NaN rows are never on the front; exact duplicates of a front point are all on it.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be a 2-D array [n, k], got shape {v.shape}")
    w = v * _signs(directions, v.shape[1])
    valid = ~np.isnan(w).any(axis=1)
    cand = w[valid]
    m = cand.shape[0]
    dominated = np.zeros(m, dtype=bool)
    block = max(1, _BLOCK_ELEMENTS // max(1, m))
    for start in range(0, m, block):
        rows = cand[start:start + block]                 # [b, k] rows tested
        no_worse = np.ones((rows.shape[0], m), dtype=bool)   # [b, m]: row j no worse than row i
        better = np.zeros((rows.shape[0], m), dtype=bool)    # [b, m]: row j better somewhere
        for j in range(v.shape[1]):                      # loop over objectives, not rows
            col, mine = cand[None, :, j], rows[:, j, None]
            no_worse &= col <= mine
            better |= col < mine
        dominated[start:start + block] = (no_worse & better).any(axis=1)
    mask = np.zeros(v.shape[0], dtype=bool)
    mask[np.flatnonzero(valid)[~dominated]] = True
    return mask


def _hv_min(w: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of minimisation points `w` [n, k], all strictly below `ref` [k]."""
    n, k = w.shape
    if n == 0:
        return 0.0
    if k == 1:
        return float(ref[0] - w[:, 0].min())
    if k == 2:
        order = np.lexsort((w[:, 1], w[:, 0]))          # by x, then y
        x, y = w[order, 0], w[order, 1]
        best_y = np.minimum.accumulate(y)
        prev_y = np.concatenate(([ref[1]], best_y[:-1]))
        # Point i adds the slab y in [y_i, best y so far) from x_i to ref_x.
        return float(np.sum((ref[0] - x) * np.maximum(prev_y - y, 0.0)))
    order = np.argsort(w[:, -1], kind="stable")
    w = w[order]
    z_next = np.concatenate((w[1:, -1], [ref[-1]]))
    total = 0.0
    for i in range(n):
        thickness = z_next[i] - w[i, -1]
        if thickness > 0:
            total += thickness * _hv_min(w[: i + 1, :-1], ref[:-1])
    return total


def hypervolume(points, directions: Sequence[str], reference) -> float:
    """Exact hypervolume of `points` [n, k] dominated up to `reference` [k] (any k; meant for
    2 and 3). Points with NaN, or not strictly better than the reference in every objective,
    contribute nothing."""
    p = np.asarray(points, dtype=float).reshape(-1, len(directions))
    signs = _signs(directions, p.shape[1])
    ref = np.asarray(reference, dtype=float) * signs
    if ref.shape != (p.shape[1],) or not np.isfinite(ref).all():
        raise ValueError(f"reference must be {p.shape[1]} finite numbers, got {reference!r}")
    w = p * signs
    w = w[(w < ref).all(axis=1)]                         # NaN compares False: dropped too
    if w.shape[0] == 0:
        return 0.0
    w = w[pareto_mask(w, ["min"] * w.shape[1])]          # dominated points add no volume
    return _hv_min(w, ref)


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
    signs = _signs(directions, len(objs))
    ref = np.asarray(reference, dtype=float) * signs
    w = np.column_stack([_column(df, o.metric) for o in objs]) * signs
    usable = _ok(df, status_col) & feasible_mask(df, cons) & (w < ref).all(axis=1)
    front = np.empty((0, len(objs)))
    hv, history = 0.0, []
    for t in range(n):
        if usable[t] and not (front <= w[t]).all(axis=1).any():  # not weakly dominated
            front = np.vstack([front[~(w[t] <= front).all(axis=1)], w[t]])
            hv = _hv_min(front, ref)
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
