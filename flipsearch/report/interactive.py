"""index.html's interactive plots, drawn with plotly (offline: the page inlines plotly.js
once, `plotly_js()`; every figure is a div and a `Plotly.newPlot` call, nothing fetched).

Front figure: the same content as the PNG (`plots.py`): a validation panel (what chose
the front) and a test panel (what is reported) per objective pair. Hovering a point shows
its method, trial, seed, hyperparameters and its validation and test values with counts.
Points with identical coordinates (frequent on a small validation split: accuracy moves
in steps of 1/n) are drawn once with a "×k" label, and the hover lists every trial there;
identical points of different methods are set apart by a small deterministic offset on a
circle (the hover keeps the exact values). The `ce` baseline is a hollow star drawn
before the trials, so it never hides one. Axes span the trials (and the baseline), not M1:
when M1's accuracy lies far outside — class-incremental, where M1 knows half the classes —
it is an annotation at the panel's edge instead of a line that would squash the cluster.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._format import esc, fmt, fmt_hparams, fmt_rate, fmt_unit, int_text, is_percent, safe_name, short
from .baselines import m1_metric
from .configs import hparams_of
from .plots import Panel, near_data, objective_pairs
from .selection import finishing_order, is_replicate

if TYPE_CHECKING:
    from .model import ReportData as Report, ScenarioReport

MAX_HOVER_TRIALS = 6
JITTER = 0.008            # share of an axis span between coincident points of different methods
CONFIG = {"displaylogo": False, "responsive": True,
          "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js, minified, for one inline <script> per page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _rgb(c) -> str:
    if isinstance(c, str):
        return c
    r, g, b = (int(round(255 * x)) for x in c[:3])
    return f"rgb({r},{g},{b})"


def _rgba(c, a: float) -> str:
    r, g, b = (int(round(255 * x)) for x in c[:3]) if not isinstance(c, str) else (128, 128, 128)
    return f"rgba({r},{g},{b},{a})"


def hover_text(report: "Report", s: "ScenarioReport", idx) -> str:
    """One trial's hover: method, trial, seed, hyperparameters, validation and test values."""
    row = s.rows.loc[idx]
    metrics = list(dict.fromkeys([o.metric for o in report.objectives] + [c.metric for c in report.constraints]
                                 + ["nfr", "br"]))
    val = ", ".join(f"{short(m)} {fmt_rate(s.val.loc[idx], m)}" for m in metrics if m in s.val.columns)
    test = ", ".join(f"{short(m)} {fmt_rate(s.test.loc[idx], m)}" for m in metrics if m in s.test.columns)
    head = f"<b>{esc(row['method'])}</b> trial #{int_text(row.get('trial_number'), '?')}, seed {int_text(row.get('seed'), '?')}"
    return (f"{head}<br>{esc(fmt_hparams(hparams_of(row)))}<br>validation: {esc(val)}<br>test: {esc(test)}")


def _vals(df: pd.DataFrame, m: str) -> np.ndarray:
    return df[m].to_numpy(dtype=float, na_value=np.nan) if m in df.columns else np.full(len(df), np.nan)


def _range(values: list[np.ndarray], unit: bool = False) -> tuple[float, float] | None:
    v = np.concatenate([np.asarray(x, dtype=float).ravel() for x in values]) if values else np.array([])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo
    pad = max(0.08 * span, 0.002 if span < 0.5 else 0.02 * abs(hi), 1e-6)
    low, high = lo - pad, hi + pad
    if unit and lo >= 0:                     # a rate: no empty band of impossible negative values
        low = max(low, -min(pad, 0.04 * max(span, 1e-3)))
    return low, high


def _unit(metric: str) -> bool:
    from ..metrics import base_metric, metric_info

    return base_metric(metric) is not None and metric_info(metric).unit_interval


