"""`TrialConfig`: what one trial is, as data.

A trial is fully described by one frozen, typed `TrialConfig`: the scenario (dataset,
arrangement, seed, split options), the method with its hyperparameters (typed by the
method's `HParam` schema), the two training recipes and the device. It is validated once,
where it is built, so every later reader trusts it:

- `TrialConfig(...)` / `TrialConfig.from_dict(d)`: build (aliases normalised through the
  dataset registry, defaults filled in, every value type-checked; a one-line `UsageError`
  otherwise);
- `cfg.with_settings({"lambda_c": 0.5, "update.lr": 0.01})`: the `--set KEY=VALUE` overrides;
- `cfg.to_dict()`: plain JSON values, what travels to a Ray worker and into a result row;
- `cfg.to_argv()`: the `flipsearch trial …` arguments that rebuild the same config (the
  inverse of the CLI, used by a report's reproduce-command).

Adding a scenario option is: a field here (with its check in `_check`), a CLI option in
`cli.py` named like the field, and its use where the scenario is built
(`trial.load_scenario`). The search space's `scenario:` keys, the result row's columns and
`to_argv` follow from the fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import UsageError
from .train import TrainRecipe
from .values import as_bool, as_float, as_int

RECIPE_KEYS = tuple(f.name for f in fields(TrainRecipe))
RECIPE_SCOPES = ("m1", "update")


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines a trial (see the module doc). `hparams` are the method's
    own, complete and typed after construction; `m1_recipe` trains M1 (and the references
    trained from scratch need the update recipe), `update_recipe` trains the update."""

    dataset: str = "digits"
    arrangement: str = "exclusive-op"
    method: str = "ce"
    seed: int = 0
    model: str | None = None  # None: the dataset's default model
    hparams: Mapping[str, Any] = field(default_factory=dict)
    m1_recipe: TrainRecipe | None = None  # None: the dataset's default recipe
    update_recipe: TrainRecipe | None = None
    old_fraction: float = 0.5  # class-incremental: share of classes M1 knows
    val_fraction: float = 0.1  # validation split, as a share of D_update
    scale: float = 1.0  # stratified share of the training pool to use
    test_scale: float = 1.0  # stratified share of the test set to use
    critical_classes: tuple[int, ...] = ()
    critical_mask: str | None = None  # path of a .npy bool mask over the test set
    data_root: str | None = None
    download: bool = False
    old_model: str | None = None  # a user's trained M1 (state_dict checkpoint)
    explicit: tuple[str, str, str] | None = None  # (train, update, test) paths
    val_path: str | None = None  # explicit validation split (with `explicit`)
    device: str = "auto"

    def __post_init__(self):
        _check(self)

    # ------------------------------------------------------------------ derived facts

    @property
    def model_name(self) -> str:
        return self.model  # filled in by _check

    def recipes(self) -> tuple[TrainRecipe, TrainRecipe]:
        return self.m1_recipe, self.update_recipe

    # ------------------------------------------------------------------ building

    def with_settings(self, settings: Mapping[str, Any]) -> "TrialConfig":
        """Apply `--set key=value` overrides: training keys (`epochs`, `lr`, …) change both
        recipes, `m1.KEY` / `update.KEY` one of them; anything else is a method
        hyperparameter, validated against the method's schema."""
        recipe_kw: dict[str, dict[str, Any]] = {"m1": {}, "update": {}}
        hp = dict(self.hparams)
        for key, value in settings.items():
            scope, _, name = str(key).rpartition(".")
            if scope in RECIPE_SCOPES:
                if name not in RECIPE_KEYS:
                    raise UsageError(f"unknown training setting {key!r}; known: "
                                     + ", ".join(f"{scope}.{k}" for k in RECIPE_KEYS))
                recipe_kw[scope][name] = value
            elif scope:
                raise UsageError(f"unknown setting {key!r}: prefix must be 'm1.' or 'update.'")
            elif name in RECIPE_KEYS:
                recipe_kw["m1"][name] = recipe_kw["update"][name] = value
            else:
                hp[name] = value
        return dataclasses.replace(self, hparams=hp,
                                   m1_recipe=self.m1_recipe.with_overrides(**recipe_kw["m1"]),
                                   update_recipe=self.update_recipe.with_overrides(**recipe_kw["update"]))

    def replace(self, **changes) -> "TrialConfig":
        """A copy with `changes`; changing the method starts from its default hyperparameters."""
        if "method" in changes and "hparams" not in changes and changes["method"] != self.method:
            changes["hparams"] = {}
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ serialising

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (recipes as dicts, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, TrainRecipe):
                v = v.as_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif f.name == "hparams":
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown trial setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        kw = dict(values)
        for key in ("m1_recipe", "update_recipe"):
            if isinstance(kw.get(key), Mapping):
                kw[key] = TrainRecipe.from_dict(dict(kw[key]))
        return cls(**kw)

    def to_argv(self) -> list[str]:
        """`flipsearch trial` arguments that rebuild this config (`--set` for every
        hyperparameter and recipe value that differs from the defaults)."""
        from .data import dataset_defaults
        from .methods import get_method

        default = TrialConfig(dataset=self.dataset, method=self.method, explicit=self.explicit,
                              arrangement=self.arrangement)
        args = ["trial", "--dataset", self.dataset]
        if self.explicit:
            args += ["--train", self.explicit[0], "--update", self.explicit[1], "--test", self.explicit[2]]
            if self.val_path:
                args += ["--val", self.val_path]
        else:
            args += ["--arrangement", self.arrangement]
        args += ["--method", self.method, "--seed", str(self.seed)]
        if self.model != dataset_defaults(self.dataset).model:
            args += ["--model", self.model]
        if self.critical_classes:
            args += ["--critical-classes", ",".join(map(str, self.critical_classes))]
        for name in SCENARIO_FIELDS + ("device",):  # every other option is `--the-field-name VALUE`
            value = getattr(self, name)
            if name in _OWN_FLAGS or value == getattr(default, name):
                continue
            flag = "--" + name.replace("_", "-")
            # plain option values (only `--set` values are read as YAML)
            args += [flag] if value is True else [flag, value if isinstance(value, str) else _text(value)]
        schema_defaults = get_method(self.method).resolve({})
        for name, value in self.hparams.items():
            if value != schema_defaults[name]:
                args += ["--set", f"{name}={_text(value)}"]
        for setting in _recipe_settings(self, default):
            args += ["--set", setting]
        return args


