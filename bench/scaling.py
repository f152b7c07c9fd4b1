"""Target 5: sweep throughput (trials/hour) against the number of concurrent trials.

The smoke space (digits, every method; or `--space`) runs through Ray Tune + Optuna once per setting,
each into a new directory (so every setting trains its own reference models); the settings
alternate over the repeats and the figure per setting is the median trials/hour over the
sweep's wall time (Ray's start-up excluded: it happens once, before the first sweep).

CPU settings are `concurrency:cpus_per_trial` pairs; the default compares one trial on one
core, one trial on both cores (2 torch threads) and two trials on one core each. With
`--gpus-per-trial 1 0.5 0.25` every fraction f becomes a setting with concurrency
floor(GPUs / f), and the figure is trials/hour per GPU: on a GPU machine this measures what
fractional GPUs buy. `--logical-gpus N` starts the embedded Ray with N logical GPUs, which
runs the same code path on a machine without one (trials then fall back to the CPU, see
`flipsearch.search.trainable.assigned_device`). `--address` joins an existing cluster
instead of starting Ray; `--local-cluster N` starts a multi-node Ray on this machine (a
head without CPUs and N worker nodes of `--node-cpus` each, on 127.0.0.1, with Ray's files in
a private RAY_TMPDIR, as tests/cluster_sweep_script.py does), so every trial runs on a worker
node, and stops it afterwards. Writes `bench/scaling.png` (or `--plot PATH`).

    python bench/scaling.py [--settings 1:1 1:2 2:1] [--trials-per-scenario 10] [--repeats 2]
    python bench/scaling.py --num-cpus 4 --settings 2:1 2:2    # 2 trials x 2 threads on 2 cores
    python bench/scaling.py --local-cluster 2 --settings 1:1 2:1 --plot bench/scaling_cluster.png
    python bench/scaling.py --gpus-per-trial 1 0.5 0.25 [--address auto]     # GPU machine
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import _timing  # noqa: F401
from _timing import SMOKE, interleave, machine, median, parse_with_smoke, run_smoke_sweep

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["1:1", "1:2", "2:1"], help="concurrency:cpus_per_trial")
    ap.add_argument("--gpus-per-trial", nargs="+", type=float, default=None)
    ap.add_argument("--logical-gpus", type=int, default=None, help="embedded Ray only: pretend N GPUs")
    ap.add_argument("--num-cpus", type=int, default=None,
                    help="embedded Ray only: logical CPUs (more than the cores lets settings oversubscribe)")
    ap.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    ap.add_argument("--local-cluster", type=int, default=None, metavar="N",
                    help="start a local multi-node Ray with N worker nodes")
    ap.add_argument("--node-cpus", type=int, default=1, help="CPUs of each --local-cluster worker node")
    ap.add_argument("--space", default=SMOKE, help="search space to sweep (default: search_spaces/smoke.yaml)")
    ap.add_argument("--trials-per-scenario", type=int, default=None, help="default: the space's own")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--plot", default=str(HERE / "scaling.png"))
    args = parse_with_smoke(ap, ["--settings", "1:1", "--trials-per-scenario", "1", "--repeats", "1"])
    if args.smoke and args.plot == str(HERE / "scaling.png"):
        args.plot = os.path.join(tempfile.mkdtemp(prefix="scaling-smoke-"), "scaling.png")  # keep the committed plot
    print(machine(), flush=True)
    if args.local_cluster:
        # Before Ray is imported: its files in a private directory (no other Ray finds this
        # cluster), and every node on 127.0.0.1 (Ray's node-IP detection would pick this
        # machine's interface address instead), as tests/test_cluster.py does.
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fs-ray-", dir="/tmp")
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.pop("RAY_ADDRESS", None)

    import ray

    t0 = time.perf_counter()
    cluster = None
    if args.local_cluster:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "num_gpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        for _ in range(args.local_cluster):
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=args.node_cpus, num_gpus=args.logical_gpus or 0)
        cluster.wait_for_nodes()
        args.address = cluster.address
    try:
        _run(args, t0)
    finally:
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


def _run(args, t0: float) -> None:
    import ray

    from flipsearch.search.sweep import connect_ray

    if args.logical_gpus and not args.address:
        ray.init(num_cpus=args.num_cpus or os.cpu_count(), num_gpus=args.logical_gpus, include_dashboard=False,
                 log_to_driver=False)
    else:
        connect_ray(args.address, None if args.address else args.num_cpus or os.cpu_count())
    startup = time.perf_counter() - t0
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    print(f"Ray: {nodes} node(s), {cpus:g} CPUs, {gpus:g} GPUs, start-up {startup:.1f}s", flush=True)

    settings = []  # (label, concurrency, cpus_per_trial, gpus_per_trial)
    if args.gpus_per_trial:
        if gpus == 0:
            raise SystemExit("no GPUs in the Ray cluster: use --logical-gpus N to exercise the path on a CPU")
        for f in args.gpus_per_trial:
            conc = max(1, math.floor(gpus / f + 1e-9))
            settings.append((f"{conc} x {f:g} GPU", conc, max(1.0, math.floor(cpus / conc)), f))
    else:
        for s in args.settings:
            conc, cpt = s.split(":")
            settings.append((f"{conc} x {cpt} CPU", int(conc), float(cpt), None))

    tmp = tempfile.mkdtemp(prefix="flipsearch-scaling-")
    counter = {"n": 0, "trials": 0}

    def variant(conc, cpt, gpt):
        def go():
            counter["n"] += 1
            out = os.path.join(tmp, f"s{counter['n']}")
            wall, summary, rows = run_smoke_sweep(out, conc, cpt, args.trials_per_scenario, gpt, args.space)
            counter["trials"] = len(rows)
            shutil.rmtree(out, ignore_errors=True)
            return wall
        return go

    times = interleave({label: variant(c, cpt, g) for label, c, cpt, g in settings}, args.repeats, warmup=0)
    shutil.rmtree(tmp, ignore_errors=True)
    n = counter["trials"]
    per = "GPU" if args.gpus_per_trial else "machine"
    scale = max(gpus, 1.0) if args.gpus_per_trial else 1.0
    rate = {label: n / median(times[label]) * 3600 / scale for label, *_ in settings}
    for label, *_ in settings:
        print(f"  {label:<14} {rate[label]:8.0f} trials/hour per {per}  (wall {median(times[label]):.1f}s "
              f"for {n} trials)", flush=True)
    title = f"{n} trials of {Path(args.space).stem}, {nodes} node(s), {cpus:g} CPUs" + (
        f", {gpus:g} GPUs" if gpus else "")
    _plot(rate, args.plot, title, per)
    base = rate[settings[0][0]]
    print("scaling (trials/hour per " + per + "): "
          + ", ".join(f"{label} {r:.0f} ({r / base:.2f}x)" for label, r in rate.items())
          + f"; plot {os.path.relpath(args.plot)}")


def _plot(rate: dict, path: str, title: str, per: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = list(rate)
    bars = ax.bar(labels, [rate[k] for k in labels], color="#4477aa")
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel(f"trials / hour per {per}")
    ax.set_xlabel("concurrent trials x resources per trial")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
