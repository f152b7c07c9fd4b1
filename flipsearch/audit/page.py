"""The audit's files: flips.parquet, audit.json and a self-contained offline index.html.

The page is plain HTML and CSS, no script and nothing fetched: the flip matrix is a
heat-map table, the per-class rates are CSS bars, and the flipped images are PNG data URIs
in a CSS grid (nearest-neighbour upscaled, so 8x8 digits stay crisp). It keeps to
72rem like the sweep report, so nothing overflows a 1280 px window; a wide flip matrix
(many classes) scrolls inside its own box.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics import CRITICAL_PREFIX, METRICS, OLD_CLASSES_SUFFIX
from .core import FlipAudit, format_metric
from .images import thumbnail_png, to_pixels

AUDIT_FILES = ("index.html", "audit.json", "flips.parquet")
GALLERY_LIMIT = 200
FULL_MATRIX_MAX_CLASSES = 24  # above this the matrix keeps only classes that take part in a flip

# The audit page's style sheet; the sweep report's page includes it for its flip sections.
CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } .sub { color: #555; margin-top: 0; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
p.note { color: #555; font-size: 13px; margin: .3rem 0 .6rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.meaning { white-space: normal; color: #555; min-width: 16rem; }
.scroll { max-width: 100%; overflow-x: auto; }
table.heat td { text-align: center; min-width: 2.4rem; font-variant-numeric: tabular-nums; }
table.heat td.diag { background: repeating-linear-gradient(45deg, #f3f3f3, #f3f3f3 3px, #e9e9e9 3px, #e9e9e9 6px); }
table.heat td.hot { color: #fff; } table.heat .tot { background: #f8f8f8; font-weight: 600; }
table.heat th.corner { font-weight: normal; color: #555; font-size: 12px; }
.bar { display: inline-block; width: 8rem; height: .7rem; background: #eee; vertical-align: middle;
       margin-right: .4rem; border-radius: 2px; overflow: hidden; }
.bar i { display: block; height: 100%; background: #4a78b5; }
.bar.br i { background: #c0392b; }
tr.critical td { background: #fff4e5 !important; } tr.critical td:first-child { box-shadow: inset 4px 0 #e67e22; }
.badge { display: inline-block; font-size: 11px; padding: 0 .35rem; border-radius: 3px; background: #e67e22;
         color: #fff; margin-left: .3rem; vertical-align: 1px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(12.5rem, 1fr)); gap: .6rem; margin: .6rem 0; }
.card { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .45rem; background: #fff;
        display: flex; gap: .5rem; align-items: flex-start; min-width: 0; font-size: 12px; line-height: 1.35; }
.card.crit { border-color: #e67e22; box-shadow: inset 0 0 0 1px #e67e22; }
.card img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated; background: #000;
            flex: none; border-radius: 3px; }
.card figcaption { min-width: 0; overflow-wrap: anywhere; }
.card .idx { color: #777; } .ok { color: #1e7e34; } .bad { color: #b02a37; } .muted { color: #777; }
details { margin: 1rem 0; } summary { cursor: pointer; font-weight: 600; font-size: 1.05rem; }
.more { color: #555; font-style: italic; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
"""

_TABLE_METRICS = ("accuracy_old", "accuracy_new", "accuracy_gain", "nfr", "pfr", "br", "btc", "bec", "bec_n1",
                  "nfr_rel", "accuracy_ratio", "er_old", "er_new")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float, digits: int = 1) -> str:
    """'12.5&nbsp;%' (a non-breaking space keeps the number and its unit on one line)."""
    return "—" if x != x else f"{x * 100:.{digits}f}&nbsp;%"