# The fields a search space's `scenario:` block may set besides its lists (datasets,
# arrangements, models, seeds) and its training recipes; derived, so a new scenario option
# is one field here (plus its check in `_check`), its CLI option, and its use in
# `trial.load_scenario`. The result row's columns are derived from the fields too.
SCENARIO_FIELDS = tuple(f.name for f in fields(TrialConfig)
                        if f.name not in ("dataset", "arrangement", "method", "seed", "model", "hparams",
                                          "m1_recipe", "update_recipe", "device"))
# Fields `to_argv` writes in their own way (not as `--the-field-name VALUE`).
_OWN_FLAGS = {"critical_classes", "explicit", "val_path"}


def _recipe_settings(cfg: TrialConfig, default: TrialConfig) -> list[str]:
    out = []
    m1, upd = cfg.m1_recipe.as_dict(), cfg.update_recipe.as_dict()
    d1, du = default.m1_recipe.as_dict(), default.update_recipe.as_dict()
    for key in RECIPE_KEYS:
        differs = {s: v for s, v, d in (("m1", m1[key], d1[key]), ("update", upd[key], du[key])) if v != d}
        if len(differs) == 2 and differs["m1"] == differs["update"]:
            out.append(f"{key}={_text(differs['m1'])}")
        else:
            out += [f"{s}.{key}={_text(v)}" for s, v in differs.items()]
    return out


def _text(value: Any) -> str:
    """`value` written so that the CLI's YAML reading of `--set KEY=TEXT` gives it back."""
    import yaml

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    try:
        same = yaml.safe_load(text) == text
    except yaml.YAMLError:
        same = False
    return text if same else "'" + text.replace("'", "''") + "'"


def _set(cfg: TrialConfig, name: str, value: Any) -> None:
    object.__setattr__(cfg, name, value)


def _check(cfg: TrialConfig) -> None:
    """Normalise and validate every field of `cfg` in place (it is frozen to everyone else)."""
    from .arrangements import ARRANGEMENTS
    from .data import canonical_dataset, dataset_defaults
    from .methods import get_method

    if not isinstance(cfg.dataset, str) or not cfg.dataset.strip():
        raise UsageError(f"dataset must be a name, got {cfg.dataset!r}")
    _set(cfg, "dataset", canonical_dataset(cfg.dataset))
    if cfg.explicit is not None:
        paths = tuple(cfg.explicit)
        if len(paths) != 3 or not all(isinstance(p, str) and p for p in paths):
            raise UsageError("--train, --update and --test go together: give all three")
        _set(cfg, "explicit", paths)
        _set(cfg, "arrangement", "explicit")
    elif cfg.val_path:
        raise UsageError("--val goes with --train, --update and --test")
    elif cfg.arrangement not in ARRANGEMENTS:
        raise UsageError(f"unknown arrangement {cfg.arrangement!r}; choose one of: {', '.join(ARRANGEMENTS)}")
    seed = as_int(cfg.seed, "seed")
    if not 0 <= seed < 2**32:
        raise UsageError(f"seed must be an integer in [0, 2**32), got {seed}")
    _set(cfg, "seed", seed)
    for name, lo, hi, lo_open, hi_open in (("old_fraction", 0, 1, True, True), ("val_fraction", 0, 1, False, True),
                                           ("scale", 0, 1, True, False), ("test_scale", 0, 1, True, False)):
        v = as_float(getattr(cfg, name), name)
        if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
            raise UsageError(f"{name}={v:g} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")
        _set(cfg, name, v)
    _set(cfg, "download", as_bool(cfg.download, "download"))
    classes = cfg.critical_classes
    if isinstance(classes, (str, int)) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                  for c in classes):
        raise UsageError(f"critical_classes must be a list of class ids >= 0, got {classes!r}")
    _set(cfg, "critical_classes", tuple(sorted(set(classes))))
    for name in ("critical_mask", "data_root", "old_model", "val_path", "model"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, str) or not v):
            raise UsageError(f"{name} must be a non-empty string, got {v!r}")
    if not isinstance(cfg.device, str) or not (cfg.device in ("auto", "cpu", "mps") or cfg.device == "cuda"
                                               or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit())):
        raise UsageError(f"--device {cfg.device!r}: choose auto, cpu, cuda or cuda:N")
    defaults = dataset_defaults(cfg.dataset)
    if cfg.model is None:
        _set(cfg, "model", defaults.model)
    for name in ("m1_recipe", "update_recipe"):
        recipe = getattr(cfg, name)
        if recipe is None:
            _set(cfg, name, defaults.recipe)
        elif isinstance(recipe, Mapping):
            _set(cfg, name, TrainRecipe.from_dict(dict(recipe)))
        elif not isinstance(recipe, TrainRecipe):
            raise UsageError(f"{name} must be a training recipe, got {recipe!r}")
    if not isinstance(cfg.hparams, Mapping):
        raise UsageError(f"hparams must be a mapping, got {cfg.hparams!r}")
    _set(cfg, "hparams", get_method(cfg.method).resolve(dict(cfg.hparams)))
