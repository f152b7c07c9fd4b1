"""Reports over sweep results: Pareto fronts and hypervolume (`pareto`), tables, plots, HTML.

The Pareto helpers are re-exported here: `pareto_mask`, `pareto_front`, `hypervolume`,
`hypervolume_history`, `default_reference`, `closest_to_feasible`, `binding_constraints`
(the dominance maths itself is `flipsearch._pareto`, shared with the scheduler).
The report itself: `build_report(out)` (`build`: the computation) -> `Report` (`export`:
`.write(dir)`, `.to_json()`, over the data classes of `model`). The document is built once
(`blocks` the block model, `document` the content) and written by `markdown`, `terminal`
and `html` (`render` keeps the old names importable). It
chooses on validation and reports on test (`selection`: the one mapping of `val_*` to the
plain metric names), from `aggregate_seeds` (seed means per configuration, `configs`),
`paper1_table` (`tables`), `recommend.recommend` / `trial_command` (`recommend`), the seed
spread (`stats`), the `ce` baseline and noise floor (`baselines`), the optimism gap
(`optimism`), early stopping (`early`), the flip comparison (`flips`), the plots (`plots`
PNG, `interactive` plotly) and the renderers (`render`, `html`).
"""

from .build import build_report
from .export import Report
from .configs import aggregate_seeds
from .pareto import (
    binding_constraints,
    closest_to_feasible,
    default_reference,
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_mask,
)
from .recommend import trial_command
from .tables import paper1_table

__all__ = [
    "Report",
    "aggregate_seeds",
    "binding_constraints",
    "build_report",
    "closest_to_feasible",
    "default_reference",
    "hypervolume",
    "hypervolume_history",
    "paper1_table",
    "pareto_front",
    "pareto_mask",
    "trial_command",
]
