"""Update methods by name. Each declares its hyperparameter schema (`hparams`) and
registers itself with `@register_method`; a new loss-based method is one new module.

Built-in methods live in this package. A user's method is named `module.path:name` (like a
model factory): importing the module registers it, on the driver and on every Ray worker.
Installed packages can also expose methods through the `flipsearch.methods` entry point
group (each entry point names a module to import).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from ..errors import UsageError
from ._base import (_REGISTRY, HParam, LossMethod, Teacher, UpdateContext, UpdateMethod, UpdateResult,
                    register_method)

# Listing order of the paper's methods; any other module in this package is a method too
# (a new built-in method is one new file here), listed after them.
_ORDER = ("ce", "bct", "fd", "mpt", "neurecover", "interp")
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    for module in [m for m in _ORDER if m in found] + sorted(found - set(_ORDER)):
        importlib.import_module(f"{__name__}.{module}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="flipsearch.methods"):
        ep.load()


def methods() -> dict[str, UpdateMethod]:
    """Every registered method by name (built-ins first)."""
    _load()
    return dict(_REGISTRY)


def get_method(name: str) -> UpdateMethod:
    """The method called `name`, or `module.path:name` for a method in a user module."""
    _load()
    module, sep, short = str(name).rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UsageError(f"cannot import method module {module!r} ({e}); put it on PYTHONPATH") from None
        if short not in _REGISTRY:
            raise UsageError(f"module {module!r} registers no update method {short!r}")
        return _REGISTRY[short]
    if name not in _REGISTRY:
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def at_defaults(name: str, hparams: Mapping[str, Any]) -> bool:
    """Whether every hyperparameter in `hparams` equals method `name`'s default (a name the
    method does not declare, or a method outside the registry, compares as default): the
    test behind "the ce baseline" in the report and in the kept models."""
    method = methods().get(str(name))
    defaults = {h.name: h.default for h in method.hparams} if method else {}
    return all(defaults.get(k, v) == v for k, v in hparams.items())


__all__ = ["HParam", "LossMethod", "Teacher", "UpdateContext", "UpdateMethod", "UpdateResult",
           "at_defaults", "get_method", "methods", "register_method"]
