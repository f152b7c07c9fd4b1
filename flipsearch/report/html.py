"""index.html: the report document as one self-contained page.

Plots are embedded as `data:image/png;base64,…` URIs and the style sheet is inline, so the
file opens offline, can be mailed, and needs nothing beside it.
"""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING

from .render import Code, Heading, Image, Para, Table, document

if TYPE_CHECKING:
    from .build import Report

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: .6rem .8rem; overflow-x: auto; border-radius: 4px; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
img { max-width: 100%; border: 1px solid #eee; }
"""

_NUMERIC = re.compile(r"^[-+]?[\d.]+( ± [\d.]+)?$|^—$")


def _inline(text: str) -> str:
    """Escape, then `code` -> <code> and **bold** -> <strong>."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(report: "Report") -> str:
    body: list[str] = []
    for b in document(report):
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td class=\"num\">{html.escape(c)}</td>" if _NUMERIC.match(c)
                                 else f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Code):
            body.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif isinstance(b, Image):
            body.append(f"<figure><img src=\"{data_uri(b.png)}\" alt=\"{html.escape(b.alt)}\" "
                        f"data-file=\"{html.escape(b.name)}\"></figure>")
    title = html.escape(f"flipsearch report: {report.name}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