def _axis(metric: str, direction: str | None, rng) -> dict:
    better = {"max": "higher is better", "min": "lower is better"}.get(direction or "", "")
    ax = {"title": {"text": f"{metric}{' (%)' if is_percent(metric) else ''}{', ' + better if better else ''}",
                    "font": {"size": 12}}, "zeroline": False, "gridcolor": "#eee"}
    if is_percent(metric):
        span = (rng[1] - rng[0]) if rng else 1.0
        ax["tickformat"] = ".2%" if span < 0.02 else ".1%" if span < 0.5 else ".0%"
    if rng:
        ax["range"] = list(rng)
    return ax


def _groups(rows: pd.DataFrame, mx: str, my: str) -> list[tuple[float, float, list]]:
    """Rows grouped by identical (x, y): [(x, y, [index, ...])], NaN points dropped."""
    out: dict[tuple[float, float], list] = {}
    for idx, x, y in zip(rows.index, _vals(rows, mx), _vals(rows, my)):
        if math.isfinite(x) and math.isfinite(y):
            out.setdefault((x, y), []).append(idx)
    return [(x, y, ids) for (x, y), ids in out.items()]


def _hover_group(hovers: dict, ids: list) -> str:
    shown = [hovers[i] for i in ids[:MAX_HOVER_TRIALS]]
    more = f"<br>… and {len(ids) - MAX_HOVER_TRIALS} more" if len(ids) > MAX_HOVER_TRIALS else ""
    lead = f"<b>×{len(ids)} trials at this point</b><br>" if len(ids) > 1 else ""
    return lead + "<br>—<br>".join(shown) + more


def front_figure(report: "Report", s: "ScenarioReport") -> str:
    """The scenario's interactive front plot as an HTML div with its script."""
    import plotly.io as pio
    from plotly.subplots import make_subplots

    d = s.plot
    pairs = objective_pairs(report.objectives)
    dirs = {o.metric: o.direction for o in report.objectives}
    if pairs:
        cells = [(p, pair) for p in d.panels for pair in pairs]
        nrows, ncols = (1, len(d.panels)) if len(pairs) == 1 else (len(d.panels), len(pairs))
    else:
        cells = [(p, None) for p in d.panels]
        nrows, ncols = 1, len(d.panels)
    titles = [p.name if len(pairs) <= 1 else f"{p.name}: {short(pair[0])} × {short(pair[1])}" for p, pair in cells]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.09,
                        vertical_spacing=0.16)
    hovers = {idx: hover_text(report, s, idx) for idx in s.val.index[s.val.index.isin(d.panels[0].rows.index)]}
    shown_legend: set[str] = set()

    def legend(name: str) -> bool:
        if name in shown_legend:
            return False
        shown_legend.add(name)
        return True

    for k, (panel, pair) in enumerate(cells):
        r, c = (k // ncols) + 1, (k % ncols) + 1
        if pair is None:
            _single_panel(fig, report, s, panel, r, c, hovers, legend)
            continue
        _pair_panel(fig, report, s, panel, pair, r, c, hovers, legend, dirs)
    fig.update_layout(height=440 * nrows + 40, margin={"l": 60, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.16 if nrows == 1 else -0.06, "x": 0, "font": {"size": 11}},
                      plot_bgcolor="white", hoverlabel={"align": "left", "font": {"size": 11}},
                      font={"family": "system-ui, sans-serif", "size": 12})
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=CONFIG,
                       div_id=f"plotly-front-{safe_name(s.key)}")


def _pair_panel(fig, report, s, panel: Panel, pair, r, c, hovers, legend, dirs) -> None:
    """One subplot: objective pair (x, y) of one panel (validation or test), layer by layer:
    guides, the ce baseline, the trials, the fronts, the front points' seed means."""
    mx, my = pair
    xr, yr = _panel_ranges(panel, mx, my)
    # guides first: bands and lines under the points
    _guides(fig, report, s, panel, mx, "x", xr, r, c)
    _guides(fig, report, s, panel, my, "y", yr, r, c)
    _baseline_trace(fig, s, panel, mx, my, r, c, legend)            # under the trials
    _trial_traces(fig, s, panel, mx, my, xr, yr, r, c, hovers, legend)
    _front_traces(fig, report, panel, mx, my, r, c, hovers, legend)
    _seed_traces(fig, s, panel, mx, my, r, c, legend)
    fig.update_xaxes(**_axis(mx, dirs.get(mx), xr), row=r, col=c)
    fig.update_yaxes(**_axis(my, dirs.get(my), yr), row=r, col=c)


