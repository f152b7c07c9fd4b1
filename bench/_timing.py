"""Shared helpers of the bench scripts: interleaved repeats, medians, and the machine line.

These machines are shared and noisy, so a figure is always a ratio of two variants timed
in the same run, alternating the variants (the order rotates every repeat, so neither
always runs first) and comparing the medians of their repeats.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# The bench scripts run from a checkout without installing: make `flipsearch` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def interleave(variants: dict[str, Callable[[], float | None]], repeats: int, warmup: int = 1,
               log: bool = True) -> dict[str, list[float]]:
    """Run every variant `warmup + repeats` times, alternating them, and return the timed
    seconds of the last `repeats` runs per variant. A variant may return its own measured
    seconds (to exclude set-up it must do per run); otherwise its whole call is timed."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(warmup + repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            t0 = time.perf_counter()
            got = variants[name]()
            dt = got if got is not None else time.perf_counter() - t0
            if rep >= warmup:
                times[name].append(dt)
            if log:
                tag = "warmup" if rep < warmup else f"rep {rep - warmup + 1}/{repeats}"
                print(f"  {name:<28} {dt:8.3f}s  ({tag})", file=sys.stderr, flush=True)
    return times


def parse_with_smoke(ap, smoke: list[str], argv: list[str] | None = None):
    """`ap.parse_args` plus `--smoke`: the script's smallest sizes (`smoke`, arguments that the
    command line may still override), so that the suite (tests/test_bench.py) checks in
    seconds that the script still runs end to end. A smoke run's figure means nothing."""
    ap.add_argument("--smoke", action="store_true",
                    help=f"smallest sizes ({' '.join(smoke)}): a check that the script runs; its figure means nothing")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    return ap.parse_args([*smoke, *argv]) if args.smoke else args


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """`median [min-max]` of a list of seconds, for the log."""
    return f"{median(xs):.3f}s [{min(xs):.3f}-{max(xs):.3f}]"


def machine() -> str:
    """Date, cores, torch threads and load: the context every figure is reported with."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{datetime.date.today().isoformat()} {platform.machine()} {os.cpu_count()} cores, "
            f"torch {torch.__version__} threads={torch.get_num_threads()}, load {load:.1f}")


def set_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


SMOKE = str(Path(__file__).resolve().parent.parent / "search_spaces" / "smoke.yaml")


def space_trials(n: int, path: str = SMOKE, seed: int = 0) -> list:
    """`n` trial configurations drawn from a search space the way a sweep draws them
    (define-by-run, one study per scenario, round robin over the scenarios), but with a
    seeded random sampler, so every variant of a bench runs exactly the same trials. The
    methods take turns (trial i uses method i mod M), so a short list still has every one."""
    import optuna

    from flipsearch.search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(path)
    studies = {s.key: optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)) for s in space.scenarios}
    out = []
    for i in range(n):
        scen = space.scenarios[i % len(space.scenarios)]
        names = list(space.methods)
        if len(names) > 1:
            studies[scen.key].enqueue_trial({"method": names[i % len(names)]})
        method, hparams, trial_seed = space.suggest(studies[scen.key].ask())
        out.append(space.config(scen.key, method, hparams, trial_seed))
    return out


def configs_from_rows(rows, space_path: str = SMOKE) -> list:
    """The `TrialConfig`s of a sweep's result rows (in their start order), to rerun the very
    same trials outside Ray."""
    from flipsearch.results import decode_config

    return [decode_config(r) for _, r in rows.sort_values("started_at").iterrows()]


def run_smoke_sweep(out: str, concurrency: int, cpus_per_trial: float, trials_per_scenario: int | None = None,
                    gpus_per_trial: float | None = None, space_path: str = SMOKE):
    """One sweep of the smoke space through Ray Tune + Optuna into a new directory `out`.
    Returns (wall seconds, summary, rows)."""
    from flipsearch import sweep
    from flipsearch.results import read_results

    t0 = time.perf_counter()
    summary = sweep(space_path, out=out, quiet=True, concurrency=concurrency, cpus_per_trial=cpus_per_trial,
                    gpus_per_trial=gpus_per_trial, trials_per_scenario=trials_per_scenario)
    wall = time.perf_counter() - t0
    rows = read_results(out)
    bad = rows[rows["status"] == "failed"]  # "diverged" (a NaN loss) is a legitimate outcome
    if len(bad):
        raise SystemExit(f"{len(bad)} sweep trials failed: {bad['error'].iloc[0]}")
    return wall, summary, rows
