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
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from ..objectives import Constraint, Objective
from .configs import hparams_of, is_missing
from .pareto import binding_constraints, closest_to_feasible


def rule_text(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> str:
    first = objectives[0]
    best = "highest" if first.direction == "max" else "lowest"
    cons = ", ".join(map(str, constraints)) if constraints else "no constraints"
    return f"{best} {first.metric} subject to {cons}"


def feasible_mask(df: pd.DataFrame, constraints: Sequence[Constraint]) -> np.ndarray:
    """Rows of `df` satisfying every constraint (a NaN or missing metric never does)."""
    mask = np.ones(len(df), dtype=bool)
    for c in constraints:
        values = df[c.metric].to_numpy(dtype=float, na_value=np.nan) if c.metric in df.columns \
            else np.full(len(df), np.nan)
        mask &= c.satisfied_array(values)
    return mask


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


def trial_cli_flags() -> frozenset[str]:
    """The option names `flipsearch trial` accepts, read from the command itself, so a
    command is never printed with a flag the installed CLI lacks (e.g. `--scale`)."""
    from ..cli import cli

    cmd = cli.commands.get("trial")
    return frozenset(o for p in (cmd.params if cmd else ()) for o in getattr(p, "opts", ()))


def _set_text(value: Any) -> str:
    """`value` written so that `--set KEY=TEXT` parses back to it (the CLI reads TEXT as YAML)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)                                    # round-trips exactly
    if isinstance(value, int):
        return str(value)
    text = str(value)
    try:
        same = yaml.safe_load(text) == text
    except yaml.YAMLError:
        same = False
    return text if same else "'" + text.replace("'", "''") + "'"


def _recipe_value(value: Any, like: Any) -> Any:
    """A recipe cell as the type of the default recipe's field `like`."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(like, bool):
        return value.strip().lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)
    return type(like)(value)


def recipe_settings(row: pd.Series) -> list[str]:
    """`KEY=VALUE` settings for the training-recipe values of `row` that differ from what
    `flipsearch trial` uses by default for its dataset (`flipsearch.trial.DEFAULT_RECIPES`).
    A value shared by both recipes is one `KEY=VALUE` (it sets both); otherwise `m1.KEY` /
    `update.KEY`."""
    from ..trial import DEFAULT_RECIPES, GENERIC_RECIPE, RECIPE_KEYS

    default = DEFAULT_RECIPES.get(str(row.get("dataset")), GENERIC_RECIPE).as_dict()
    out = []
    for key in RECIPE_KEYS:
        vals = {}
        for scope in ("m1", "update"):
            cell = row.get(f"{scope}_{key}")
            if not is_missing(cell):
                vals[scope] = _recipe_value(cell, default[key])
        differs = {s: v for s, v in vals.items() if v != default[key]}
        if len(differs) == 2 and differs["m1"] == differs["update"]:
            out.append(f"{key}={_set_text(differs['m1'])}")
        else:
            out += [f"{s}.{key}={_set_text(v)}" for s, v in differs.items()]
    return out


def trial_command(row: pd.Series, scenario_options: dict[str, Any] | None = None,
                  flags: frozenset[str] | None = None) -> tuple[str, list[str]]:
    """The `flipsearch trial …` command that reruns `row`'s trial, and notes on anything it
    cannot reproduce. `scenario_options` is the sweep's `scenario` block (sweep.json)."""
    opts = scenario_options or {}
    flags = trial_cli_flags() if flags is None else flags
    notes: list[str] = []
    args = ["trial", "--dataset", str(row.get("dataset"))]
    explicit = opts.get("explicit")
    if explicit:
        args += ["--train", str(explicit[0]), "--update", str(explicit[1]), "--test", str(explicit[2])]
    else:
        args += ["--arrangement", str(row.get("arrangement"))]
    args += ["--method", str(row.get("method"))]
    if not is_missing(row.get("model")) and str(row.get("model")):
        args += ["--model", str(row.get("model"))]
    if not is_missing(row.get("seed")):
        args += ["--seed", str(int(row.get("seed")))]
    old_fraction = row.get("old_fraction", opts.get("old_fraction"))
    if not is_missing(old_fraction) and (row.get("arrangement") == "class-incremental" or float(old_fraction) != 0.5):
        args += ["--old-fraction", _set_text(float(old_fraction))]
    critical = row.get("critical_classes")
    critical = "" if is_missing(critical) else str(critical)
    if not critical and opts.get("critical_classes"):
        critical = ",".join(str(int(c)) for c in opts["critical_classes"])
    if critical:
        args += ["--critical-classes", critical]
    for key, flag in (("critical_mask", "--critical-mask"), ("data_root", "--data-root"),
                      ("old_model", "--old-model")):
        if opts.get(key):
            args += [flag, str(opts[key])]
    if opts.get("download"):
        args.append("--download")
    scale = float(opts.get("scale", 1.0) or 1.0)
    if scale < 1.0:
        flag = next((f for f in ("--scale", "--subset") if f in flags), None)
        if flag:
            args += [flag, _set_text(scale)]
        else:
            notes.append(f"the sweep used scale {scale:g} (a stratified {scale:.0%} of the data); "
                         "`flipsearch trial` has no --scale option, so this command trains on the full "
                         "dataset and its metrics will differ")
    for name, value in hparams_of(row).items():
        args += ["--set", f"{name}={_set_text(value)}"]
    for setting in recipe_settings(row):
        args += ["--set", setting]
    return "flipsearch " + shlex.join(args), notes


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
              constraints: Sequence[Constraint], scenario_options: dict[str, Any] | None = None,
              flags: frozenset[str] | None = None) -> Recommendation:
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
    command, notes = trial_command(point, scenario_options, flags)
    n_runs = int(point.get("n_runs", 1) or 1)
    if n_runs > 1:
        notes.append(f"metrics are means over {n_runs} runs (seeds {point.get('seeds')}); "
                     "the command reruns the lowest seed")
    return Recommendation(scenario, rule, feasible, point, binding, command, notes)
