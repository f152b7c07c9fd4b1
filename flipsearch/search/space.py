"""Search-space files: parsed, validated against every method's schema, and sampled.

A file names the scenarios (datasets × arrangements × models × seeds, training recipes),
the objectives and constraints, the search settings, and per method either fixed values or
distributions for its hyperparameters:

    uniform: [lo, hi]      loguniform: [lo, hi]      int: [lo, hi]   (log: true optional)
    choice: [a, b, ...]    a plain value (fixed)

A method block may also give its update's training recipe, fixed or searched, as
`update.KEY` (or a nested `update: {KEY: ...}`), KEY one of `RECIPE_SEARCH` (lr, epochs,
weight_decay, grad_clip, optimizer, momentum, schedule): `fd: {update.lr: {loguniform:
[1e-4, 0.1]}}` samples fd's learning rate per trial, so no method runs at a learning rate
tuned for another. The values land in the trial's `update_recipe` (the rows' `update_*`
columns, its reproduce command); the scenario's `update_training` is the default. With an
early-stopping scheduler the update's epoch count is the scheduler's budget, so a method
block may not set `update.epochs` then (a one-line error).

`search.budget` says how a scenario's `trials_per_scenario` are shared: `per-scenario` (the
default) lets the sampler choose each trial's method; `per-method` gives every method an
equal share (`SearchSpace.method_budgets`; the searcher fixes the method of each ask), and
with early stopping ranks each method's trials against its own (`method_rungs.py`), so no
method gets more tries or more compute for having more knobs.

`include: [other.yaml, ...]` merges other files first (this file wins), so per-method
files share one scenario file. Every mistake is a one-line `UsageError` naming the file,
the key and what is allowed — before Ray starts.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..arrangements import ARRANGEMENTS
from ..config import SCENARIO_FIELDS, TrialConfig
from ..data import canonical_dataset, dataset_defaults
from ..errors import UsageError
from ..kept_models import DEFAULT_KEEP, check_keep
from ..methods import HParam, get_method, methods
from ..models import MODELS
from ..objectives import DEFAULT_OBJECTIVES, Constraint, Objective, parse_constraint, parse_objective
from ..train import TrainRecipe

TOP_KEYS = {"name", "include", "scenario", "objectives", "constraints", "search", "methods"}
# A scenario block: lists that span the studies, TrialConfig's own scenario fields, recipes.
SCENARIO_LISTS = {"datasets", "arrangements", "models", "seeds"}
TRAINING_KEYS = ("training", "m1_training", "update_training")
SCENARIO_KEYS = SCENARIO_LISTS | set(SCENARIO_FIELDS) | set(TRAINING_KEYS)
SEARCH_KEYS = {"sampler", "trials_per_scenario", "seed", "concurrency", "cpus_per_trial", "gpus_per_trial",
               "population_size", "max_failures", "scheduler", "reduction_factor", "grace_period",
               "replicates", "pack", "resource_timeout", "budget", "keep", "front_strata"}
BUDGETS = ("per-scenario", "per-method")
# The update-recipe settings a method block may fix or search (`update.lr`, ...), typed as
# hyperparameters so they parse like one; their ranges are TrainRecipe's own checks.
RECIPE_PREFIX = "update."
RECIPE_SEARCH = {h.name: h for h in (
    HParam("lr", "float", 0.05, log=True, help="the update's learning rate"),
    HParam("epochs", "int", 5, help="the update's epochs"),
    HParam("weight_decay", "float", 5e-4, help="the update's weight decay"),
    HParam("grad_clip", "float", 0.0, help="the update's gradient-norm clip (0: off)"),
    HParam("optimizer", "choice", "sgd", choices=("sgd", "adam"), help="the update's optimiser"),
    HParam("momentum", "float", 0.9, help="SGD momentum of the update"),
    HParam("schedule", "choice", "none", choices=("none", "cosine"), help="the update's lr schedule"),
)}
SAMPLERS = ("nsga2", "tpe", "random", "grid")
SCHEDULERS = ("fifo", "mo-asha", "stratified-asha")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Dist:
    """A distribution for one hyperparameter (or a fixed value when kind == 'fixed')."""

    kind: str  # fixed | uniform | loguniform | int | choice
    args: tuple = ()
    log: bool = False

    def suggest(self, trial, name: str):
        if self.kind == "fixed":
            return self.args[0]
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.args)
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.args, log=True)
        if self.kind == "int":
            return trial.suggest_int(name, *self.args, log=self.log)
        return trial.suggest_categorical(name, list(self.args))

    def distribution(self):
        """The Optuna distribution `suggest` samples from (None for a fixed value: it is
        never asked of Optuna). Used to rebuild a study's trials from result rows."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "fixed":
            return None
        if self.kind in ("uniform", "loguniform"):
            return FloatDistribution(*self.args, log=self.kind == "loguniform")
        if self.kind == "int":
            return IntDistribution(*self.args, log=self.log)
        return CategoricalDistribution(list(self.args))

    def extremes(self) -> list:
        """The values at the edges of the distribution (every value of a choice): what a
        preflight check of a searched setting tries."""
        return list(self.args)

    def grid_values(self) -> list:
        if self.kind == "fixed":
            return [self.args[0]]
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "int" and self.args[1] - self.args[0] <= 64:
            return list(range(self.args[0], self.args[1] + 1))
        raise UsageError(f"the grid sampler needs discrete values; {self.kind} {list(self.args)} is continuous")


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario of a search space: dataset × arrangement × model (one Optuna study each)."""
    dataset: str
    arrangement: str
    model: str | None

    @property
    def key(self) -> str:
        """The study name for this scenario (safe as a file-name part)."""
        model = self.model or "default"
        return f"{self.dataset}__{self.arrangement}__{model}".replace(":", "_").replace("/", "_")


@dataclass
class SearchSpace:
    """A validated search space: scenarios, seeds, methods and their distributions, objectives, constraints
    and the `search:` settings, with CLI overrides merged (`load_space`)."""
    path: str
    name: str
    scenarios: list[ScenarioSpec]
    seeds: list[int]
    methods: dict[str, dict[str, Dist]]
    objectives: list[Objective]
    constraints: list[Constraint]
    sampler: str = "nsga2"
    trials_per_scenario: int = 8
    search_seed: int = 0
    concurrency: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    population_size: int | None = None
    max_failures: int = 2
    scheduler: str = "fifo"
    reduction_factor: int = 3
    grace_period: int = 1
    front_strata: bool = True  # stratified-asha: every trial of an arm near the front runs in full
    replicates: int = 0
    pack: int | str = 1  # K, or "auto": measured per scenario before the sweep (pack_size.py)
    resource_timeout: float = 600.0  # seconds to wait for an autoscaler to add a node a trial fits
    budget: str = "per-scenario"  # or "per-method": trials_per_scenario split evenly over the methods
    keep: str = "front"  # which trials keep their M2 in OUT/models/ (kept_models.py)
    scenario_options: dict[str, Any] = field(default_factory=dict)  # the scenario block, as written
    templates: dict[str, TrialConfig] = field(default_factory=dict)  # study key -> its scenario's config

    def config(self, key: str, method: str, hparams: dict[str, Any], seed: int) -> TrialConfig:
        """The trial config of one suggestion in the study `key` (validated once, here):
        `update.KEY` values go to the update recipe, the rest are the method's own."""
        own = {p: v for p, v in hparams.items() if not p.startswith(RECIPE_PREFIX)}
        recipe = {p[len(RECIPE_PREFIX):]: v for p, v in hparams.items() if p.startswith(RECIPE_PREFIX)}
        tmpl = self.templates[key]
        cfg = tmpl.replace(method=method, hparams=own, seed=seed)
        return cfg.replace(update_recipe=tmpl.update_recipe.with_overrides(**recipe)) if recipe else cfg

    def point(self, cfg: TrialConfig) -> dict[str, Any]:
        """The values `suggest` gave for `cfg`: its hyperparameters and, as `update.KEY`, the
        recipe settings its method block names (the inverse of `config`)."""
        recipe = cfg.update_recipe.as_dict()
        return {**cfg.hparams, **{p: recipe[p[len(RECIPE_PREFIX):]] for p in self.methods.get(cfg.method, {})
                                  if p.startswith(RECIPE_PREFIX)}}

    def recipe_corners(self, key: str, method: str) -> list[TrialConfig]:
        """`method`'s configs in study `key` at every combination of the edge values of the
        recipe settings its block names (one config when it names none): what the sweep's
        preflight checks, so a method that refuses some recipe (NeuRecover: 1 epoch) is
        refused before Ray starts, not trial by trial."""
        dists = {p: d for p, d in self.methods[method].items() if p.startswith(RECIPE_PREFIX)}
        return [self.config(key, method, dict(zip(dists, combo)), self.seeds[0])
                for combo in itertools.product(*(d.extremes() for d in dists.values()))]

    def method_budgets(self, total: int) -> dict[str, int]:
        """Trials per method out of `total` (per-method budget): equal shares, the first
        `total mod n` methods one more, so no method has more than one trial over another."""
        names = list(self.methods)
        q, r = divmod(total, len(names))
        return {m: q + (i < r) for i, m in enumerate(names)}

    def suggest(self, trial) -> tuple[str, dict[str, Any], int]:
        """Define-by-run sampling: the method is a categorical, its hyperparameters are
        conditional on it (named `method.param` so two methods' `alpha` stay apart)."""
        names = list(self.methods)
        method = names[0] if len(names) == 1 else trial.suggest_categorical("method", names)
        hp = {p: d.suggest(trial, f"{method}.{p}") for p, d in self.methods[method].items()}
        seed = self.seeds[0] if len(self.seeds) == 1 else trial.suggest_categorical("seed", self.seeds)
        return method, hp, seed

    def optuna_params(self, method: str, hparams: dict[str, Any], seed: int) -> tuple[dict, dict]:
        """(params, distributions) of the Optuna trial that `suggest` would have made for
        (method, hparams, seed): the inverse of `suggest`, to rebuild a study from its rows."""
        from optuna.distributions import CategoricalDistribution

        params: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        if len(self.methods) > 1:
            params["method"], dists["method"] = method, CategoricalDistribution(list(self.methods))
        for p, d in self.methods.get(method, {}).items():
            dist = d.distribution()
            if dist is not None and p in hparams:
                params[f"{method}.{p}"], dists[f"{method}.{p}"] = hparams[p], dist
        if len(self.seeds) > 1:
            params["seed"], dists["seed"] = seed, CategoricalDistribution(list(self.seeds))
        return params, dists

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a fully discrete space (for the grid sampler), as Optuna params."""
        points = []
        for method, dists in self.methods.items():
            keys = [f"{method}.{p}" for p in dists]
            for combo in itertools.product(*(d.grid_values() for d in dists.values())):
                for seed in self.seeds:
                    point = dict(zip(keys, combo))
                    if len(self.methods) > 1:
                        point["method"] = method
                    if len(self.seeds) > 1:
                        point["seed"] = seed
                    points.append(point)
        return points


def load_space(path: str | list[str], overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read, merge (`include`) and validate a search-space file. Several files are merged in
    order (e.g. `ce.yaml bct.yaml fd.yaml`: their methods then share one study per scenario)."""
    paths = [path] if isinstance(path, str) else list(path)
    raw: dict = {}
    names = []
    for p in paths:
        one = _read_with_includes(p, seen=())
        names.append(str(one.get("name") or os.path.splitext(os.path.basename(p))[0]))
        raw = _deep_merge(raw, one)
    if len(paths) > 1:
        raw["name"] = "_".join(names)
    path = paths[0]
    if overrides:
        raw = _deep_merge(raw, overrides)
    return validate(raw, path)


