"""PNG plots of a sweep: the trade-off per scenario and hypervolume over trials.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global backend state), and returned as PNG bytes.

Front plot, two objectives: every ok trial is a point coloured by its method (faded when it
breaks a constraint); the Pareto front is the staircase through its points — the boundary
of the region it dominates; M1's accuracy is a dashed line; the `ce` baseline is a star and
its seed-to-seed NFR (the noise floor) a band; constraint bounds are red dotted lines.
Three objectives: the three pairwise projections, front points ringed (a 3-D front has no
staircase in 2-D). One objective: the metric over trial order with its running best.
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

DPI = 100


@dataclass
class FrontPlotData:
    """Everything one scenario's front plot shows."""

    title: str
    ok_rows: pd.DataFrame                 # status ok rows of the scenario
    front_index: pd.Index                 # indices (into ok_rows) of the Pareto-front rows
    feasible: np.ndarray                  # bool per ok row: satisfies every constraint
    objectives: Sequence[Objective]
    constraints: Sequence[Constraint] = ()
    m1: dict[str, float] = field(default_factory=dict)       # plotted metric -> M1's value
    noise: dict[str, Band] = field(default_factory=dict)     # plotted metric -> ce band
    baseline: pd.Series | None = None                        # the ce baseline's seed-mean row
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

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _percent_axis(axis, metric: str) -> None:
    if is_percent(metric):
        from matplotlib.ticker import PercentFormatter

        axis.set_major_formatter(PercentFormatter(xmax=1.0))


def _values(df: pd.DataFrame, metric: str) -> np.ndarray:
    return df[metric].to_numpy(dtype=float, na_value=np.nan)


def _near_data(d: FrontPlotData, metric: str, value: float) -> bool:
    """Whether a guide line at `value` stays within one data span of the plotted points."""
    v = _values(d.ok_rows, metric)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return True
    lo, hi = float(v.min()), float(v.max())
    span = max(hi - lo, 0.02 * max(abs(hi), abs(lo), 1e-12))
    return lo - span <= value <= hi + span


def _guides(ax, d: FrontPlotData, metric: str, vertical: bool) -> None:
    """M1's value, the ce noise band and constraint bounds of `metric` on one axis."""
    line = ax.axvline if vertical else ax.axhline
    span = ax.axvspan if vertical else ax.axhspan
    if metric in d.m1:
        old = m1_metric(metric) or metric
        value = d.m1[metric]
        text = f"{short(old)} {fmt_unit(old, value)}"
        if _near_data(d, metric, value):
            line(value, color="0.35", ls="--", lw=1, label=text)
        else:                                        # would squash the trade-off into a corner
            ax.plot([], [], " ", label=text + " (off the axis)")
    band = d.noise.get(metric)
    if band is not None:
        color = d.colors.get("ce", "0.5")
        text = (f"ce {short(metric)} over {band.n} runs (noise floor)" if band.n > 1
                else f"ce {short(metric)} (1 run; more seeds give the noise band)")
        if band.high > band.low:
            span(band.low, band.high, color=color, alpha=0.15, lw=0, label=text)
            line(band.mean, color=color, ls=":", lw=1)
        else:
            line(band.mean, color=color, ls=":", lw=1.2, label=text)
    for c in d.constraints:
        if c.metric == metric:
            line(c.value, color="tab:red", ls=(0, (2, 2)), lw=1, label=f"constraint {c}")