def _panel_ranges(panel: Panel, mx: str, my: str):
    """The x and y ranges that hold the trials, the baseline and the seed intervals."""
    rows = panel.rows
    xs, ys = [_vals(rows, mx)], [_vals(rows, my)]
    b = panel.baseline
    if b is not None and mx in b.index and my in b.index:
        xs.append(np.array([float(b[mx])]))
        ys.append(np.array([float(b[my])]))
    for stats in panel.point_stats.values():
        for m, arr in ((mx, xs), (my, ys)):
            st = stats.get(m)
            if st is not None and st.has_spread:
                arr.append(np.array([st.low, st.high]))
    return _range(xs, _unit(mx)), _range(ys, _unit(my))


def _baseline_trace(fig, s, panel: Panel, mx: str, my: str, r, c, legend) -> None:
    """The ce baseline's mean (with its seed intervals on the test panel)."""
    import plotly.graph_objects as go

    b = panel.baseline
    if b is None or mx not in b.index or my not in b.index:
        return
    sx, sy = panel.baseline_stats.get(mx), panel.baseline_stats.get(my)
    err = {}
    if panel.claimed_index is not None and sx is not None and sy is not None \
            and sx.has_spread and sy.has_spread:                        # the test panel only
        err = {"error_x": _err(sx, "#bbb"), "error_y": _err(sy, "#bbb")}
    n = s.baseline.n if s.baseline is not None else 0
    text = (f"<b>ce baseline</b> (init=old), mean over {n} seed{'s' if n != 1 else ''}<br>"
            f"{esc(short(mx))} {esc(fmt_unit(mx, b[mx], sx.std if sx and sx.has_spread else None))}<br>"
            f"{esc(short(my))} {esc(fmt_unit(my, b[my], sy.std if sy and sy.has_spread else None))}")
    fig.add_trace(go.Scatter(x=[float(b[mx])], y=[float(b[my])], mode="markers", name="ce baseline",
                             legendgroup="ce baseline", showlegend=legend("ce baseline"),
                             marker={"symbol": "star-open", "size": 18, "color": _rgb(s.plot.colors.get("ce", "#555")),
                                     "line": {"width": 1.5}},
                             hovertemplate=text + "<extra></extra>", **err), row=r, col=c)


def _trial_traces(fig, s, panel: Panel, mx: str, my: str, xr, yr, r, c, hovers, legend) -> None:
    """The trials: one marker per (method, point), coincident points of other methods set apart."""
    import plotly.graph_objects as go

    rows, d = panel.rows, s.plot
    groups = {m: _groups(g, mx, my) for m, g in rows.groupby("method", sort=False)}
    where: dict[tuple[float, float], list[str]] = {}
    for m, gs in groups.items():
        for x, y, _ in gs:
            where.setdefault((x, y), []).append(m)
    dx = (xr[1] - xr[0]) * JITTER if xr else 0.0
    dy = (yr[1] - yr[0]) * JITTER if yr else 0.0
    feas = dict(zip(rows.index, panel.feasible))
    for m, gs in groups.items():
        for feasible in (True, False):
            sel = [(x, y, ids) for x, y, ids in gs if bool(feas[ids[0]]) == feasible]
            if not sel:
                continue
            px, py, text, label = [], [], [], []
            for x, y, ids in sel:
                others = where[(x, y)]
                if len(others) > 1:
                    a = 2 * math.pi * others.index(m) / len(others)
                    x, y = x + dx * math.cos(a), y + dy * math.sin(a)
                px.append(x)
                py.append(y)
                text.append(_hover_group(hovers, ids))
                label.append(f"×{len(ids)}" if len(ids) > 1 else "")
            name = m if feasible else f"{m} (breaks a constraint)"
            fig.add_trace(go.Scatter(
                x=px, y=py, mode="markers+text", name=name, legendgroup=m, showlegend=legend(name),
                text=label, textposition="top right", textfont={"size": 10, "color": "#333"},
                hovertext=text, hoverinfo="text",
                marker={"size": 9, "color": _rgb(d.colors.get(m, "#777")) if feasible else "rgba(0,0,0,0)",
                        "line": {"width": 1.2, "color": _rgb(d.colors.get(m, "#777"))},
                        "symbol": "circle" if feasible else "circle-open", "opacity": 0.9}), row=r, col=c)


