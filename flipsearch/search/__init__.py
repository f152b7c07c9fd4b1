"""The sweep: search-space files, Optuna studies, the Ray Tune searcher and trainable."""
