"""One operating point per scenario: the selection rule, the recommendation and the exact
`flipsearch trial …` command that reproduces it.

Rule — "best first objective subject to the constraints": among the configurations (seed
means, see `configs.aggregate_seeds`) whose mean metrics satisfy every constraint, take
the best value of the first objective; ties go to the next objectives in order, then to
the earlier trial. The same rule picks each method's row of the paper-1 table.

When no configuration is feasible the recommendation names the binding constraints
(`pareto.binding_constraints`: the ones to relax) and the closest configuration
(`pareto.closest_to_feasible`: least total violation, each constraint's violation divided
by the spread of its metric).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..objectives import Constraint, Objective

from .pareto import binding_constraints, closest_to_feasible, feasible_mask


def rule_text(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> str:
    """The recommendation rule in words, e.g. "lowest nfr subject to accuracy_new>=0.85"."""
    first = objectives[0]
    best = "highest" if first.direction == "max" else "lowest"
    cons = ", ".join(map(str, constraints)) if constraints else "no constraints"
    return f"{best} {first.metric} subject to {cons}"


def best_operating_point(configs: pd.DataFrame, objectives: Sequence[Objective],
                         constraints: Sequence[Constraint]) -> pd.Series | None:
    """The row of `configs` the rule picks, or None when no row is feasible (or every
    feasible row has a NaN first objective)."""
    cand = configs[feasible_mask(configs, constraints)]
    cand = cand[cand[objectives[0].metric].notna()]
    if len(cand) == 0:
        return None
    keys = [o.metric for o in objectives]
    ascending = [o.direction == "min" for o in objectives]
    if "trial_number" in cand.columns:
        keys, ascending = keys + ["trial_number"], ascending + [True]
    return cand.sort_values(keys, ascending=ascending, kind="stable", na_position="last").iloc[0]


# ----------------------------------------------------------------------- the command


def recorded_device(device: str) -> str:
    """The device a row was trained on, as this machine names it: a worker's `cuda:N` is
    `cuda` (Ray shows each trial its own GPUs); `cpu` stays `cpu`."""
    return "cuda" if device.startswith("cuda") else device


def replay_device(device: str) -> str:
    """Where the report re-runs a row recorded on `device`: on that device, so a report
    machine with a GPU does not re-run CPU rows on CUDA (other kernels, other flips). A CUDA
    row on a machine without CUDA runs on the CPU; the re-run's NFR check then says whether
    it still reproduces the row."""
    import torch

    device = recorded_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return device


def trial_command(row: pd.Series) -> tuple[str, list[str]]:
    """The `flipsearch trial …` command that reruns `row`'s trial (the inverse of the CLI,
    `TrialConfig.to_argv`) on the device it was trained on, and notes on anything it cannot
    reproduce."""
    from ..numerics import threads_of
    from ..results import decode_config

    notes: list[str] = []
    cfg = decode_config(row)
    cfg = cfg.replace(device=recorded_device(cfg.device))
    if cfg.device == "cuda":
        notes.append("trained on a GPU: the command re-runs it there (--device cuda); another device gives "
                     "other float rounding and may flip other samples")
    argv = cfg.to_argv()
    threads = threads_of(row)
    if threads is not None:  # float sums follow the thread count: the row's, for a bitwise re-run
        argv += ["--threads", str(threads)]
    pack = row.get("pack_size")
    if pack is not None and not pd.isna(pack) and int(pack) > 1:
        notes.append(f"the row was trained in a pack of {int(pack)}: the command trains it alone, equal within "
                     "float rounding, not bitwise")
    return "flipsearch " + shlex.join(argv), notes


# ----------------------------------------------------------------- recommendation


@dataclass
class Recommendation:
    """What to deploy in one scenario. `point` is the chosen configuration's seed-mean row
    (the closest one when infeasible; None when the scenario has no successful trial)."""

    scenario: str
    rule: str
    feasible: bool
    point: pd.Series | None
    binding: list[Constraint] = field(default_factory=list)
    command: str | None = None
    notes: list[str] = field(default_factory=list)


def recommend(scenario: str, configs: pd.DataFrame, objectives: Sequence[Objective],
              constraints: Sequence[Constraint]) -> Recommendation:
    """The rule's pick among `configs` (one scenario's seed-mean rows), with its command."""
    rule = rule_text(objectives, constraints)
    if len(configs) == 0:
        return Recommendation(scenario, rule, False, None, list(constraints),
                              notes=["no trial of this scenario finished with status ok"])
    point = best_operating_point(configs, objectives, constraints)
    feasible = point is not None
    binding: list[Constraint] = []
    if not feasible:
        binding = binding_constraints(configs, constraints) if constraints else []
        point = closest_to_feasible(configs, constraints) if constraints else None
        if point is None:                                # no constraints: the objective is NaN
            return Recommendation(scenario, rule, False, None, [],
                                  notes=[f"no configuration has a value for {objectives[0].metric}"])
    command, notes = trial_command(point)
    n_runs = int(point.get("n_runs", 1) or 1)
    if n_runs > 1:
        notes.append(f"metrics are means over {n_runs} runs (seeds {point.get('seeds')}); "
                     "the command reruns the lowest seed")
    return Recommendation(scenario, rule, feasible, point, binding, command, notes)