def _front_traces(fig, report, panel: Panel, mx: str, my: str, r, c, hovers, legend) -> None:
    """The validation-chosen front: rings, and its staircase where it is a front
    (validation); on the test panel the front that choosing on test would have claimed."""
    import plotly.graph_objects as go

    rows = panel.rows
    front = rows.loc[rows.index.intersection(panel.front_index)]
    if len(front):
        fx, fy = _vals(front, mx), _vals(front, my)
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="markers", name="front (chosen on validation)",
                                 legendgroup="front", showlegend=legend("front (chosen on validation)"),
                                 hovertext=[hovers.get(i, "") for i in front.index], hoverinfo="text",
                                 marker={"symbol": "circle-open", "size": 16, "color": "black", "line": {"width": 1.5}}),
                      row=r, col=c)
        if panel.claimed_index is None and len(report.objectives) == 2:
            sx_, sy_ = _stair(front, report.objectives, mx, my)
            fig.add_trace(go.Scatter(x=sx_, y=sy_, mode="lines", line={"color": "black", "width": 1.2, "shape": "hv"},
                                     hoverinfo="skip", showlegend=False, legendgroup="front"), row=r, col=c)
    if panel.claimed_index is not None and len(panel.claimed_index) and len(report.objectives) == 2:
        sx_, sy_ = _stair(rows.loc[panel.claimed_index], report.objectives, mx, my)
        name = "front chosen on test (optimistic)"
        fig.add_trace(go.Scatter(x=sx_, y=sy_, mode="lines", name=name, showlegend=legend(name),
                                 line={"color": "#888", "width": 1.2, "dash": "dot", "shape": "hv"}, hoverinfo="skip"),
                      row=r, col=c)


def _seed_traces(fig, s, panel: Panel, mx: str, my: str, r, c, legend) -> None:
    """Front points' seed means with their 95 % intervals (test)."""
    import plotly.graph_objects as go

    for idx, stats in panel.point_stats.items():
        sx, sy = stats.get(mx), stats.get(my)
        if sx is None or sy is None or not (sx.has_spread and sy.has_spread):
            continue
        row = s.rows.loc[idx]
        text = (f"<b>{esc(row['method'])}</b> trial #{int_text(row.get('trial_number'), '?')}: mean over {sx.n} seeds<br>"
                f"{esc(short(mx))} {esc(fmt_unit(mx, sx.mean, sx.std))} [{esc(fmt(mx, sx.low))}, "
                f"{esc(fmt(mx, sx.high))}]<br>{esc(short(my))} {esc(fmt_unit(my, sy.mean, sy.std))} "
                f"[{esc(fmt(my, sy.low))}, {esc(fmt(my, sy.high))}]")
        name = "front point: seed mean ± 95 % CI"
        fig.add_trace(go.Scatter(
            x=[sx.mean], y=[sy.mean], mode="markers", name=name, legendgroup="seeds", showlegend=legend(name),
            marker={"symbol": "diamond", "size": 8, "color": "white", "line": {"width": 1.5, "color": "black"}},
            error_x=_err(sx, "black"), error_y=_err(sy, "black"),
            hovertemplate=text + "<extra></extra>"), row=r, col=c)


