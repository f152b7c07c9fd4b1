"""The public Python API; the CLI is thin calls into exactly these functions.

    from flipsearch import TrialConfig, run_trial, sweep, read_results, build_report

    result = run_trial(TrialConfig(dataset="digits", method="bct", hparams={"lambda_c": 0.5}))
    summary = sweep("search_spaces/smoke.yaml", out="runs/smoke", trials_per_scenario=6)
    rows = read_results("runs/smoke")          # a pandas DataFrame, one row per trial
    report = build_report("runs/smoke")        # fronts, tables, recommendation
    report.write("runs/smoke/report")
    verdict = gate("m1.pt", "m2.pt", "digits", max_nfr=0.01)   # may the update ship?
    update = load_update("runs/smoke", recommended=True)   # the kept M1, M2 and model card
"""

from __future__ import annotations

from typing import Any, Sequence

from .config import TrialConfig
from .results import read_results
from .trial import TrialResult, run_trial


def sweep(space: "str | Sequence[str] | Any", *, out: str, resume: bool = False, address: str | None = None,
          num_cpus: int | None = None, quiet: bool = False, verbose: bool = False,
          settings: dict[str, Any] | None = None, **options: Any):
    """Run (or with `resume`, continue) a sweep of the search-space file(s) `space` into
    `out`. `options` override the file: any `search:` key (`trials_per_scenario`, `sampler`,
    `concurrency`, `cpus_per_trial`, `gpus_per_trial`, `scheduler`, `replicates`, …),
    `objectives` / `constraints` (lists of strings), `scale`, `test_scale`, `val_fraction`,
    `epochs`; `settings` are dotted keys (`{"scenario.seeds": [0, 1]}`); `verbose` lets Ray's
    and Ray Tune's own output through. Returns a `SweepSummary`."""
    from .search.space import SearchSpace, load_space, space_overrides
    from .search.sweep import SweepOptions, run_sweep

    overrides = space_overrides(options, settings)
    if isinstance(space, SearchSpace):
        if overrides:
            raise TypeError("options override a space file; pass the file's path, not a loaded SearchSpace")
        loaded = space
    else:
        loaded = load_space([space] if isinstance(space, str) else list(space), overrides)
    return run_sweep(loaded, SweepOptions(out=out, resume=resume, address=address, num_cpus=num_cpus, quiet=quiet,
                                          verbose=verbose))


def build_report(out: str, objectives: Sequence[str] | None = None, constraints: Sequence[str] | None = None,
                 progress=None, flips: bool = True):
    """The report of the sweep in `out` (call `.write(dir)` for the files, `.to_json()`).

    Args:
        out: the sweep's output directory (a path or URI).
        objectives, constraints: "metric:max|min" / "metric<=value" strings replacing the sweep's own.
        progress: called as `progress(step, done, total)` at each step.
        flips: re-run each scenario's recommendation and ce baseline to audit their flips.
    """
    from .report.build import build_report as _build

    return _build(out, objectives or None, constraints or None, progress=progress, flips=flips)


def report_dir(out: str, report_dir: str | None = None) -> str:
    """Where the report of the sweep in `out` is written: `report_dir`, or OUT/report by
    default. An existing file there is refused (one line) before any work."""
    from .report.export import check_report_dir, default_report_dir

    return check_report_dir(report_dir or default_report_dir(out))


def load_update(out: str, trial: str | None = None, *, recommended: "str | bool | None" = None):
    """The kept update of one trial of the sweep in `out` (`trial`: its uid or a unique
    prefix; or `recommended=True` / `recommended="SCENARIO"`: the report's recommendation):
    a `KeptUpdate` with `m1`, `m2` (CPU modules in eval mode) and `card` (the model card)."""
    from .export import load_update as _load

    return _load(out, trial, recommended=recommended)


def export_update(out: str, to: str, trial: str | None = None, *, recommended: "str | bool | None" = None) -> list[str]:
    """Write `load_update`'s m2.pt, m1.pt, card.json and card.md into the directory `to`."""
    from .export import export_update as _export

    return _export(out, to, trial, recommended=recommended)


def gate(old: str, new: str, dataset: str, rules=None, **options: Any):
    """May the update from checkpoint `old` (M1) to `new` (M2) ship? `rules` is a
    `flipsearch.gate.GateRules` (or its fields as keyword options: `max_nfr=0.01`, …);
    `options` also take `split`, `arrangement`, `seed`, `model`, `data_root`, `device`.
    Returns a `GateVerdict` (`.passed`, `.summary()`, `.to_json()`)."""
    from .gate import gate as _gate

    rules, options = _rules(rules, options)
    return _gate(old, new, dataset, rules, **options)


def gate_trial(out: str, trial: str, rules=None, **options: Any):
    """`gate` for the kept model of trial `trial` (a `trial_uid` or a unique prefix) of the
    sweep in `out`, against its M1 on the row's own test set."""
    from .gate import gate_trial as _gate_trial

    rules, options = _rules(rules, options)
    return _gate_trial(out, trial, rules, **options)


def _rules(rules, options: dict[str, Any]):
    import dataclasses

    from .gate import GateRules

    fields = {f.name for f in dataclasses.fields(GateRules)}
    given = {k: options.pop(k) for k in list(options) if k in fields}
    if rules is not None and given:
        raise TypeError(f"give the rules either as a GateRules or as options, not both ({', '.join(given)})")
    return (rules if rules is not None else GateRules(**given)), options


def list_methods() -> dict[str, dict]:
    """Every registered update method: its summary and hyperparameter schema."""
    from .methods import methods

    return {name: {"summary": m.summary, "needs": [r.kind for r in m.needs],
                   "hyperparameters": [h.describe() for h in m.hparams]} for name, m in methods().items()}


__all__ = ["TrialConfig", "TrialResult", "run_trial", "sweep", "read_results", "build_report", "report_dir",
           "load_update", "export_update", "list_methods", "gate", "gate_trial"]