def _read_with_includes(path: str, seen: tuple[str, ...]) -> dict:
    path = os.path.abspath(path)
    if path in seen:
        raise UsageError(f"{path}: include cycle through {' -> '.join(seen)}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise UsageError(f"search space {path!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"search space {path!r} is a directory; give a YAML file") from None
    except UnicodeDecodeError:
        raise UsageError(f"search space {path!r} is not a text file (not UTF-8); give a YAML file") from None
    except OSError as e:
        raise UsageError(f"cannot read search space {path!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a search space must be a mapping with keys {sorted(TOP_KEYS)}")
    merged: dict = {}
    includes = raw.get("include") or []
    if isinstance(includes, str):
        includes = [includes]
    for inc in includes:
        if not isinstance(inc, str):
            raise UsageError(f"{path}: include entries must be file names")
        merged = _deep_merge(merged, _read_with_includes(os.path.join(os.path.dirname(path), inc), seen + (path,)))
    raw = {k: v for k, v in raw.items() if k != "include"}
    return _deep_merge(merged, raw)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last one silently, so `lr: 0.1` then `lr: 0.5` would quietly run 0.5)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: let the base class report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _as_list(value, where: str) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def validate(raw: dict, path: str) -> SearchSpace:
    """The `SearchSpace` of a parsed search-space file `raw` (read from `path`); a one-line UsageError naming
    `path` for anything invalid.

    Why it is long: it is a flat sequence of one-line checks in the order a reader meets the
    file's sections (top-level keys, `scenario:`, `methods:`, `search:`, objectives), each
    building on the values checked before it; the per-section parsers it calls hold the
    logic, and breaking the sequence up would only pass those values around."""
    where = path
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown top-level key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(TOP_KEYS))}")
    name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
    if not NAME_RE.match(name):
        raise UsageError(f"{where}: name {name!r} must be letters, digits, '-', '_' or '.', not a path")

    scen = _section(raw, "scenario", SCENARIO_KEYS, where)
    try:
        datasets = [canonical_dataset(_named(d, "scenario.datasets")) for d in _as_list(scen.get("datasets", ["digits"]), where)]
    except UsageError as e:
        raise UsageError(f"{where}: scenario.datasets: {e}") from None
    arrangements = [_named(a, f"{where}: scenario.arrangements")
                    for a in _as_list(scen.get("arrangements", ["exclusive-op"]), where)]
    if scen.get("explicit"):
        arrangements = ["explicit"]
    for a in arrangements:
        if a not in ARRANGEMENTS and a != "explicit":
            raise UsageError(f"{where}: scenario.arrangements: unknown arrangement {a!r}; choose from {', '.join(ARRANGEMENTS)}")
    models = _as_list(scen.get("models", [None]), where) or [None]
    for m in models:
        if m is not None and m not in MODELS and ":" not in str(m):
            raise UsageError(f"{where}: scenario.models: unknown model {m!r}; choose from {', '.join(MODELS)} "
                             "or module.path:factory")
    seeds = _as_list(scen.get("seeds", [0]), where)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UsageError(f"{where}: scenario.seeds must be a list of non-negative integers, got {seeds!r}")
    for key in TRAINING_KEYS:
        if not isinstance(scen.get(key) or {}, dict):
            raise UsageError(f"{where}: scenario.{key} must be a mapping of training settings")

    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise UsageError(f"{where}: 'methods' must map at least one method ({', '.join(methods())}) "
                         "to its hyperparameters")
    parsed: dict[str, dict[str, Dist]] = {}
    for mname, params in methods_raw.items():
        try:
            method = get_method(str(mname))
        except UsageError as e:
            raise UsageError(f"{where}: methods: {e}") from None
        params = params or {}
        if not isinstance(params, dict):
            raise UsageError(f"{where}: methods.{mname} must map hyperparameters to values or distributions")
        schema = {h.name: h for h in method.hparams}
        parsed[mname] = {}
        for pname, spec in _flatten_recipe(params, f"{where}: methods.{mname}").items():
            if pname.startswith(RECIPE_PREFIX):
                parsed[mname][pname] = _parse_recipe_dist(spec, pname, f"{where}: methods.{mname}.{pname}")
                continue
            if pname not in schema:
                raise UsageError(f"{where}: methods.{mname}.{pname}: unknown hyperparameter; "
                                 f"{mname} has: {', '.join(schema) or 'none'} "
                                 f"(and the update recipe: {', '.join(RECIPE_PREFIX + k for k in RECIPE_SEARCH)})")
            parsed[mname][pname] = _parse_dist(spec, schema[pname], f"{where}: methods.{mname}.{pname}")

    objectives = [o if isinstance(o, Objective) else _wrap(parse_objective, o, where, "objectives")
                  for o in _as_list(raw.get("objectives"), where)] or list(DEFAULT_OBJECTIVES)
    constraints = [_wrap(parse_constraint, c, where, "constraints") for c in _as_list(raw.get("constraints"), where)]

    search = _section(raw, "search", SEARCH_KEYS, where)
    sampler = search.get("sampler", "nsga2")
    if sampler not in SAMPLERS:
        raise UsageError(f"{where}: search.sampler={sampler!r}; choose from {', '.join(SAMPLERS)}")

    scheduler = search.get("scheduler", "fifo")
    if scheduler not in SCHEDULERS:
        raise UsageError(f"{where}: search.scheduler={scheduler!r}; choose from {', '.join(SCHEDULERS)}")

    if scheduler != "fifo":
        searched = next((m for m, ps in parsed.items() if RECIPE_PREFIX + "epochs" in ps), None)
        if searched is not None:
            raise UsageError(f"{where}: methods.{searched}.update.epochs: with search.scheduler={scheduler} the "
                             "scheduler decides how long an update trains; set the epochs (its maximum) in "
                             "scenario.update_training instead")
    budget = search.get("budget", "per-scenario")
    if budget not in BUDGETS:
        raise UsageError(f"{where}: search.budget={budget!r}; choose from {', '.join(BUDGETS)}")
    if budget == "per-method" and sampler == "grid":
        raise UsageError(f"{where}: search.budget=per-method does not apply to the grid sampler, which runs every "
                         "point of every method; use nsga2, tpe or random")

    def num(key, default, lo, kind=int):
        v = search.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)) or v < lo:
            raise UsageError(f"{where}: search.{key}={v!r} must be {'an integer' if kind is int else 'a number'} >= {lo}")
        return kind(v)

    space = SearchSpace(
        path=path, name=name,
        scenarios=[ScenarioSpec(d, a, m) for d in datasets for a in arrangements for m in models],
        seeds=list(seeds), methods=parsed, objectives=objectives, constraints=constraints, sampler=sampler,
        trials_per_scenario=num("trials_per_scenario", 8, 1), search_seed=num("seed", 0, 0),
        concurrency=num("concurrency", 2, 1), cpus_per_trial=num("cpus_per_trial", 1, 0, float),
        gpus_per_trial=num("gpus_per_trial", 0, 0, float), population_size=num("population_size", None, 2),
        max_failures=num("max_failures", 2, 0), scheduler=scheduler,
        reduction_factor=num("reduction_factor", 3, 2), grace_period=num("grace_period", 1, 1),
        front_strata=_flag(search, "front_strata", True, where),
        replicates=num("replicates", 0, 0), pack="auto" if search.get("pack") == "auto" else num("pack", 1, 1),
        resource_timeout=num("resource_timeout", 600, 0, float), budget=budget,
        keep=check_keep(search.get("keep", DEFAULT_KEEP), f"{where}: search.keep"),
        scenario_options={k: v for k, v in scen.items() if k not in SCENARIO_LISTS},
    )
    space.templates = {sc.key: _template(sc, seeds[0], next(iter(parsed)), scen, where) for sc in space.scenarios}
    if sampler == "grid" and "trials_per_scenario" not in search:  # every point, unless told how many
        space.trials_per_scenario = len(space.grid())
    return space


