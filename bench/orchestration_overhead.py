"""Target 4: what Ray Tune + Optuna cost on top of the trials themselves.

The smoke sweep (search_spaces/smoke.yaml: 2 scenarios x 10 trials, every method) runs
through `flipsearch.search.sweep.run_sweep` with one trial at a time on 1 CPU. The very same
trials (read back from its result rows) then run one after another with `run_trial`,
1 torch thread and one reference store on disk (as a sweep worker has), in two ways:

- fresh process: a new `python` that imports flipsearch and runs them, timed from outside,
  which is how one would run them without a sweep. A Ray trial worker is a fresh process
  too, so both pay the one-off costs of a new process (importing torch, ~2.5 s here; torch's
  first optimiser, which imports torch._dynamo, ~1-2.5 s) and the figure is what Ray Tune +
  Optuna add to that;
- warm: in this (warmed-up) process, for reference: the difference to it also counts those
  one-off process costs.

The variants alternate; every run writes to a new directory, so each trains the reference
models afresh. The figure is

    overhead = (median Ray sweep wall - median fresh-process wall) / median Ray sweep wall

(target <= 15 %). Ray's start-up is a fixed cost per sweep, measured once and reported
separately (Ray is started before the first repeat). The Ray runs are split into phases
from the rows' start/finish times: until the first trial starts, inside the trainables,
between trials, after the last. `--diagnose` adds a Ray variant with Tune's automatic
CSV/JSON/TensorBoard loggers switched off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1).

    python bench/orchestration_overhead.py [--repeats 3] [--trials-per-scenario 10] [--diagnose]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time

import _timing  # noqa: F401
from _timing import (configs_from_rows, interleave, machine, median,
                     parse_with_smoke, run_smoke_sweep, set_threads, spread)


def run_configs(path: str, out: str) -> None:
    """The fresh-process variant's body: run the pickled trial configs one after another."""
    set_threads(1)
    from flipsearch.references import ReferenceStore
    from flipsearch.storage import Storage
    from flipsearch.trial import load_data, run_trial

    with open(path, "rb") as f:
        configs = pickle.load(f)
    store = ReferenceStore(Storage.open(out).sub("references"))
    datasets = {}
    for cfg in configs:
        if cfg.dataset not in datasets:
            datasets[cfg.dataset] = load_data(cfg)
        res = run_trial(cfg, store=store, dataset=datasets[cfg.dataset])
        if res.status == "failed":
            raise SystemExit(f"trial {cfg.method} failed: {res.error}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials-per-scenario", type=int, default=None, help="default: the smoke space's 10")
    ap.add_argument("--diagnose", action="store_true", help="also time Ray with Tune's auto loggers off")
    ap.add_argument("--run-configs", nargs=2, metavar=("PICKLE", "OUT"), help=argparse.SUPPRESS)
    args = parse_with_smoke(ap, ["--repeats", "1", "--trials-per-scenario", "1"])
    if args.run_configs:
        return run_configs(*args.run_configs)
    set_threads(1)
    print(machine(), flush=True)

    from flipsearch.search.sweep import connect_ray

    t0 = time.perf_counter()
    connect_ray(None, num_cpus=os.cpu_count())
    startup = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="flipsearch-bench-")
    state: dict = {"n": 0}
    phases: dict[str, list[float]] = {"start": [], "inside": [], "between": [], "end": []}

    def ray_sweep(env: dict | None = None, record: bool = True):
        def go():
            saved = {k: os.environ.get(k) for k in (env or {})}
            os.environ.update(env or {})
            try:
                state["n"] += 1
                out = os.path.join(tmp, f"sweep-{state['n']}")
                t_start = time.time()
                wall, summary, rows = run_smoke_sweep(out, concurrency=1, cpus_per_trial=1,
                                                      trials_per_scenario=args.trials_per_scenario)
                t_end = time.time()
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            if record:  # one trial at a time, so the trials do not overlap
                r = rows.sort_values("started_at")
                # the rows' timestamps are UTC datetimes: seconds since the epoch, as time.time()
                started = [t.timestamp() for t in r["started_at"]]
                finished = [t.timestamp() for t in r["finished_at"]]
                phases["start"].append(min(started) - t_start)
                phases["inside"].append(float(r["wall_seconds"].sum()))
                phases["between"].append(sum(s - f for s, f in zip(started[1:], finished[:-1])))
                phases["end"].append(t_end - max(finished))
            state.setdefault("configs", configs_from_rows(rows))
            shutil.rmtree(out, ignore_errors=True)
            return wall
        return go

    # The first Ray sweep also fixes the trials the in-process variants rerun.
    print("[ray] first sweep, to fix the trial list", flush=True)
    first = ray_sweep()()
    configs = state["configs"]
    pickled = os.path.join(tmp, "configs.pkl")
    with open(pickled, "wb") as f:
        pickle.dump(configs, f)

    def fresh_process():
        state["n"] += 1
        subprocess.run([sys.executable, __file__, "--run-configs", pickled, os.path.join(tmp, f"fresh-{state['n']}")],
                       check=True)

    def warm():
        state["n"] += 1
        run_configs(pickled, os.path.join(tmp, f"warm-{state['n']}"))

    variants = {"ray tune + optuna": ray_sweep(), "fresh process": fresh_process, "warm process": warm}
    if args.diagnose:
        variants["ray, tune auto loggers off"] = ray_sweep({"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}, record=False)
    times = interleave(variants, args.repeats, warmup=0)
    times["ray tune + optuna"].append(first)
    n = len(configs)
    ray_wall, fresh = median(times["ray tune + optuna"]), median(times["fresh process"])
    print(f"{n} trials; Ray start-up {startup:.1f}s (once per sweep, not included below)", flush=True)
    for k, v in times.items():
        print(f"  {k:<28} {spread(v)}  ({(median(v) - fresh) / n:+.3f}s per trial vs the fresh process)", flush=True)
    ph = {k: median(v) for k, v in phases.items()}
    print(f"  Ray sweep phases (median of {len(phases['start'])}): {ph['start']:.1f}s until the first trial "
          f"starts, {ph['inside']:.1f}s inside trainables, {ph['between']:.2f}s between trials "
          f"({ph['between'] / max(1, n - 1):.3f}s each), {ph['end']:.1f}s after the last", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    overhead = (ray_wall - fresh) / ray_wall
    warm_over = (ray_wall - median(times["warm process"])) / ray_wall
    print(f"orchestration overhead, smoke sweep ({n} trials, 1 at a time; target <= 15%): {overhead:.1%} of "
          f"wall time vs a fresh process -> {'PASS' if overhead <= 0.15 else 'MISS'} "
          f"({warm_over:.1%} vs a warm one); Ray start-up {startup:.1f}s extra")


if __name__ == "__main__":
    main()
