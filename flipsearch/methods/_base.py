"""What an update method is: a hyperparameter schema plus a way to turn M1 into M2.

Most methods only change the loss (`LossMethod`); NeuRecover edits weights after an
update instead. Reference models (M1, φ_new, the CE update with its history) are handed in
through `UpdateContext`, never trained by a method for itself, so a sweep trains each once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import UsageError
from ..references import reference_logits
from ..train import Batch, FitResult, LossFn, TrainRecipe, fit


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
        where = f"{where}: " if where else ""
        if self.kind == "choice":
            if value not in self.choices:
                raise UsageError(f"{where}{self.name}={value!r} is not allowed; choose one of {list(self.choices)}")
            return value
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise UsageError(f"{where}{self.name}={value!r} is not a boolean (true/false)")
        try:
            if isinstance(value, bool):
                raise ValueError
            num = float(value)
            if self.kind == "int":
                if num != int(num):
                    raise ValueError
                num = int(num)
        except (TypeError, ValueError):
            raise UsageError(f"{where}{self.name}={value!r} is not a{'n integer' if self.kind == 'int' else ' number'}") from None
        if isinstance(num, float) and not math.isfinite(num):
            raise UsageError(f"{where}{self.name}={value!r} must be finite")
        if (self.low is not None and num < self.low) or (self.high is not None and num > self.high):
            raise UsageError(f"{where}{self.name}={value!r} is outside its legal range {self.range_text()}")
        return num

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
    `reference(kind)` returns a shared reference model ("phi_new": CE-trained from scratch
    on D_update; "ce_update": the plain CE update of M1 with its last two epochs' weights
    in `.history`), built once per scenario and recipe by the caller.
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
    reference: Callable[[str], Any] = lambda kind: (_ for _ in ()).throw(KeyError(kind))
    progress: Callable[[int, float], None] | None = None
    _old_logits: torch.Tensor | None = field(default=None, repr=False)

    def old_logits(self) -> torch.Tensor:
        """M1's logits over D_update, computed once and reused by every epoch (and by every
        later trial of this process that loads the same M1: `reference_logits`)."""
        if self._old_logits is None:
            self._old_logits = reference_logits(self.old_model, self.x_update)
        return self._old_logits

    def fit(self, model: nn.Module, loss_fn: LossFn, keep_history: int = 0) -> FitResult:
        return fit(model, self.x_update, self.y_update, self.recipe, seed=self.seed,
                   loss_fn=loss_fn, keep_history=keep_history, progress=self.progress)


@dataclass
class UpdateResult:
    model: nn.Module
    info: dict = field(default_factory=dict)  # method-specific facts for the result row
    fit: FitResult | None = None


class Teacher:
    """A frozen model's logits for a batch: looked up from a one-off pass over the
    training tensors when the batch is not augmented, computed in inference mode when it is."""

    def __init__(self, model: nn.Module, cached_logits: torch.Tensor | None, x_all: torch.Tensor):
        self.model = model.eval()
        self.cached = cached_logits if cached_logits is not None else reference_logits(model, x_all)

    def __call__(self, batch: Batch) -> torch.Tensor:
        if not batch.augmented:
            return self.cached[batch.idx]
        with torch.inference_mode():
            return self.model(batch.x).float()


class UpdateMethod(ABC):
    """An update strategy. Subclasses set `name`, `summary` and `hparams`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    hparams: ClassVar[tuple[HParam, ...]] = ()
    # Reference models this method needs besides M1 ("phi_new", "ce_update").
    needs: ClassVar[frozenset[str]] = frozenset()

    def resolve(self, given: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Defaults overlaid with `given`, each validated; unknown names are an error."""
        known = {h.name: h for h in self.hparams}
        for k in given:
            if k not in known:
                allowed = ", ".join(known) or "none"
                raise UsageError(f"{where + ': ' if where else ''}method {self.name!r} has no hyperparameter "
                                 f"{k!r}; it has: {allowed}")
        return {h.name: h.validate(given.get(h.name, h.default), where) for h in self.hparams}

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

    def update(self, ctx: UpdateContext, hp: dict[str, Any]) -> UpdateResult:
        model = self.initial_model(ctx, hp)
        result = ctx.fit(model, self.make_loss(ctx, hp))
        return UpdateResult(model, {}, result)
