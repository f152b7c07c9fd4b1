"""Reports over sweep results: Pareto fronts and hypervolume (`pareto`), tables, plots, HTML.

The Pareto helpers are re-exported here: `pareto_mask`, `pareto_front`, `hypervolume`,
`hypervolume_history`, `default_reference`, `closest_to_feasible`, `binding_constraints`.
"""

from .pareto import (
    binding_constraints,
    closest_to_feasible,
    default_reference,
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_mask,
)

__all__ = [
    "binding_constraints",
    "closest_to_feasible",
    "default_reference",
    "hypervolume",
    "hypervolume_history",
    "pareto_front",
    "pareto_mask",
]
