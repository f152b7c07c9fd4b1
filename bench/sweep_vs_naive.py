"""Target 3: a sweep that shares its reference models vs the naive loop that retrains them.

The same N trials (drawn from the smoke search space: digits, two arrangements, every
method) run in this process one after another, twice per repeat:

- shared: one `ReferenceStore` for all N trials, as a sweep has (M1 once per scenario,
  φ_new and the CE update once per scenario and recipe);
- naive:  a fresh `ReferenceStore` per trial, so every trial trains its own M1 (and φ_new
  for MPT, the CE update for NeuRecover), as a loop of independent scripts would.

The variants alternate and the figure is median naive wall time / median shared wall time
(expect >= 2 at N = 12). Both variants use the same dataset object, loaded once.
`--arrangement A` puts every trial on that one arrangement instead of the smoke space's two:
how much sharing saves depends on how large D_train (M1's data) is next to D_update.

    python bench/sweep_vs_naive.py [--trials 12] [--repeats 3] [--threads 1] [--arrangement A]
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import replace

import _timing  # noqa: F401
from _timing import interleave, machine, median, parse_with_smoke, set_threads, space_trials, spread

from flipsearch.references import ReferenceStore
from flipsearch.trial import load_data, run_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arrangement", default=None, help="run every trial on this arrangement")
    args = parse_with_smoke(ap, ["--trials", "2", "--repeats", "1"])
    set_threads(args.threads)
    print(machine(), flush=True)
    trials = space_trials(args.trials)
    if args.arrangement:
        trials = [replace(c, arrangement=args.arrangement) for c in trials]
    datasets = {c.dataset: load_data(c) for c in trials}  # the smoke space: one dataset at one scale
    print(f"{len(trials)} trials: " + ", ".join(f"{m} x{n}" for m, n in Counter(c.method for c in trials).items()),
          flush=True)
    trained = {}

    def run(shared: bool):
        def go():
            store = ReferenceStore()
            count = 0
            for cfg in trials:
                if not shared:
                    store = ReferenceStore()
                res = run_trial(cfg, store=store, dataset=datasets[cfg.dataset])
                if res.status == "failed":
                    raise SystemExit(f"trial {cfg.method} {res.status}: {res.error}")
                count += store.trained if not shared else 0
            trained["shared" if shared else "naive"] = store.trained if shared else count
        return go

    times = interleave({"shared references": run(True), "naive (retrain per trial)": run(False)}, args.repeats)
    shared, naive = times["shared references"], times["naive (retrain per trial)"]
    ratio = median(naive) / median(shared)
    print(f"shared {spread(shared)} ({trained['shared']} reference models trained); "
          f"naive {spread(naive)} ({trained['naive']} trained)", flush=True)
    where = args.arrangement or "smoke space"
    print(f"sweep vs naive, {len(trials)} trials, {where} (naive / shared wall time, expect >= 2x): {ratio:.2f}x "
          f"-> {'PASS' if ratio >= 2 else 'MISS'}")


if __name__ == "__main__":
    main()
