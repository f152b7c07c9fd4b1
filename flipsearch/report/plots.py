"""PNG plots of a sweep (for summary.md; index.html draws the same data with plotly, see
`interactive.py`): the trade-off per scenario and the hypervolume against compute.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global backend state), and returned as PNG bytes.

Front plot: one row of panels per split — VALIDATION (what chose the front) and TEST (what
is reported). Every ok search trial is a point coloured by its method (hollow when it
breaks a constraint on that split); the validation-chosen Pareto front is ringed in both
rows, and on validation it is the staircase of the region it dominates. On test, the front
the test set itself would have chosen (the optimistic claim) is a dotted staircase, and front
points with replicates show their seed mean with its 95 % interval. M1's accuracy is a dashed
line, or a note when drawing it would squash the trials into a corner; the `ce` baseline is
a hollow star drawn under the trials (so it never hides one), and its seed-to-seed NFR (the
noise floor) a band; constraint bounds are red dotted lines. Three objectives: the three
pairwise projections per row. One objective: the metric over trial order with its running best.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..objectives import Constraint, Objective
from ._format import axis_label, fmt_unit, is_percent, short
from .baselines import Band, m1_metric
from .stats import Stat

DPI = 100


@dataclass
class Panel:
    """One split's view of a scenario's trials (metric columns hold that split's values)."""

    name: str                                 # "validation" or "test"
    rows: pd.DataFrame                        # ok search trials
    front_index: pd.Index                     # the validation-chosen front (indices into rows)
    feasible: np.ndarray                      # bool per row: meets every constraint on this split
    m1: dict[str, float] = field(default_factory=dict)           # plotted metric -> M1's value
    baseline: pd.Series | None = None                            # the ce baseline's mean row
    baseline_stats: dict[str, Stat] = field(default_factory=dict)
    noise: dict[str, Band] = field(default_factory=dict)         # plotted metric -> ce band
    claimed_index: pd.Index | None = None                        # test only: the test-chosen front
    point_stats: dict = field(default_factory=dict)              # index -> {metric: Stat} (replicates)


@dataclass
class FrontPlotData:
    """Everything one scenario's front plot shows."""

    title: str
    panels: list[Panel]
    objectives: Sequence[Objective]
    constraints: Sequence[Constraint] = ()
    colors: dict[str, tuple] = field(default_factory=dict)   # method -> colour
    n_trials: int = 0


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per method (tab10 order), the same in every plot of a report."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(dict.fromkeys(methods))}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _percent_axis(axis, metric: str) -> None:
    if is_percent(metric):
        from matplotlib.ticker import PercentFormatter

        axis.set_major_formatter(PercentFormatter(xmax=1.0))


def _values(df: pd.DataFrame, metric: str) -> np.ndarray:
    return df[metric].to_numpy(dtype=float, na_value=np.nan) if metric in df.columns else np.full(len(df), np.nan)


def near_data(rows: pd.DataFrame, metric: str, value: float) -> bool:
    """Whether a guide line at `value` stays within one data span of the plotted points
    (else drawing it would squash the trials into a corner)."""
    v = _values(rows, metric)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return True
    lo, hi = float(v.min()), float(v.max())
    span = max(hi - lo, 0.02 * max(abs(hi), abs(lo), 1e-12))
    return lo - span <= value <= hi + span


def _guides(ax, d: FrontPlotData, p: Panel, metric: str, vertical: bool) -> None:
    """M1's value, the ce noise band and constraint bounds of `metric` on one axis."""
    line = ax.axvline if vertical else ax.axhline
    span = ax.axvspan if vertical else ax.axhspan
    if metric in p.m1:
        old = m1_metric(metric) or metric
        value = p.m1[metric]
        text = f"{short(old)} on {p.name.split(' ')[0]}: {fmt_unit(old, value)}"
        if near_data(p.rows, metric, value):
            line(value, color="0.35", ls="--", lw=1, label=text)
        else:
            ax.plot([], [], " ", label=text + " (off the axis)")
    band = p.noise.get(metric)
    if band is not None:
        color = d.colors.get("ce", "0.5")
        text = (f"ce {short(metric)} over {band.n} seeds (noise floor)" if band.n > 1
                else f"ce {short(metric)} (1 seed: no spread)")
        if band.high > band.low:
            span(band.low, band.high, color=color, alpha=0.15, lw=0, label=text)
            line(band.mean, color=color, ls=":", lw=1)
        else:
            line(band.mean, color=color, ls=":", lw=1.2, label=text)
    for c in d.constraints:
        if c.metric == metric:
            line(c.value, color="tab:red", ls=(0, (2, 2)), lw=1, label=f"constraint {c}")


def _staircase(ax, rows: pd.DataFrame, objectives, mx: str, my: str, **style) -> None:
    ox, oy = (next(o for o in objectives if o.metric == m) for m in (mx, my))
    sx = 1.0 if ox.direction == "min" else -1.0
    sy = 1.0 if oy.direction == "min" else -1.0
    x, y = _values(rows, mx), _values(rows, my)
    order = np.lexsort((sy * y, sx * x))                  # ascending in minimisation space
    ax.step(x[order], y[order], where="post", **style)


def _err(stat: Stat, at: float) -> list[list[float]]:
    """Error bar lengths [[below], [above]] from `at` to the ends of `stat`'s interval (never negative)."""
    return [[max(0.0, at - stat.low)], [max(0.0, stat.high - at)]]


def _scatter_pair(ax, d: FrontPlotData, p: Panel, mx: str, my: str, staircase: bool, compact: bool) -> None:
    rows = p.rows
    if p.baseline is not None and mx in p.baseline.index and my in p.baseline.index:
        bx, by = float(p.baseline[mx]), float(p.baseline[my])
        sx, sy = p.baseline_stats.get(mx), p.baseline_stats.get(my)
        if p.claimed_index is not None and sx is not None and sy is not None and sx.has_spread and sy.has_spread:
            ax.errorbar([bx], [by], xerr=_err(sx, bx), yerr=_err(sy, by), fmt="none", ecolor="0.7", lw=0.8, zorder=1)
        ax.scatter([bx], [by], marker="*", s=300, facecolors="none", edgecolors=[d.colors.get("ce", "0.4")],
                   lw=1.2, zorder=1, label="ce baseline (mean over seeds)")
    for method, group in rows.groupby("method", sort=False):
        feas = p.feasible[rows.index.get_indexer(group.index)]
        color = d.colors.get(method, "0.5")
        ax.scatter(_values(group, mx)[feas], _values(group, my)[feas], s=28, color=color, alpha=0.85,
                   label=method, zorder=3)
        if (~feas).any():
            ax.scatter(_values(group, mx)[~feas], _values(group, my)[~feas], s=28, facecolors="none",
                       edgecolors=[color], alpha=0.6, zorder=3)
    front = rows.loc[rows.index.intersection(p.front_index)]
    if len(front):
        ax.scatter(_values(front, mx), _values(front, my), s=70, facecolors="none", edgecolors="black",
                   lw=1.1, zorder=4, label="front (chosen on validation)")
        if staircase:
            _staircase(ax, front, d.objectives, mx, my, color="black", lw=1.2, zorder=2)
    if p.claimed_index is not None and staircase and len(p.claimed_index):
        _staircase(ax, rows.loc[p.claimed_index], d.objectives, mx, my, color="0.45", lw=1, ls=":", zorder=2,
                   label="front chosen on test (optimistic)")
    for idx, stats in p.point_stats.items():
        sx, sy = stats.get(mx), stats.get(my)
        if sx is None or sy is None or not (sx.has_spread and sy.has_spread):
            continue
        ax.errorbar([sx.mean], [sy.mean], xerr=_err(sx, sx.mean), yerr=_err(sy, sy.mean), fmt="D", ms=4,
                    color="black", mfc="white", lw=0.8, zorder=5, label="front point: seed mean ± 95 % CI")
    _guides(ax, d, p, mx, vertical=True)
    _guides(ax, d, p, my, vertical=False)
    dirs = {o.metric: o.direction for o in d.objectives}
    ax.set_xlabel(axis_label(mx, dirs.get(mx), compact))
    ax.set_ylabel(axis_label(my, dirs.get(my), compact))
    ax.set_title(f"{p.name}", fontsize=10)
    _percent_axis(ax.xaxis, mx)
    _percent_axis(ax.yaxis, my)
    ax.grid(True, alpha=0.3)


def _single(ax, d: FrontPlotData, p: Panel) -> None:
    o = d.objectives[0]
    rows = p.rows
    t = rows["trial_number"].to_numpy(dtype=float) if "trial_number" in rows else np.arange(len(rows), dtype=float)
    for method, group in rows.groupby("method", sort=False):
        idx = rows.index.get_indexer(group.index)
        ax.scatter(t[idx], _values(group, o.metric), s=28, color=d.colors.get(method, "0.5"), label=method, zorder=3)
    order = np.argsort(t, kind="stable")
    v = np.where(p.feasible, _values(rows, o.metric), np.nan)[order]
    v = np.where(np.isnan(v), -np.inf if o.direction == "max" else np.inf, v)
    best = np.maximum.accumulate(v) if o.direction == "max" else np.minimum.accumulate(v)
    best = np.where(np.isfinite(best), best, np.nan)
    ax.step(t[order], best, where="post", color="black", lw=1.2, label="best so far")
    _guides(ax, d, p, o.metric, vertical=False)
    ax.set_xlabel("trial number")
    ax.set_ylabel(axis_label(o.metric, o.direction))
    ax.set_title(p.name, fontsize=10)
    _percent_axis(ax.yaxis, o.metric)
    ax.grid(True, alpha=0.3)


def objective_pairs(objectives: Sequence[Objective]) -> list[tuple[str, str]]:
    """The pairs of objective metrics a front is plotted over (one pair for two objectives, three for three)."""
    m = [o.metric for o in objectives]
    if len(m) == 2:
        return [(m[0], m[1])]
    if len(m) == 3:
        return [(m[0], m[1]), (m[0], m[2]), (m[1], m[2])]
    return []


def front_png(d: FrontPlotData) -> bytes:
    """The scenario's front plot (see the module docstring) as PNG bytes."""
    pairs = objective_pairs(d.objectives)
    ncols = max(1, len(pairs))
    nrows = len(d.panels)
    if len(pairs) <= 1:       # one pair: the two splits side by side
        nrows, ncols = 1, len(d.panels)
    fig = _figure(12.5 if len(pairs) <= 1 else 4.6 * ncols + 2.0, 4.8 if nrows == 1 else 4.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cells = [(axes[0][i], p, pairs[0] if pairs else None) for i, p in enumerate(d.panels)] if len(pairs) <= 1 else \
        [(axes[r][c], p, pair) for r, p in enumerate(d.panels) for c, pair in enumerate(pairs)]
    if not any(len(p.rows) for p in d.panels):
        for ax, _, _ in cells:
            ax.text(0.5, 0.5, "no successful trial", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    else:
        for ax, p, pair in cells:
            if pair is None:
                _single(ax, d, p)
            else:
                _scatter_pair(ax, d, p, *pair, staircase=len(pairs) == 1, compact=True)
    n_ok = len(d.panels[0].rows) if d.panels else 0
    fig.suptitle(f"{d.title} — {n_ok} ok search trials of {d.n_trials} rows", fontsize=11)
    seen = {}
    for ax, _, _ in cells:
        handles, labels = ax.get_legend_handles_labels()
        seen.update({lab: h for lab, h in zip(labels, handles) if lab not in seen})
    # A fixed layout (the constrained one costs seconds per figure): the legend in the right margin.
    width = fig.get_figwidth()
    fig.subplots_adjust(left=0.95 / width, right=1 - 3.0 / width, bottom=0.55 / fig.get_figheight(),
                        top=1 - 0.6 / fig.get_figheight(), wspace=0.28, hspace=0.45)
    if seen:
        fig.legend(seen.values(), seen.keys(), fontsize=8, loc="center left",
                   bbox_to_anchor=(1 - 2.9 / width, 0.5), frameon=False)
    return _png(fig)


def convergence_png(curves: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, title: str) -> bytes:
    """Validation hypervolume against cumulative compute, one step line per scenario:
    `curves` = {scenario: (x, hypervolume)}."""
    fig = _figure(7.5, 4.2)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.9)
    for name, (x, hv) in curves.items():
        if len(hv):
            ax.step(np.asarray(x, dtype=float), hv, where="post", lw=1.5, marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("hypervolume of the validation front")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    if any(len(c[1]) for c in curves.values()):
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)
