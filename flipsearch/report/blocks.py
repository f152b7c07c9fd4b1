"""The report as a document: a small block model (headings, paragraphs, tables, commands,
figures) that the Markdown, terminal and HTML writers each render.

Text is kept as inline parts so that user strings (dataset paths, hyperparameter values,
scenario names) are always escaped for the target: a plain `str` part is text,
`InlineCode` is code, `Bold` bold, `Link` a link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

@dataclass
class InlineCode:
    """Inline code."""
    text: str


@dataclass
class Bold:
    """Bold inline parts."""
    parts: list


@dataclass
class Link:
    """An inline link: its text and its target."""
    text: str
    href: str


Inline = Union[str, InlineCode, Bold, Link]


@dataclass
class Heading:
    """A heading of `level` 1-3, with an optional anchor for the page's table of contents."""
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    """A paragraph of inline parts (`cls`: a CSS class on the page)."""
    parts: list  # of Inline
    cls: str = ""


@dataclass
class Cell:
    """A table cell: its text, an optional second line (counts, interval) and the value a
    browser sorts on."""
    parts: list
    sub: str = ""
    sort: Any = None
    num: bool = False
    cls: str = ""


@dataclass
class GroupRow:
    """A row spanning the table: the heading of the rows below it (a scenario)."""
    text: str


@dataclass
class Table:
    """A table: headers, rows of cells (or a `GroupRow`), and how the page and the terminal show it."""
    headers: list[str]
    rows: list[list]           # of Cell (or str)
    id: str = ""
    cls: str = ""
    sortable: bool = False
    terminal_cols: list[int] | None = None            # the columns the terminal shows (None: all)


@dataclass
class Code:
    """A shell command, shown as a code block."""
    text: str


@dataclass
class Figure:
    """A plot: the interactive `html()` on the page (drawn only when the page is), the PNG
    `name` in Markdown."""
    name: str
    png: bytes | None
    alt: str
    html: Any = None          # a callable returning the plot's HTML, or None for the PNG itself
    id: str = ""


@dataclass
class Raw:
    """HTML-only content, with what Markdown and the terminal show instead."""
    html: str
    md: list = field(default_factory=list)
    text: list = field(default_factory=list)


@dataclass
class Section:
    """A group of blocks with an id (`cls` = document.HTML_ONLY keeps it to the page)."""
    id: str
    blocks: list
    cls: str = ""


Block = Union[Heading, Para, Table, Code, Figure, Raw, Section]

def para(*parts, cls: str = "") -> Para:
    """A `Para` of the given inline parts."""
    return Para(list(parts), cls)


def cell(text, sub: str = "", sort=None, num: bool = False, cls: str = "") -> Cell:
    """A `Cell` of `text` (a part or a list of parts); see `Cell` for the rest."""
    return Cell(text if isinstance(text, list) else [text], sub, sort, num, cls)
