"""summary.md: the report document (`document.document`) as Markdown.

Text escapes `& < >` as entities and `\\ ` * [ ] |` (and `_` where it could open emphasis)
with a backslash; code spans take a fence longer than any backtick run inside them.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING

from .blocks import Bold, Cell, Code, Figure, GroupRow, Heading, InlineCode, Link, Para, Raw, Section, Table
from .document import document, flatten

if TYPE_CHECKING:
    from .model import ReportData as Report


_MD_BACKSLASH = re.compile(r"([\\`*\[\]|])")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(text: str) -> str:
    """`text` safe in Markdown that passes HTML through: & < > as entities, \\ ` * [ ] |
    backslash-escaped, `_` where it could open or close emphasis."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = _MD_BACKSLASH.sub(r"\\\1", out)
    out = _MD_UNDERSCORE.sub(r"\\_", out)
    return out.replace("\n", " ")


def md_code(text: str, in_table: bool = False) -> str:
    """A code span holding `text` literally (its fence outgrows any backtick run in it)."""
    text = str(text).replace("\n", " ")
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    if in_table:
        text = text.replace("|", "\\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def md_inline(parts, in_table: bool = False) -> str:
    """Inline parts as Markdown (`in_table`: also escaping `|` inside code spans)."""
    if isinstance(parts, (str, InlineCode, Bold, Link)):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, InlineCode):
            out.append(md_code(p.text, in_table))
        elif isinstance(p, Bold):
            out.append("**" + md_inline(p.parts, in_table) + "**")
        elif isinstance(p, Link):
            href = urllib.parse.quote(p.href, safe="/:#?&=.-_~%")
            out.append(f"[{md_text(p.text)}](<{href}>)")
        else:
            out.append(md_text(str(p)))
    return "".join(out)


def _md_cell(c) -> str:
    if isinstance(c, Cell):
        text = md_inline(c.parts, in_table=True)
        return text + "".join(f"<br>{md_text(line)}" for line in c.sub.split("\n") if line)
    return md_text(str(c))


def render_markdown(report: "Report") -> str:
    """summary.md: the report document as Markdown."""
    lines: list[str] = []
    for b in flatten(document(report)):
        if isinstance(b, Section):
            continue
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + md_text(b.text), ""]
        elif isinstance(b, Para):
            lines += [md_inline(b.parts), ""]
        elif isinstance(b, Table):
            if b.sortable:                         # the all-trials tables live in index.html and trials.csv
                continue
            lines.append("| " + " | ".join(md_text(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            for r in b.rows:
                if isinstance(r, GroupRow):
                    lines.append("| **" + md_text(r.text) + "** |" + " |" * (len(b.headers) - 1))
                else:
                    lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
            lines.append("")
        elif isinstance(b, Code):
            run = max((len(m) for m in re.findall(r"`+", b.text)), default=0)
            fence = "`" * max(3, run + 1)
            lines += [fence + "sh", b.text, fence, ""]
        elif isinstance(b, Figure):
            if b.png is not None:
                lines += [f"![{md_text(b.alt)}](<{urllib.parse.quote(b.name)}>)", ""]
        elif isinstance(b, Raw):
            sub = render_blocks_md(b.md)
            if sub:
                lines += [sub, ""]
    return "\n".join(lines).rstrip() + "\n"


def render_blocks_md(blocks) -> str:
    """The paragraphs among `blocks` as Markdown, one blank line apart."""
    out = []
    for b in blocks:
        if isinstance(b, Para):
            out.append(md_inline(b.parts))
    return "\n\n".join(out)
