"""What `flipsearch report` prints: the report document (`document.document`) as plain text.

It fits the terminal's width: a table wider than it is stacked (each row as a block of
"header: value" lines); the counts and intervals under a cell's value are shown on request
(`counts=True`, the CLI's `--counts`). The full tables are in summary.md and index.html.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Sequence

from .blocks import Bold, Cell, Code, Figure, GroupRow, Heading, InlineCode, Link, Para, Raw, Table
from .document import document, flatten

if TYPE_CHECKING:
    from .model import ReportData as Report


def plain(parts) -> str:
    """Inline parts as plain text (code, bold and links lose their markup)."""
    if isinstance(parts, (str, InlineCode, Bold, Link)):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, InlineCode):
            out.append(p.text)
        elif isinstance(p, Bold):
            out.append(plain(p.parts))
        elif isinstance(p, Link):
            out.append(p.text)
        else:
            out.append(str(p))
    return "".join(out)


def _plain_cell(c, counts: bool = True) -> str:
    """A cell's text; with `counts`, its second line (counts, interval) below it."""
    if isinstance(c, Cell):
        return plain(c.parts) + (f"\n{c.sub}" if c.sub and counts else "")
    return str(c)


def aligned(headers: list[str], rows: list, indent: str = "  ") -> str:
    """A plain-text table with columns padded to their widest line; a cell may hold
    several lines (a row is then as tall as its tallest cell); a row that is a plain
    string is a group heading."""
    split = [r if isinstance(r, str) else [c.split("\n") for c in r] for r in rows]
    cells = [r for r in split if not isinstance(r, str)]
    widths = [max([len(h)] + [len(line) for r in cells for line in r[i]]) for i, h in enumerate(headers)]
    out = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
           indent + "  ".join("-" * w for w in widths)]
    for r in split:
        if isinstance(r, str):                          # a group heading
            out.append(indent + r)
            continue
        for k in range(max((len(c) for c in r), default=1)):
            out.append(indent + "  ".join((c[k] if k < len(c) else "").ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(out)


def stacked(headers: Sequence[str], rows: list, width: int, indent: str = "  ") -> str:
    """A table too wide for `width` columns, one row after the other: its first cell as the
    row's title, then one "header: value" line per other non-empty cell (a cell's lines
    joined by " · "); a line still longer than `width` ends in "…"."""

    def fit(line: str) -> str:
        return line if len(line) <= width else line[: max(1, width - 1)] + "…"

    out = []
    for r in rows:
        if isinstance(r, str):                          # a group heading
            out.append(fit(indent + r))
            continue
        cells = [" · ".join(x for x in c.split("\n") if x) for c in r]
        out.append(fit(f"{indent}- {cells[0] or '—'}"))
        out += [fit(f"{indent}    {h}: {c}") for h, c in zip(headers[1:], cells[1:]) if c]
    return "\n".join(out)


def table_text(headers: Sequence[str], rows: list, width: int | None = None) -> str:
    """`aligned` when it fits `width` columns (None: no limit), else `stacked`."""
    text = aligned(list(headers), rows)
    if width is None or max(len(line) for line in text.splitlines()) <= width:
        return text
    return stacked(headers, rows, width)


def terminal_width() -> int:
    """The terminal's width in columns (COLUMNS, else the terminal's, else 100)."""
    return shutil.get_terminal_size((100, 24)).columns


def render_terminal(report: "Report", width: int | None = None, counts: bool = True) -> str:
    """The report as plain text for a terminal of `width` columns (default: this terminal's):
    a table wider than that is stacked, one row after the other. `counts=False` leaves out
    the counts and intervals under the values (the files always have them)."""
    width = terminal_width() if width is None else width
    lines: list[str] = []
    for b in flatten(document(report)):
        if isinstance(b, Heading):
            text = b.text
            lines += ["", text, ("=" if b.level == 1 else "-" if b.level == 2 else "~") * len(text)]
        elif isinstance(b, Para):
            lines.append(plain(b.parts))
        elif isinstance(b, Table):
            if b.sortable:
                continue
            cols = b.terminal_cols if b.terminal_cols is not None else range(len(b.headers))
            lines.append(table_text([b.headers[i] for i in cols],
                                    [r.text if isinstance(r, GroupRow) else [_plain_cell(r[i], counts) for i in cols]
                                     for r in b.rows], width))
        elif isinstance(b, Code):
            lines.append("  $ " + b.text)
        elif isinstance(b, Figure):
            if b.png is not None:
                where = f"{report.report_dir.rstrip('/')}/{b.name}" if report.report_dir else b.name
                lines.append(f"  plot: {where}")
        elif isinstance(b, Raw):
            lines += [plain(x.parts) for x in b.text if isinstance(x, Para)]
    return "\n".join(lines).strip() + "\n"
