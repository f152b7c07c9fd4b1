"""What an update method is: a hyperparameter schema plus a way to turn M1 into M2.

Most methods only change the loss (`LossMethod`); NeuRecover edits weights after an
update instead. Reference models (M1, φ_new, the CE update with its history) are handed in
through `UpdateContext`, never trained by a method for itself, so a sweep trains each once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import FlipsearchError, UsageError
from ..references import DerivedCache, Reference
from ..train import Batch, FitResult, LossFn, TrainRecipe, fit, predict_logits
from ..values import as_bool, as_float, as_int


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its type, legal range (inclusive), default and meaning.

    `kind` is "float", "int", "choice" or "bool". `log` marks a range best searched on a
    log scale (the sweep's default distribution for it).
    """

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    log: bool = False
    help: str = ""

    def validate(self, value: Any, where: str = "") -> Any:
        """Coerce `value` to this parameter's type, or raise a one-line `UsageError`."""
        label = f"{where}: {self.name}" if where else self.name
        if self.kind == "choice":
            if value not in self.choices:
                raise UsageError(f"{label}={value!r} is not allowed; choose one of {list(self.choices)}")
            return value
        if self.kind == "bool":
            return as_bool(value, label)
        num = as_int(value, label) if self.kind == "int" else as_float(value, label)
        if (self.low is not None and num < self.low) or (self.high is not None and num > self.high):
            raise UsageError(f"{label}={value!r} is outside its legal range {self.range_text()}")
        return num

    @property
    def python_type(self) -> type:
        """The Python type of a validated value (a choice's type is that of its choices)."""
        if self.kind == "choice":
            kinds = {type(c) for c in self.choices}
            return kinds.pop() if len(kinds) == 1 else str
        return {"float": float, "int": int, "bool": bool}[self.kind]

    def range_text(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        if self.kind == "bool":
            return "{true, false}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"[{lo}, {hi}]"

    def describe(self) -> dict:
        return {"name": self.name, "type": self.kind, "default": self.default, "range": self.range_text(),
                "log": self.log, "help": self.help}


@dataclass
class UpdateContext:
    """Everything a method may use to produce M2.

    `old_model` is M1 (eval mode, on `device`), with `num_old_classes` outputs.
    `new_model(init)` builds a model with `num_classes` outputs: a copy of M1 when
    `init == "old"` (old-class rows copied when classes were added), else fresh weights.
    `references` holds exactly the reference models the method declared in `needs`, built
    once per scenario and recipe by the caller (`reference(PhiNew)`); `reference_keys` are
    their content addresses (and M1's, under "m1"), which key the derived values a method
    keeps in `cache` (teacher logits, NeuRecover's preparation) across the trials of a
    worker. `epoch_end(epoch, loss, model)` is called after every update epoch and returns
    True to stop training there (early stopping).
    """

    x_update: torch.Tensor
    y_update: torch.Tensor
    num_old_classes: int
    num_classes: int
    old_model: nn.Module
    new_model: Callable[[str], nn.Module]
    recipe: TrainRecipe
    seed: int
    device: torch.device
    references: dict[type, Any] = field(default_factory=dict)
    reference_keys: dict[str, str] = field(default_factory=dict)
    cache: DerivedCache = field(default_factory=DerivedCache)
    epoch_end: Callable[[int, float, nn.Module], bool] | None = None
    _unkeyed: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # logits of models without a key

    def reference(self, kind: type[Reference]) -> Any:
        if kind not in self.references:
            raise FlipsearchError(f"reference {kind.kind!r} was not prepared: the method must list it in `needs`")
        return self.references[kind]

    def teacher_logits(self, name: str, model: nn.Module) -> torch.Tensor:
        """`model`'s logits over D_update, computed once per reference model (`name` is "m1"
        or a reference kind) and shared through `cache` by later trials of this worker."""
        key = self.reference_keys.get(name)
        if key is None:  # not a stored reference: computed once for this context
            if id(model) not in self._unkeyed:
                self._unkeyed[id(model)] = predict_logits(model, self.x_update)
            return self._unkeyed[id(model)]
        return self.cache.get(("logits", key, "update"), lambda: predict_logits(model, self.x_update),
                              self.device)[0]

    def old_logits(self) -> torch.Tensor:
        return self.teacher_logits("m1", self.old_model)

    def fit(self, model: nn.Module, loss_fn: LossFn, keep_history: int = 0) -> FitResult:
        return fit(model, self.x_update, self.y_update, self.recipe, seed=self.seed,
                   loss_fn=loss_fn, keep_history=keep_history, epoch_end=self.epoch_end)


@dataclass
class UpdateResult:
    model: nn.Module
    info: dict = field(default_factory=dict)  # method-specific facts for the result row
    fit: FitResult | None = None


class Teacher:
    """A frozen model's logits for a batch: looked up from a one-off pass over the
    training tensors when the batch is not augmented, computed in inference mode when it is.

    Either way they are float32 logits of a float32 forward pass: the loss is computed
    inside the training step's autocast (AMP), which would otherwise run the teacher in
    reduced precision and give the distillation losses other targets than the cached ones."""

    def __init__(self, model: nn.Module, cached_logits: torch.Tensor):
        self.model = model.eval()
        self.cached = cached_logits

    def __call__(self, batch: Batch) -> torch.Tensor:
        if not batch.augmented:
            return self.cached[batch.idx]
        with torch.inference_mode(), torch.autocast(batch.x.device.type, enabled=False):
            return self.model(batch.x.float()).float()


_REGISTRY: dict[str, "UpdateMethod"] = {}


def register_method(cls: type["UpdateMethod"]) -> type["UpdateMethod"]:
    """Class decorator: make `cls` available by its `name` (`get_method`, sweeps, the CLI).
    A method in a user module is named `module.path:name` in a config, so that every Ray
    worker imports the module (which registers it) before looking the name up."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise FlipsearchError(f"two update methods are named {cls.name!r}")
    _REGISTRY[cls.name] = cls()
    return cls


class UpdateMethod(ABC):
    """An update strategy. Subclasses set `name`, `summary` and `hparams`, and register
    with `@register_method`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    hparams: ClassVar[tuple[HParam, ...]] = ()
    # Reference models this method needs besides M1 (`Reference` subclasses, e.g. PhiNew).
    needs: ClassVar[tuple[type[Reference], ...]] = ()

    def resolve(self, given: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Defaults overlaid with `given`, each validated; unknown names are an error."""
        known = {h.name: h for h in self.hparams}
        for k in given:
            if k not in known:
                allowed = ", ".join(known) or "none"
                raise UsageError(f"{where + ': ' if where else ''}method {self.name!r} has no hyperparameter "
                                 f"{k!r}; it has: {allowed}")
        return {h.name: h.validate(given.get(h.name, h.default), where) for h in self.hparams}

    def check(self, config) -> None:
        """Refuse a `TrialConfig` this method cannot run (one-line `UsageError`), before any
        training; the default accepts every config."""

    def check_scenario(self, config, scenario) -> None:
        """Refuse a scenario (its splits) this method cannot run, before any training; the
        default accepts every scenario."""

    @abstractmethod
    def update(self, ctx: UpdateContext, hp: dict[str, Any]) -> UpdateResult:
        """Produce M2 from the context with resolved hyperparameters `hp`."""


class LossMethod(UpdateMethod):
    """A retraining method: trains `ctx.new_model()` on D_update with its own loss."""

    @abstractmethod
    def make_loss(self, ctx: UpdateContext, hp: dict[str, Any]) -> LossFn:
        """The per-batch loss `loss_fn(logits, batch)`."""

    def initial_model(self, ctx: UpdateContext, hp: dict[str, Any]) -> nn.Module:
        return ctx.new_model(hp.get("init", "old"))

    def facts(self, ctx: UpdateContext, hp: dict[str, Any]) -> dict:
        """Method facts for the result row (`info`), the same whether trained alone or packed."""
        return {}

    def update(self, ctx: UpdateContext, hp: dict[str, Any]) -> UpdateResult:
        model = self.initial_model(ctx, hp)
        result = ctx.fit(model, self.make_loss(ctx, hp))
        return UpdateResult(model, self.facts(ctx, hp), result)