def _err(stat, color: str) -> dict:
    """A plotly error bar from `stat`'s mean to the ends of its interval (never negative)."""
    return {"type": "data", "symmetric": False, "array": [max(0.0, stat.high - stat.mean)],
            "arrayminus": [max(0.0, stat.mean - stat.low)], "color": color, "thickness": 1}


def _stair(front: pd.DataFrame, objectives, mx: str, my: str) -> tuple[list, list]:
    ox, oy = (next(o for o in objectives if o.metric == m) for m in (mx, my))
    sx = 1.0 if ox.direction == "min" else -1.0
    sy = 1.0 if oy.direction == "min" else -1.0
    x, y = _vals(front, mx), _vals(front, my)
    order = np.lexsort((sy * y, sx * x))
    return [float(v) for v in x[order]], [float(v) for v in y[order]]


def _axis_ref(fig, r: int, c: int, which: str) -> str:
    """The axis id ("x3", "y3") of subplot (r, c)."""
    sub = fig.get_subplot(r, c)
    axis = sub.xaxis if which == "x" else sub.yaxis
    name = axis.plotly_name                                  # "xaxis3"
    return which + name[len(which) + 4:]


def _guides(fig, report, s, panel: Panel, metric: str, which: str, rng, r: int, c: int) -> None:
    """M1's value (a line, or an edge annotation when it lies far outside the trials), the
    ce noise band and constraint bounds of `metric`."""
    ax = _axis_ref(fig, r, c, which)
    other = "y" if which == "x" else "x"
    oax = _axis_ref(fig, r, c, other)
    line_kw = lambda v, **style: ({"type": "line", "x0": v, "x1": v, "y0": 0, "y1": 1, "xref": ax,  # noqa: E731
                                   "yref": f"{oax} domain", "layer": "below", **style} if which == "x" else
                                  {"type": "line", "y0": v, "y1": v, "x0": 0, "x1": 1, "yref": ax,
                                   "xref": f"{oax} domain", "layer": "below", **style})
    if metric in panel.m1:
        old = m1_metric(metric) or metric
        value = panel.m1[metric]
        text = f"{short(old)} {fmt_unit(old, value)}"
        inside = rng is not None and rng[0] <= value <= rng[1]
        if inside and near_data(panel.rows, metric, value):
            fig.add_shape(line=dict(color="#555", width=1, dash="dash"), **line_kw(value))
            fig.add_annotation(text=esc(text), showarrow=False, font={"size": 10, "color": "#555"},
                               **({"x": value, "xref": ax, "y": 1, "yref": f"{oax} domain", "xanchor": "left",
                                   "yanchor": "top"} if which == "x" else
                                  {"y": value, "yref": ax, "x": 0, "xref": f"{oax} domain", "xanchor": "left",
                                   "yanchor": "bottom"}))
        else:
            side = "left" if rng is not None and value < rng[0] else "right"
            arrow = {"x": {"left": "←", "right": "→"}, "y": {"left": "↓", "right": "↑"}}[which][side]
            pos = ({"x": 0.0 if side == "left" else 1.0, "xref": f"{ax} domain", "y": 0.02, "yref": f"{oax} domain",
                    "xanchor": "left" if side == "left" else "right", "yanchor": "bottom"} if which == "x" else
                   {"y": 0.0 if side == "left" else 1.0, "yref": f"{ax} domain", "x": 0.02, "xref": f"{oax} domain",
                    "xanchor": "left", "yanchor": "bottom" if side == "left" else "top"})
            fig.add_annotation(text=esc(f"{arrow} {text} (off this axis)"), showarrow=False,
                               font={"size": 10, "color": "#555"}, bgcolor="rgba(255,255,255,0.8)", **pos)
    band = panel.noise.get(metric)
    if band is not None:
        color = s.plot.colors.get("ce", (0.5, 0.5, 0.5))
        if band.high > band.low:
            kw = ({"type": "rect", "x0": band.low, "x1": band.high, "y0": 0, "y1": 1, "xref": ax,
                   "yref": f"{oax} domain"} if which == "x" else
                  {"type": "rect", "y0": band.low, "y1": band.high, "x0": 0, "x1": 1, "yref": ax,
                   "xref": f"{oax} domain"})
            fig.add_shape(fillcolor=_rgba(color, 0.12), line={"width": 0}, layer="below", **kw)
        fig.add_shape(line=dict(color=_rgb(color), width=1, dash="dot"), **line_kw(band.mean))
    for con in report.constraints:
        if con.metric == metric:
            fig.add_shape(line=dict(color="#c0392b", width=1, dash="dash"), **line_kw(con.value))