def _scatter_pair(ax, d: FrontPlotData, mx: str, my: str, staircase: bool, compact: bool = False) -> None:
    rows = d.ok_rows
    for method, group in rows.groupby("method", sort=False):
        feas = d.feasible[rows.index.get_indexer(group.index)]
        color = d.colors.get(method, "0.5")
        ax.scatter(_values(group, mx)[feas], _values(group, my)[feas], s=28, color=color, alpha=0.85,
                   label=method, zorder=3)
        if (~feas).any():
            ax.scatter(_values(group, mx)[~feas], _values(group, my)[~feas], s=28, facecolors="none",
                       edgecolors=[color], alpha=0.6, zorder=3)
    front = rows.loc[d.front_index]
    if len(front):
        ax.scatter(_values(front, mx), _values(front, my), s=70, facecolors="none", edgecolors="black",
                   lw=1.1, zorder=4, label="Pareto front")
        if staircase:
            ox, oy = (next(o for o in d.objectives if o.metric == m) for m in (mx, my))
            sx = 1.0 if ox.direction == "min" else -1.0
            sy = 1.0 if oy.direction == "min" else -1.0
            x, y = _values(front, mx), _values(front, my)
            order = np.lexsort((sy * y, sx * x))           # ascending in minimisation space
            ax.step(x[order], y[order], where="post", color="black", lw=1.2, zorder=2)
    if d.baseline is not None and mx in d.baseline.index and my in d.baseline.index:
        ax.scatter([float(d.baseline[mx])], [float(d.baseline[my])], marker="*", s=260,
                   color=d.colors.get("ce", "0.5"), edgecolors="black", lw=0.8, zorder=5, label="ce baseline")
    _guides(ax, d, mx, vertical=True)
    _guides(ax, d, my, vertical=False)
    dirs = {o.metric: o.direction for o in d.objectives}
    ax.set_xlabel(axis_label(mx, dirs.get(mx), compact))
    ax.set_ylabel(axis_label(my, dirs.get(my), compact))
    _percent_axis(ax.xaxis, mx)
    _percent_axis(ax.yaxis, my)
    ax.grid(True, alpha=0.3)


def _single(ax, d: FrontPlotData) -> None:
    o = d.objectives[0]
    rows = d.ok_rows
    t = rows["trial_number"].to_numpy(dtype=float) if "trial_number" in rows else np.arange(len(rows), dtype=float)
    for method, group in rows.groupby("method", sort=False):
        idx = rows.index.get_indexer(group.index)
        ax.scatter(t[idx], _values(group, o.metric), s=28, color=d.colors.get(method, "0.5"), label=method, zorder=3)
    order = np.argsort(t, kind="stable")
    v = np.where(d.feasible, _values(rows, o.metric), np.nan)[order]
    v = np.where(np.isnan(v), -np.inf if o.direction == "max" else np.inf, v)
    best = np.maximum.accumulate(v) if o.direction == "max" else np.minimum.accumulate(v)
    best = np.where(np.isfinite(best), best, np.nan)
    ax.step(t[order], best, where="post", color="black", lw=1.2, label="best so far")
    _guides(ax, d, o.metric, vertical=False)
    ax.set_xlabel("trial number")
    ax.set_ylabel(axis_label(o.metric, o.direction))
    _percent_axis(ax.yaxis, o.metric)
    ax.grid(True, alpha=0.3)


def front_png(d: FrontPlotData) -> bytes:
    """The scenario's front plot (see the module docstring) as PNG bytes."""
    metrics = [o.metric for o in d.objectives]
    pairs = [(metrics[0], metrics[1])] if len(metrics) == 2 else \
        [(metrics[0], metrics[1]), (metrics[0], metrics[2]), (metrics[1], metrics[2])] if len(metrics) == 3 else []
    fig = _figure(9.0 if len(pairs) <= 1 else 5.0 * len(pairs) + 2.0, 5.0)
    axes = fig.subplots(1, max(1, len(pairs)), squeeze=False)[0]
    if len(d.ok_rows) == 0:
        axes[0].text(0.5, 0.5, "no successful trial", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    elif not pairs:
        _single(axes[0], d)
    else:
        for ax, (mx, my) in zip(axes, pairs):
            _scatter_pair(ax, d, mx, my, staircase=len(pairs) == 1, compact=len(pairs) > 1)
    fig.suptitle(f"{d.title} — {len(d.ok_rows)} ok of {d.n_trials} trials", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        seen = dict(zip(labels, handles))
        fig.legend(seen.values(), seen.keys(), fontsize=8, loc="outside right center", frameon=False)
    return _png(fig)


def hypervolume_png(histories: dict[str, Sequence[float]], objectives: Sequence[Objective]) -> bytes:
    """Hypervolume of the (feasible) front after each trial, one line per scenario."""
    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    for name, hv in histories.items():
        if len(hv):
            ax.step(np.arange(1, len(hv) + 1), hv, where="post", lw=1.5, marker="o", ms=3, label=name)
    ax.set_xlabel("trials finished (in trial order)")
    ax.set_ylabel("hypervolume of the front")
    ax.set_title("Convergence: hypervolume over " + " × ".join(str(o) for o in objectives), fontsize=11)
    ax.grid(True, alpha=0.3)
    if any(len(h) for h in histories.values()):
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)