def _template(sc: ScenarioSpec, seed: int, method: str, scen: dict, where: str) -> TrialConfig:
    """The scenario's `TrialConfig` (every option of the block validated, recipes resolved
    over the dataset's defaults): trials differ from it only in method, hyperparameters, seed."""
    try:
        base = dataset_defaults(sc.dataset).recipe
        shared = scen.get("training") or {}
        recipes = {f"{scope}_recipe": base.with_overrides(**{**shared, **(scen.get(f"{scope}_training") or {})})
                   for scope in ("m1", "update")}
        options = {k: scen[k] for k in SCENARIO_FIELDS if k in scen}
        if "critical_classes" in options:
            cc = options["critical_classes"]
            options["critical_classes"] = tuple(cc) if isinstance(cc, list) else cc
        if "explicit" in options:
            ex = options["explicit"]
            options["explicit"] = tuple(ex) if isinstance(ex, list) else ex
        return TrialConfig(dataset=sc.dataset, arrangement=sc.arrangement, model=sc.model, seed=seed, method=method,
                           **recipes, **options)
    except UsageError as e:
        raise UsageError(f"{where}: scenario: {e}") from None


def _named(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{where}: expected a name, got {value!r}")
    return value


def _section(raw: dict, name: str, allowed: set[str], where: str) -> dict:
    """A top-level mapping (`scenario`, `search`) with only the keys it may have."""
    block = raw.get(name) or {}
    if not isinstance(block, dict):
        raise UsageError(f"{where}: '{name}' must be a mapping with keys {sorted(allowed)}")
    bad = set(block) - allowed
    if bad:
        raise UsageError(f"{where}: unknown key {name}.{sorted(bad)[0]}; allowed: {', '.join(sorted(allowed))}")
    return block


def _wrap(fn, value, where, key):
    try:
        return fn(str(value))
    except UsageError as e:
        raise UsageError(f"{where}: {key}: {e}") from None


def _flatten_recipe(params: dict, where: str) -> dict:
    """A method block with a nested `update: {lr: ...}` written as `update.lr: ...`."""
    out = {}
    for pname, spec in params.items():
        pname = str(pname)
        if pname == RECIPE_PREFIX[:-1]:
            if not isinstance(spec, dict):
                raise UsageError(f"{where}.update must map recipe settings ({', '.join(RECIPE_SEARCH)}) "
                                 "to values or distributions")
            out.update({RECIPE_PREFIX + str(k): v for k, v in spec.items()})
        else:
            out[pname] = spec
    return out


def _parse_recipe_dist(spec: Any, pname: str, where: str) -> Dist:
    """An `update.KEY` entry of a method block: a value or distribution of a recipe setting,
    every value it can take checked by `TrainRecipe` itself."""
    name = pname[len(RECIPE_PREFIX):]
    if name not in RECIPE_SEARCH:
        raise UsageError(f"{where}: not a searchable recipe setting; use one of "
                         + ", ".join(RECIPE_PREFIX + k for k in RECIPE_SEARCH))
    dist = _parse_dist(spec, RECIPE_SEARCH[name], where)
    for value in dist.extremes():
        try:
            TrainRecipe().with_overrides(**{name: value})
        except UsageError as e:
            raise UsageError(f"{where}: {value!r}: {e}") from None
    return dist


def _parse_dist(spec: Any, hp: HParam, where: str) -> Dist:
    if not isinstance(spec, dict):
        return Dist("fixed", (hp.validate(spec, where),))
    if len(spec) - ("log" in spec) != 1:
        raise UsageError(f"{where}: a distribution is one of uniform/loguniform/int/choice, e.g. {{uniform: [0, 1]}}")
    kind = next(k for k in spec if k != "log")
    args = spec[kind]
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UsageError(f"{where}: choice needs a non-empty list")
        return Dist("choice", tuple(hp.validate(a, where) for a in args))
    if kind not in ("uniform", "loguniform", "int"):
        raise UsageError(f"{where}: unknown distribution {kind!r}; use uniform, loguniform, int or choice")
    if not isinstance(args, list) or len(args) != 2:
        raise UsageError(f"{where}: {kind} needs [low, high]")
    fits = hp.kind == "int" if kind == "int" else hp.kind == "float"
    if not fits:
        hint = "int" if hp.kind == "int" else "uniform or loguniform" if hp.kind == "float" else "choice"
        raise UsageError(f"{where}: {kind} does not fit a {hp.kind} hyperparameter; use {hint}")
    lo, hi = (hp.validate(a, where) for a in args)
    if lo > hi:
        raise UsageError(f"{where}: low {lo} is greater than high {hi}")
    if kind == "loguniform" and lo <= 0:
        raise UsageError(f"{where}: loguniform needs low > 0, got {lo}")
    if kind == "int":
        return Dist("int", (int(lo), int(hi)), bool(spec.get("log", False)))
    return Dist(kind, (float(lo), float(hi)))


def _flag(search: dict[str, Any], key: str, default: bool, where: str) -> bool:
    """A true/false search key."""
    v = search.get(key, default)
    if not isinstance(v, bool):
        raise UsageError(f"{where}: search.{key}={v!r} must be true or false")
    return v


def space_overrides(options: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict:
    """Overrides of a space file as a nested mapping `load_space` merges over the YAML: the
    one place where command-line (or API) values win over the file's. `settings` are dotted
    `--set` keys (`scenario.seeds=[0,1]`); `options` are search keys (`trials_per_scenario`,
    `sampler`, …), `objectives`, `constraints`, or the scenario shorthands `scale`,
    `test_scale`, `val_fraction` and `epochs` (all training). None means "not given"."""
    out: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        node = out
        *parents, leaf = str(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: {p} is not a section")
        node[leaf] = value
    for key, value in (options or {}).items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        if key in SEARCH_KEYS:
            out.setdefault("search", {})[key] = value
        elif key in ("objectives", "constraints"):
            out[key] = [str(v) for v in value]
        elif key in ("scale", "test_scale", "val_fraction"):
            out.setdefault("scenario", {})[key] = value
        elif key == "epochs":
            out.setdefault("scenario", {}).setdefault("training", {})["epochs"] = value
        else:
            raise UsageError(f"unknown sweep option {key!r}; known: {', '.join(sorted(SEARCH_KEYS))}, "
                             "objectives, constraints, scale, test_scale, val_fraction, epochs")
    return out
