"""flipsearch: search for the model update that keeps what the old model got right.

The public API, re-exported from the modules that define it:

- `run_trial(TrialConfig)`: one update trial (M1 -> M2) with every flip metric;
- `compute_metrics(...)`: NFR, BR, BTC, BEC, ... from labels and two models' predictions;
- `load_dataset`, `make_scenario`: data and its arrangement into D_train / D_update / test;
- `get_method`, `methods`: update methods and their hyperparameter schemas.
"""

__version__ = "0.1.0"

from .errors import FlipsearchError, UsageError  # noqa: E402

__all__ = ["FlipsearchError", "UsageError", "__version__"]
