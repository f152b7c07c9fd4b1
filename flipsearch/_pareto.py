"""Dominance maths, in one place and numpy only: the scheduler and the report both build on it.

Conventions. Each objective has a direction ("max" or "min"); internally every value is
turned into a minimisation by flipping the sign of max objectives (`signs`). Point a
dominates b when a is no worse in every objective and strictly better in at least one. The
Pareto front is the set of points no other point dominates; exact duplicates do not dominate
each other, so all copies of a front point are on the front. Rows with a NaN objective are
never on the front and never dominate anything.

Non-dominated sorting (`fronts`) peels the front off, then the front of what is left, and
so on. The ε-net order of one front (Schmucker et al. 2021, MO-ASHA's selection): scale the
objectives to [0, 1] over the front, take the point best in the first objective, then
greedily the point farthest (Euclidean, scaled) from those already taken.

The hypervolume of a set S with reference point r (minimisation form) is the Lebesgue
measure of {z : some s in S has s <= z <= r}; only points strictly better than r in every
objective contribute. It is computed exactly by slicing: sort by the last objective and sum
slab thickness × the (k−1)-dimensional hypervolume of the points below the slab, down to
a vectorised 2-D sweep. That is O(n² log n) for three objectives, fine for sweep sizes.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["DIRECTIONS", "signs", "dominates", "dominates_by_name", "pareto_mask", "fronts", "eps_net_order",
           "hypervolume", "hypervolume_min"]

DIRECTIONS = ("max", "min")
# Candidate rows compared at once in `pareto_mask`: bounds the [block, n] temporaries.
_BLOCK_ELEMENTS = 4_000_000


def signs(directions: Sequence[str], k: int | None = None) -> np.ndarray:
    """The factor per objective that turns values into a minimisation: -1 for "max", +1 for "min".

    Args:
        directions: one "max" or "min" per objective (at least one).
        k: the number of objectives the values have, checked against `directions` when given.

    Raises:
        ValueError: a direction other than "max"/"min", none at all, or not `k` of them.
    """
    if k is not None and len(directions) != k:
        raise ValueError(f"{len(directions)} directions given for {k} objectives")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not len(directions):
        raise ValueError(f"directions must be 'max' or 'min', at least one, got {list(directions)!r}")
    return np.array([-1.0 if d == "max" else 1.0 for d in directions])


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether point `a` dominates point `b` (no worse everywhere, better somewhere). A NaN or
    infinite value on either side dominates nothing."""
    s = signs(directions, len(a))
    x, y = np.asarray(a, dtype=float) * s, np.asarray(b, dtype=float) * s
    if x.shape != y.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return False
    return bool((x <= y).all() and (x < y).any())


def dominates_by_name(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """`dominates` over points given as {metric: value}; a metric missing on either side
    counts as NaN (so nothing dominates).

    Args:
        a, b: the two points.
        directions: {metric: "max" | "min"}, in the objectives' order.
    """
    names = list(directions)
    return dominates([a.get(m, math.nan) for m in names], [b.get(m, math.nan) for m in names],
                     [directions[m] for m in names])


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Bool mask [n] of the non-dominated rows of `values` [n, k] under `directions`.

    NaN rows are never on the front; exact duplicates of a front point are all on it.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be a 2-D array [n, k], got shape {v.shape}")
    w = v * signs(directions, v.shape[1])
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


def fronts(values: np.ndarray, directions: Sequence[str], idx: Sequence[int] | None = None) -> list[list[int]]:
    """Non-dominated sorting: the rows `idx` of `values` [n, k] (default: all) split into
    fronts, best first, each front's indices in `idx` order. NaN rows are left out."""
    v = np.asarray(values, dtype=float)
    remaining = list(range(len(v))) if idx is None else list(idx)
    remaining = [i for i in remaining if not np.isnan(v[i]).any()]
    out = []
    while remaining:
        on = pareto_mask(v[remaining], directions)
        out.append([i for i, f in zip(remaining, on) if f])
        remaining = [i for i, f in zip(remaining, on) if not f]
    return out


def eps_net_order(w: np.ndarray, idx: Sequence[int], prefer: int | None = None) -> list[int]:
    """ε-net order of the points `w[idx]` (minimisation form, all finite, one front).

    Exact ties (after the geometric criterion) go by scaled values, then to row `prefer`,
    then to the earlier index.
    """
    idx = list(idx)
    if len(idx) <= 1:
        return idx
    pts = np.asarray(w, dtype=float)[idx]
    lo, span = pts.min(axis=0), np.ptp(pts, axis=0)
    z = (pts - lo) / np.where(span > 0, span, 1.0)

    def tie_key(j: int) -> tuple:  # after the geometric criterion: values, the preferred row, index
        return (*z[j], idx[j] != prefer, idx[j])

    first = min(range(len(idx)), key=tie_key)
    order = [first]
    dist = np.linalg.norm(z - z[first], axis=1)
    left = set(range(len(idx))) - {first}
    while left:
        best = min(left, key=lambda j: (-dist[j], *tie_key(j)))
        order.append(best)
        left.remove(best)
        dist = np.minimum(dist, np.linalg.norm(z - z[best], axis=1))
    return [idx[j] for j in order]


def hypervolume_min(w: np.ndarray, ref: np.ndarray) -> float:
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
            total += thickness * hypervolume_min(w[: i + 1, :-1], ref[:-1])
    return total


def hypervolume(points, directions: Sequence[str], reference) -> float:
    """Exact hypervolume of `points` [n, k] dominated up to `reference` [k] (any k; meant for
    2 and 3). Points with NaN, or not strictly better than the reference in every objective,
    contribute nothing."""
    p = np.asarray(points, dtype=float).reshape(-1, len(directions))
    s = signs(directions, p.shape[1])
    ref = np.asarray(reference, dtype=float) * s
    if ref.shape != (p.shape[1],) or not np.isfinite(ref).all():
        raise ValueError(f"reference must be {p.shape[1]} finite numbers, got {reference!r}")
    w = p * s
    w = w[(w < ref).all(axis=1)]                         # NaN compares False: dropped too
    if w.shape[0] == 0:
        return 0.0
    w = w[pareto_mask(w, ["min"] * w.shape[1])]          # dominated points add no volume
    return hypervolume_min(w, ref)
