"""The report's renderers, by their old address: the block model is in `blocks`, the content
in `document`, the writers in `markdown`, `terminal` and `html`. Import from those; the names
stay importable here for code written against this module."""

from .blocks import (  # noqa: F401
    Block,
    Bold,
    Cell,
    Code,
    Figure,
    GroupRow,
    Heading,
    Inline,
    InlineCode,
    Link,
    Para,
    Raw,
    Section,
    Table,
    cell,
    para,
)
from .document import (  # noqa: F401
    HTML_ONLY,
    INFEASIBLE_MARK,
    all_trials_block,
    cost_block,
    document,
    flatten,
    fmt_rate_audit,
    front_block,
    no_spread,
    noise_text,
    optimism_block,
    paper1_block,
    rate_cell,
    signed,
    stat_cell,
    stat_text,
)
from .markdown import (  # noqa: F401
    md_code,
    md_inline,
    md_text,
    render_blocks_md,
    render_markdown,
)
from .terminal import (  # noqa: F401
    aligned,
    plain,
    render_terminal,
    stacked,
    table_text,
    terminal_width,
)