def _metrics_table(audit: FlipAudit) -> str:
    m = audit.metrics
    groups = [("all samples", "", "")]
    if "nfr" + OLD_CLASSES_SUFFIX in m:
        groups.append((f"old classes 0..{audit.old_num_classes - 1}", "", OLD_CLASSES_SUFFIX))
    if CRITICAL_PREFIX + "nfr" in m:
        groups.append(("critical", CRITICAL_PREFIX, ""))
    head = "<th>metric</th>" + "".join(
        f"<th class=\"num\">{_e(label)} (n = {m[p + 'n' + s]})</th>" for label, p, s in groups) + "<th>meaning</th>"
    rows = []
    for k in _TABLE_METRICS:
        cells = "".join(f"<td class=\"num\">{_e(format_metric(p + k + s, m[p + k + s]))}</td>" for _, p, s in groups)
        info = METRICS[k]
        rows.append(f"<tr><td><code>{k}</code></td>{cells}<td class=\"meaning\">{_e(info.meaning)} "
                    f"(<code>{_e(info.formula)}</code>)</td></tr>")
    return (f"<div class=\"scroll\"><table id=\"metrics-table\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def flip_matrix_html(audit: FlipAudit) -> str:
    """The old-class × new-class flip matrix of `audit` as an HTML table (wrapped so that a
    wide one scrolls inside its own box); above FULL_MATRIX_MAX_CLASSES classes only those
    taking part in a flip."""
    fm = audit.flip_matrix
    total = int(fm.sum())
    if total == 0:
        return "<p>No negative flips: M2 keeps every sample M1 got right.</p>"
    names = audit.class_names
    c = fm.shape[0]
    rows_idx = np.arange(c) if c <= FULL_MATRIX_MAX_CLASSES else np.flatnonzero(fm.sum(1))
    cols_idx = np.arange(c) if c <= FULL_MATRIX_MAX_CLASSES else np.flatnonzero(fm.sum(0))
    peak = int(fm.max())
    head = "<th class=\"corner\">true ↓ · M2 →</th>" + "".join(
        f"<th class=\"num\" title=\"class {j}\">{_e(names[j])}</th>" for j in cols_idx)
    head += "<th class=\"num tot\">Σ</th>"
    body = []
    for i in rows_idx:
        cells = []
        for j in cols_idx:
            v = int(fm[i, j])
            if i == j:
                cells.append("<td class=\"diag\" title=\"not a flip: M2 is right here\"></td>")
            elif v == 0:
                cells.append("<td></td>")
            else:
                alpha = 0.15 + 0.85 * v / peak
                hot = " hot" if alpha > 0.55 else ""
                cells.append(f"<td class=\"num{hot}\" style=\"background: rgba(192, 57, 43, {alpha:.2f})\" "
                             f"title=\"{v} sample(s) of {_e(names[i])} now predicted {_e(names[j])}\">{v}</td>")
        body.append(f"<tr><th title=\"class {i}\">{_e(names[i])}</th>{''.join(cells)}"
                    f"<td class=\"num tot\">{int(fm[i].sum())}</td></tr>")
    foot = "<tr><th class=\"tot\">Σ</th>" + "".join(
        f"<td class=\"num tot\">{int(fm[:, j].sum())}</td>" for j in cols_idx)
    foot += f"<td class=\"num tot\">{total}</td></tr>"
    shown = "" if c <= FULL_MATRIX_MAX_CLASSES else (
        f"<p class=\"note\">Only the {len(rows_idx)} true and {len(cols_idx)} predicted classes that take part in a "
        f"negative flip are shown (of {c}).</p>")
    return (f"{shown}<div class=\"scroll\"><table class=\"heat\" id=\"flip-matrix-table\">"
            f"<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}{foot}</tbody></table></div>")


def _bar(value: float, peak: float, kind: str) -> str:
    width = 0.0 if value != value or peak <= 0 else 100.0 * value / peak
    return f"<span class=\"bar {kind}\"><i style=\"width: {width:.1f}%\"></i></span>"


def _per_class(audit: FlipAudit) -> str:
    pc = audit.per_class
    crit = set(audit.critical_classes)
    with_mask = audit.critical_mask is not None
    peak_nfr, peak_br = float(np.nanmax(pc["nfr"], initial=0)), float(np.nanmax(pc["br"], initial=0))
    rows = []
    for r in pc.to_dict("records"):
        c = int(r["class"])
        badge = "<span class=\"badge\">critical</span>" if c in crit else ""
        tr = "<tr class=\"critical\">" if c in crit else "<tr>"
        rows.append(
            f"{tr}<td>{_e(r['name'])}{badge}</td>"
            f"<td class=\"num\">{r['n']}</td><td class=\"num\">{r['n_old_right']}</td>"
            f"<td class=\"num\">{r['n_negative_flips']}</td>"
            f"<td>{_bar(r['nfr'], peak_nfr, 'nfr')}{_pct(r['nfr'], 2)} ({r['n_negative_flips']} / {r['n']})</td>"
            f"<td>{_bar(r['br'], peak_br, 'br')}{_pct(r['br'], 2)} ({r['n_negative_flips']} / {r['n_old_right']})</td>"
            f"<td class=\"num\">{r['n_positive_flips']}</td>"
            + (f"<td class=\"num\">{r['n_critical']}</td>" if with_mask else "") + "</tr>")
    head = ("<th>class</th><th class=\"num\">samples</th><th class=\"num\">M1 right</th>"
            "<th class=\"num\">negative flips</th><th>NFR (flips / samples)</th><th>BR (flips / M1 right)</th>"
            "<th class=\"num\">positive flips</th>" + ("<th class=\"num\">critical samples</th>" if with_mask else ""))
    note = ("Bars are relative to the largest class value of each column"
            + ("; classes with critical samples are highlighted." if crit else "."))
    return (f"<p class=\"note\">{note}</p><div class=\"scroll\"><table id=\"per-class-table\"><thead><tr>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>")


def flip_cards(audit: FlipAudit, kind: str, thumbs: dict[int, str], limit: int) -> tuple[str, int]:
    """The gallery of `kind` ("negative" or "positive") flips, most confident first, at most
    `limit` cards with their thumbnails (`thumbs`: sample index -> data URI); (html, cards shown)."""
    f = audit.flips[audit.flips["kind"] == kind]
    order_col = "new_p_pred" if kind == "negative" else "old_p_pred"
    f = f.sort_values([order_col, "sample_index"], ascending=[False, True], kind="stable")
    shown = f.head(limit)
    cards = []
    for r in shown.to_dict("records"):
        i = int(r["sample_index"])
        old_cls, new_cls = ("ok", "bad") if kind == "negative" else ("bad", "ok")
        src = thumbs.get(i)
        img = (f"<img src=\"{src}\" loading=\"lazy\" decoding=\"async\" width=\"64\" height=\"64\" "
               f"alt=\"sample {i}: true {_e(r['label_name'])}, M1 {_e(r['old_pred_name'])}, "
               f"M2 {_e(r['new_pred_name'])}\">") if src else ""
        badge = "<span class=\"badge\">critical</span>" if r["critical"] else ""
        true_line = (f"M2 p(true) {_pct(r['new_p_true'])}" if kind == "negative"
                     else f"M1 p(true) {_pct(r['old_p_true'])}")
        cards.append(
            f"<figure class=\"card{' crit' if r['critical'] else ''}\" data-index=\"{i}\">{img}<figcaption>"
            f"<div class=\"idx\">#{i}{badge}</div><div>true <b>{_e(r['label_name'])}</b></div>"
            f"<div class=\"{old_cls}\">M1 <b>{_e(r['old_pred_name'])}</b> {_pct(r['old_p_pred'])}</div>"
            f"<div class=\"{new_cls}\">M2 <b>{_e(r['new_pred_name'])}</b> {_pct(r['new_p_pred'])}</div>"
            f"<div class=\"muted\">{true_line}</div></figcaption></figure>")
    more = len(f) - len(shown)
    tail = (f"<p class=\"more\">{more} more not shown (every flip is in <code>flips.parquet</code>).</p>"
            if more > 0 else "")
    grid = f"<div class=\"grid\">{''.join(cards)}</div>" if cards else "<p>None.</p>"
    return grid + tail, len(f)


def gallery_indices(audit: FlipAudit, limit: int = GALLERY_LIMIT) -> list[int]:
    """Sample indices the page shows an image for: the first `limit` of each flip kind in
    gallery order (negative: M2's most confident mistakes first; positive: M1's)."""
    out: list[int] = []
    for kind, col in (("negative", "new_p_pred"), ("positive", "old_p_pred")):
        f = audit.flips[audit.flips["kind"] == kind]
        f = f.sort_values([col, "sample_index"], ascending=[False, True], kind="stable")
        out += [int(i) for i in f["sample_index"].head(limit)]
    return out


def render_html(audit: FlipAudit, thumbs: dict[int, str], limit: int = GALLERY_LIMIT) -> str:
    """The page; `thumbs` maps a sample index to its image's data URI."""
    meta = audit.meta
    title = meta.get("title") or "flip audit"
    facts = [f"{key} {meta[key]}" for key in ("dataset", "split", "model", "arrangement", "seed")
             if meta.get(key) is not None]
    facts += [f"{audit.n} samples", f"M1 {audit.old.num_outputs} outputs", f"M2 {audit.new.num_outputs} outputs"]
    m = audit.metrics
    lead = (f"M2 breaks <b>{m['n_negative_flips']}</b> of the {m['accuracy_old'].count} samples M1 got right "
            f"(NFR {_e(format_metric('nfr', m['nfr']))}, BR {_e(format_metric('br', m['br']))}) and fixes "
            f"<b>{m['n_positive_flips']}</b> (PFR {_e(format_metric('pfr', m['pfr']))}).")
    neg_html, n_neg = flip_cards(audit, "negative", thumbs, limit)
    pos_html, n_pos = flip_cards(audit, "positive", thumbs, limit)
    body = [
        f"<header><h1>Flip audit</h1><p class=\"sub\">{_e(title)}</p><p class=\"sub\">{_e(' · '.join(facts))}</p>"
        f"<p>{lead}</p></header>",
        f"<section id=\"metrics\"><h2>Metrics</h2>{_metrics_table(audit)}</section>",
        "<section id=\"flip-matrix\"><h2>Negative flips: true class × M2's prediction</h2>"
        "<p class=\"note\">A cell counts the samples of the row's class that M1 classified right and M2 now puts in "
        "the column's class.</p>" + flip_matrix_html(audit) + "</section>",
        f"<section id=\"per-class\"><h2>Per class</h2>{_per_class(audit)}</section>",
        f"<section id=\"gallery\"><h2>Negative flips ({n_neg})</h2><p class=\"note\">M1 right, M2 wrong; M2's most "
        "confident mistakes first. Percentages are each model's probability of its prediction, p(true) of the "
        f"true class.</p>{neg_html}</section>",
        f"<section id=\"positive\"><details><summary>Positive flips ({n_pos})</summary><p class=\"note\">M1 wrong, M2 "
        f"right; M1's most confident mistakes first.</p>{pos_html}</details></section>",
        "<footer><p class=\"note\">Beside this page: <code>flips.parquet</code> (one row per flip) and "
        "<code>audit.json</code> (every metric with its count and denominator).</p></footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e('flip audit: ' + title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_audit(audit: FlipAudit, out_dir: str | Path, images: Any = None, *,
                value_range: tuple[np.ndarray, np.ndarray] | None = None,
                gallery_limit: int = GALLERY_LIMIT) -> dict[str, str]:
    """Write flips.parquet, audit.json and index.html into `out_dir` (created).

    `images`: the split's inputs [N, C, H, W], rows as in the audit (normalised floats,
    mapped back to pixels with `value_range`, see `images.to_pixels`; or uint8 pixels), or
    None for a page without pictures. Only the shown flips are converted. Returns
    {file name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thumbs: dict[int, str] = {}
    if images is not None:
        if len(images) != audit.n:
            raise ValueError(f"images has {len(images)} rows but the audit has {audit.n} samples")
        idx = gallery_indices(audit, gallery_limit)
        if idx:
            rows = torch.as_tensor(idx) if isinstance(images, torch.Tensor) else np.asarray(idx)
            px = to_pixels(images[rows], value_range)
            thumbs = {i: "data:image/png;base64," + base64.b64encode(thumbnail_png(p)).decode("ascii")
                      for i, p in zip(idx, px)}
    paths = {name: str(out / name) for name in AUDIT_FILES}
    audit.flips.to_parquet(paths["flips.parquet"], index=False)
    Path(paths["audit.json"]).write_text(json.dumps(audit.to_json(), indent=2, allow_nan=False) + "\n")
    Path(paths["index.html"]).write_text(render_html(audit, thumbs, gallery_limit), encoding="utf-8")
    return paths
