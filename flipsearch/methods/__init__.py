"""Update methods by name. Each declares its hyperparameter schema (`hparams`)."""

from __future__ import annotations

from ..errors import UsageError
from ._base import HParam, LossMethod, Teacher, UpdateContext, UpdateMethod, UpdateResult
from .ce import CE


def _registry() -> dict[str, UpdateMethod]:
    methods: list[type[UpdateMethod]] = [CE]
    from .bct import BCT
    from .fd import FocalDistillation
    from .mpt import MPT
    from .neurecover import NeuRecover

    methods += [BCT, FocalDistillation, MPT, NeuRecover]
    return {m.name: m() for m in methods}


_METHODS: dict[str, UpdateMethod] | None = None


def methods() -> dict[str, UpdateMethod]:
    global _METHODS
    if _METHODS is None:
        _METHODS = _registry()
    return _METHODS


def get_method(name: str) -> UpdateMethod:
    table = methods()
    if name not in table:
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(table)}")
    return table[name]


__all__ = ["HParam", "LossMethod", "Teacher", "UpdateContext", "UpdateMethod", "UpdateResult",
           "get_method", "methods"]
