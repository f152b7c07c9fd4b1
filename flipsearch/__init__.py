"""flipsearch: search for the model update that keeps what the old model got right.

The public API (see `flipsearch.api` and the README):

- `TrialConfig`, `run_trial(config)`: one update trial (M1 -> M2) with every flip metric,
  on the validation split and the test set;
- `sweep(space, out=..., **options)`: a Ray Tune + Optuna multi-objective sweep;
- `read_results(out)`: its rows as a DataFrame; `build_report(out)`: fronts, tables, plots;
- `load_update(out, trial)`: a kept trial's M1, M2 and model card (`export_update` writes them);
- `compare(old, new, dataset=...)`: a flip audit of any two models;
- `list_methods()`: the update methods and their hyperparameters;
- `compute_metrics(...)`: NFR, BR, BTC, BEC, ... from labels and two models' predictions.
"""

__version__ = "0.2.0"

from .api import (TrialConfig, TrialResult, build_report, export_update, list_methods, load_update,  # noqa: E402
                  read_results, run_trial, sweep)
from .errors import FlipsearchError, UsageError  # noqa: E402
from .metrics import compute_metrics  # noqa: E402

__all__ = ["TrialConfig", "TrialResult", "run_trial", "sweep", "read_results", "build_report", "load_update",
           "export_update", "list_methods",
           "compute_metrics", "FlipsearchError", "UsageError", "__version__"]
