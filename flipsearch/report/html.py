"""index.html: the report document as one self-contained page.

plotly.js is inlined once in the head and every plot is a div drawn by it; flip thumbnails
are `data:` URIs; the style sheet and the few lines of table-sorting script are inline. The
file opens offline, can be mailed, and needs nothing beside it (the links to trials.csv,
front.parquet and the PNGs are relative, for when it sits in its report directory).

Layout: one column of at most 80rem; tables wrap their hyperparameters and headers rather
than widen the page, and a table that is still too wide (many objectives) scrolls inside
its own box, never the page. The flip matrices sit side by side and fit their cards at a 1280 px
window (heads wrap, cells narrow; many classes scroll with a drawn scrollbar), the three flip galleries
in three columns.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._format import esc
from .blocks import Bold, Cell, Code, Figure, GroupRow, Heading, InlineCode, Link, Para, Raw, Section, Table
from .document import document

if TYPE_CHECKING:
    from .model import ReportData as Report

_CSS = """
body { max-width: 80rem; }
h2 { scroll-margin-top: .5rem; } h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
h4 { font-size: .95rem; margin: .8rem 0 .3rem; }
nav.toc { font-size: 13px; background: #f7f7f7; border: 1px solid #e3e3e3; border-radius: 6px; padding: .4rem .8rem; }
nav.toc a { margin-right: .9rem; white-space: nowrap; }
section.scenario { border-top: 3px solid #4a78b5; margin-top: 2.4rem; }
section.scenario > h2 { border-bottom: none; margin-top: .8rem; }
.tablewrap { max-width: 100%; overflow-x: auto; margin: .4rem 0 1rem; }
.tablewrap table { margin: 0; }
table.report th { white-space: normal; vertical-align: bottom; min-width: 3.2rem; }
table.report td { vertical-align: top; }
table.report td .sub { display: block; color: #666; font-size: 11px; white-space: normal; }
table.report td.hp { white-space: normal; overflow-wrap: anywhere; min-width: 8rem; max-width: 18rem; }
table.report td.wrap { white-space: normal; min-width: 7rem; }
table.report tbody tr:nth-child(even) td { background: #fafafa; }
table.paper1 { width: 100%; }
tr.group th { background: #eef3fa; text-align: left; font-size: 13px; padding: .3rem .5rem; }
table.report td.metrics { white-space: normal; min-width: 15rem; }
table.report td.metrics .sub { font-size: 12px; color: #222; }
table.sortable th { cursor: pointer; user-select: none; position: relative; padding-right: 1rem; }
table.sortable th::after { content: "↕"; position: absolute; right: .25rem; color: #bbb; font-size: 11px; }
table.sortable th[aria-sort="ascending"]::after { content: "▲"; color: #333; }
table.sortable th[aria-sort="descending"]::after { content: "▼"; color: #333; }
td.st-stopped { color: #8a6d00; } td.st-failed, td.st-diverged { color: #b02a37; }
figure.plot { margin: .6rem 0 1rem; border: 1px solid #eee; border-radius: 6px; padding: .3rem; }
figure.plot .png { font-size: 12px; color: #777; margin: 0 .4rem; }
pre { background: #f6f8fa; padding: .6rem .8rem; overflow-x: auto; border-radius: 4px; white-space: pre-wrap;
      overflow-wrap: anywhere; }
.flipcols { display: grid; grid-template-columns: repeat(auto-fit, minmax(24rem, 1fr)); gap: 1rem; }
.flipcol { min-width: 0; border: 1px solid #eee; border-radius: 6px; padding: .2rem .7rem .6rem; }
/* The flip matrices fit their card: column heads wrap (long class names), cells stay narrow;
   a matrix still too wide (many classes) scrolls with a scrollbar that is always drawn. */
.flipcol table.heat { font-size: 12px; }
.flipcol table.heat th, .flipcol table.heat td { padding: .2rem .25rem; }
.flipcol table.heat thead th { white-space: normal; overflow-wrap: anywhere; font-size: 11px;
                              min-width: 2.2rem; vertical-align: bottom; }
.flipcol table.heat td { min-width: 1.6rem; }
.flipcol table.heat th.corner { width: 4.5rem; font-size: 10px; }
.flipcol table.heat tbody th { font-size: 11px; }
.flipcol .scroll { scrollbar-width: thin; scrollbar-color: #aaa #f0f0f0; padding-bottom: 2px; }
.flipcol .scroll::-webkit-scrollbar { height: 9px; }
.flipcol .scroll::-webkit-scrollbar-track { background: #f0f0f0; border-radius: 4px; }
.flipcol .scroll::-webkit-scrollbar-thumb { background: #aaa; border-radius: 4px; }
.flipsets { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .8rem; margin-top: .6rem; }
.flipset { min-width: 0; border: 1px solid #eee; border-radius: 6px; padding: .2rem .6rem .5rem; }
.flipset .grid { grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); }
.flipset:nth-child(2) { border-color: #e8b4b8; } .flipset:nth-child(3) { border-color: #b5dcc0; }
p.lead { font-size: 15px; }
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.setAttribute('title', 'sort by ' + th.textContent);
    th.addEventListener('click', function () {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var key = function (row) {
        var c = row.cells[col];
        if (c.hasAttribute('data-v')) { var v = c.getAttribute('data-v'); return v === '' ? null : parseFloat(v); }
        return c.textContent.trim().toLowerCase();
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var d = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _inline(parts) -> str:
    if isinstance(parts, (str, InlineCode, Bold, Link)):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, InlineCode):
            out.append(f"<code>{esc(p.text)}</code>")
        elif isinstance(p, Bold):
            out.append(f"<strong>{_inline(p.parts)}</strong>")
        elif isinstance(p, Link):
            out.append(f"<a href=\"{esc(p.href)}\">{esc(p.text)}</a>")
        else:
            out.append(esc(p))
    return "".join(out)


def _cell(c) -> str:
    if not isinstance(c, Cell):
        return f"<td>{esc(c)}</td>"
    cls = " ".join(x for x in ("num" if c.num else "", c.cls) if x)
    attrs = f" class=\"{cls}\"" if cls else ""
    if c.sort is not None and not isinstance(c.sort, str):
        try:
            v = float(c.sort)
        except (TypeError, ValueError):
            v = math.nan
        attrs += f" data-v=\"{'' if math.isnan(v) else repr(v)}\""
    sub = "".join(f"<span class=\"sub\">{esc(line)}</span>" for line in c.sub.split("\n") if line)
    return f"<td{attrs}>{_inline(c.parts)}{sub}</td>"


def _table(t: Table) -> str:
    cls = " ".join(x for x in ("report", t.cls, "sortable" if t.sortable else "") if x)
    head = "".join(f"<th scope=\"col\">{esc(h)}</th>" for h in t.headers)
    rows = "".join(f"<tr class=\"group\"><th colspan=\"{len(t.headers)}\">{esc(r.text)}</th></tr>"
                   if isinstance(r, GroupRow) else "<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in t.rows)
    ident = f" id=\"{esc(t.id)}\"" if t.id else ""
    return (f"<div class=\"tablewrap\"><table{ident} class=\"{cls}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def _block(b) -> str:
    if isinstance(b, Section):
        inner = "\n".join(_block(x) for x in b.blocks)
        return f"<section id=\"{esc(b.id)}\" class=\"{esc(b.cls)}\">\n{inner}\n</section>"
    if isinstance(b, Heading):
        ident = f" id=\"{esc(b.anchor)}\"" if b.anchor else ""
        return f"<h{b.level}{ident}>{esc(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p{' class=' + chr(34) + esc(b.cls) + chr(34) if b.cls else ''}>{_inline(b.parts)}</p>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Code):
        return f"<pre><code>{esc(b.text)}</code></pre>"
    if isinstance(b, Figure):
        ident = f" id=\"{esc(b.id)}\"" if b.id else ""
        png = (f"<figcaption class=\"png\">Static version: <a href=\"{esc(b.name)}\">{esc(b.name)}</a></figcaption>"
               if b.png is not None else "")
        body = b.html() if b.html is not None else ""
        return f"<figure class=\"plot\"{ident} data-file=\"{esc(b.name)}\">{body}{png}</figure>"
    if isinstance(b, Raw):
        return b.html
    raise TypeError(f"unknown block {type(b).__name__}")


def _toc(blocks) -> str:
    links = []

    def walk(bs):
        for b in bs:
            if isinstance(b, Section):
                walk(b.blocks)
            elif isinstance(b, Heading) and b.level == 2 and b.anchor:
                links.append(f"<a href=\"#{esc(b.anchor)}\">{esc(b.text)}</a>")

    walk(blocks)
    return f"<nav class=\"toc\">{''.join(links)}</nav>" if links else ""


def render_html(report: "Report") -> str:
    """index.html: the report document as one self-contained page."""
    from ..audit.page import CSS as AUDIT_CSS
    from .interactive import plotly_js

    blocks = document(report)
    body = [_block(blocks[0]), _toc(blocks)] + [_block(b) for b in blocks[1:]]
    title = esc(f"flipsearch report: {report.name}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n"
            f"<style>{AUDIT_CSS}{_CSS}</style>\n<script>{plotly_js()}</script>\n</head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_SORT_JS}</script>\n</body>\n</html>\n")
