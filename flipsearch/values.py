"""Strict coercion of user-given values (YAML, `--set KEY=VALUE`, JSON rows) to a declared type.

One parser for the whole project, so `epochs: 2.7`, `epochs: true` or `lr: yes` are refused
with the same one-line error wherever they are written, instead of becoming 2, 1 or 1.0.
Strings are accepted where the value came from text (`--set epochs=3` is parsed as YAML
first, so it is already an int; "3" from a CSV-like source still works).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import UsageError

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def as_bool(value: Any, name: str) -> bool:
    """`value` as a bool (also "true"/"false"/"yes"/"no" …); a one-line UsageError naming `name` otherwise."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and not isinstance(value, str):  # numpy bool
        value = value.item()
        if isinstance(value, bool):
            return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise UsageError(f"{name}={value!r} is not a boolean (true/false)")


def _number(value: Any, name: str, parse: type, what: str) -> int | float:
    """`value` as a plain int or float: numpy scalars unwrapped, text parsed with `parse`,
    booleans and other types refused."""
    if hasattr(value, "item") and not isinstance(value, (str, bool)):
        value = value.item()
    if isinstance(value, str):
        try:
            value = parse(value.strip())
        except ValueError:
            raise UsageError(f"{name}={value!r} is not {what}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name}={value!r} is not {what}")
    return value


def as_int(value: Any, name: str) -> int:
    """`value` as an int (a float must be whole); a one-line UsageError naming `name` otherwise."""
    value = _number(value, name, int, "an integer")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise UsageError(f"{name}={value!r} is not an integer")
    return int(value)


def as_float(value: Any, name: str) -> float:
    """`value` as a finite float; a one-line UsageError naming `name` otherwise."""
    value = _number(value, name, float, "a number")
    if not math.isfinite(value):
        raise UsageError(f"{name}={value!r} must be finite")
    return float(value)


def as_str(value: Any, name: str) -> str:
    """`value` if it is a string; a one-line UsageError naming `name` otherwise."""
    if not isinstance(value, str):
        raise UsageError(f"{name}={value!r} is not a string")
    return value


_BY_TYPE = {bool: as_bool, int: as_int, float: as_float, str: as_str}


def coerce(value: Any, kind: type, name: str) -> Any:
    """`value` as `kind` (bool, int, float or str), or a one-line `UsageError`."""
    return _BY_TYPE[kind](value, name)