def _single_panel(fig, report, s, panel: Panel, r, c, hovers, legend) -> None:
    import plotly.graph_objects as go

    o = report.objectives[0]
    rows = panel.rows
    t = rows["trial_number"].to_numpy(dtype=float) if "trial_number" in rows else np.arange(len(rows), dtype=float)
    for m, g in rows.groupby("method", sort=False):
        idx = rows.index.get_indexer(g.index)
        fig.add_trace(go.Scatter(x=t[idx], y=_vals(g, o.metric), mode="markers", name=m, legendgroup=m,
                                 showlegend=legend(m), hovertext=[hovers.get(i, "") for i in g.index],
                                 hoverinfo="text", marker={"size": 9, "color": _rgb(s.plot.colors.get(m, "#777"))}),
                      row=r, col=c)
    rng = _range([_vals(rows, o.metric)], _unit(o.metric))
    _guides(fig, report, s, panel, o.metric, "y", rng, r, c)
    fig.update_xaxes(title={"text": "trial number"}, gridcolor="#eee", row=r, col=c)
    fig.update_yaxes(**_axis(o.metric, o.direction, rng), row=r, col=c)


def convergence_figure(report: "Report") -> str:
    """Validation hypervolume against cumulative update epochs, one line per scenario;
    stopped trials are crosses (they spend epochs and never enter the front)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure()
    for i, s in enumerate(report.scenarios):
        cv = s.curve
        if not cv.hypervolume:
            continue
        ordered = finishing_order(s.rows[~is_replicate(s.rows)])
        text = [f"{esc(s.key)}<br>trial #{int_text(t, '?')} {esc(m)} ({esc(st)}), {int_text(e, '?')} epochs<br>"
                f"cumulative: {ce:g} epochs, {cs:.1f} s update<br>validation hypervolume {hv:.4f}"
                for t, m, st, e, ce, cs, hv in zip(ordered["trial_number"], ordered["method"], ordered["status"],
                                                   ordered["epochs"] if "epochs" in ordered else [None] * len(ordered),
                                                   cv.epochs, cv.seconds, cv.hypervolume)]
        symbols = ["x" if st == "stopped" else "circle-open" if st != "ok" else "circle" for st in cv.status]
        fig.add_trace(go.Scatter(x=cv.epochs, y=cv.hypervolume, mode="lines+markers", name=s.key,
                                 line={"shape": "hv", "width": 1.6}, marker={"symbol": symbols, "size": 7},
                                 hovertext=text, hoverinfo="text"))
    fig.update_layout(height=380, margin={"l": 60, "r": 20, "t": 20, "b": 50}, plot_bgcolor="white",
                      xaxis={"title": {"text": "cumulative update epochs (search trials in finishing order)"},
                             "gridcolor": "#eee"},
                      yaxis={"title": {"text": "hypervolume (validation)"}, "gridcolor": "#eee"},
                      legend={"orientation": "h", "y": -0.25, "x": 0}, hoverlabel={"align": "left"},
                      font={"family": "system-ui, sans-serif", "size": 12})
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=CONFIG, div_id="plotly-convergence")
