"""Plain JSON from the values a sweep and a report hold (numpy and pandas scalars, NaN)."""

from __future__ import annotations

import math
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` as strict-JSON-able data: dicts (keys as text) and lists recursively, objects
    with a `to_json()` through it, numpy/pandas scalars as Python ones, NaN, ±inf and
    missing values as None, anything else as its text. Usable as `json.dumps(default=...)`."""
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "to_json") and not isinstance(value, (pd.DataFrame, pd.Series)):
        return jsonable(value.to_json())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
