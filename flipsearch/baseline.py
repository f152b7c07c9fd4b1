"""The `ce` baseline: what every method of a scenario must beat.

It is defined, not chosen: `ce` at its default hyperparameters (`init=old`: fine-tune M1
with plain cross-entropy) on the scenario's own update recipe, i.e. `config(template)` for
the scenario's template; the replicate phase runs it at every seed. A search space may
search ce's recipe (`update.lr` in its method block, issue 27); a ce search trial at its
default hyperparameters but a sampled learning rate is then a search trial like any other,
not the baseline. So "is this row the baseline?" needs the scenario's template as well as
the row: `mark` answers it once per row, from the sweep's templates (`sweep.json`), into
the column `ce_baseline`, and every reader (the report, the kept models) asks `is_baseline`
of a row. Rows of a sweep without templates keep the older rule: ce at its defaults.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

METHOD = "ce"
COLUMN = "ce_baseline"


def config(template):
    """The baseline's configuration in the scenario of `template` (a TrialConfig): ce at its
    defaults on the template's recipes, at the template's seed."""
    return template.replace(method=METHOD, hparams={})


def same_run(a, b) -> bool:
    """Whether two configurations are the same run up to the seed and the device setting."""
    return a.replace(seed=0, device="auto") == b.replace(seed=0, device="auto")


def mark(rows: pd.DataFrame, templates: Mapping[str, Any] | None) -> pd.DataFrame:
    """`rows` with `ce_baseline` set on every row of a study in `templates` ({study:
    TrialConfig or its dict}); rows of other studies, or all rows without templates, keep
    what they had (missing: `is_baseline` falls back to the hyperparameters)."""
    if not templates or not len(rows) or "study" not in rows.columns or "method" not in rows.columns:
        return rows
    from .config import TrialConfig
    from .results import decode_config

    base = {k: config(t if isinstance(t, TrialConfig) else TrialConfig.from_dict(t)) for k, t in templates.items()}
    out = rows.copy()
    verdict = out[COLUMN].astype(object) if COLUMN in out.columns else pd.Series(None, index=out.index, dtype=object)
    for i, r in out.iterrows():
        study = r.get("study")
        if study not in base:
            continue
        if r.get("method") != METHOD:
            verdict.at[i] = False
            continue
        try:
            verdict.at[i] = same_run(decode_config(r), base[study])
        except Exception:  # noqa: BLE001 - a row that no longer decodes is no baseline
            verdict.at[i] = False
    out[COLUMN] = verdict
    return out


def is_baseline(row: Mapping[str, Any], hparams: Mapping[str, Any] | None = None) -> bool:
    """Whether `row` ran the scenario's ce baseline: its `ce_baseline` cell where `mark` set
    it, else ce with every hyperparameter (`hparams`, default: the row's `hp_*` cells) at its
    default."""
    from .methods import at_defaults
    from .results import is_missing

    marked = row.get(COLUMN)
    if marked is not None and not is_missing(marked):
        return bool(marked)
    if hparams is None:
        hparams = {str(k)[3:]: v for k, v in row.items() if str(k).startswith("hp_") and not is_missing(v)}
    return row.get("method") == METHOD and at_defaults(METHOD, hparams)
