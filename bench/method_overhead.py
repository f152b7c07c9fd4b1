"""Target 2: what each update method costs per epoch, relative to plain CE retraining.

All trials share one `ReferenceStore`, warmed before timing, so M1, φ_new and the CE update
are trained once and never timed: what is timed is `run_trial`'s own `timings["update"]`,
the method's work in one trial (for a loss method: its teachers' one-off logits plus the
epochs of `fit`; for NeuRecover: the repair of the shared CE update). Methods are
interleaved and the figures are ratios of medians:

    loss methods:  (update seconds / epochs) of bct, fd, mpt  /  that of ce     target <= 1.5
    neurecover:    repair seconds with the default budget  /  one ce epoch      target <  1

NeuRecover's cost depends on whether it has anything to repair: with no negative flip on
the repair split, or no weight localised, it returns at once. The default scenario
(digits, exclusive-op, seed 1) is one where it localises weights and runs its full search;
the script says so (weights localised, iterations) and warns when it did not.

    python bench/method_overhead.py [--dataset digits] [--arrangement exclusive-op] [--seed 1]
                                    [--epochs E] [--subset 1.0] [--repeats 5] [--threads 1]
                                    [--methods ce bct fd mpt neurecover]
    python bench/method_overhead.py --dataset fashion-mnist --subset 0.05 --epochs 2 --methods ce neurecover
"""

from __future__ import annotations

import argparse

import _timing  # noqa: F401
from _timing import interleave, machine, median, parse_with_smoke, set_threads, spread

from flipsearch.references import ReferenceStore
from flipsearch.trial import TrialConfig, load_data, run_trial

METHODS = ("ce", "bct", "fd", "mpt", "neurecover")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--arrangement", default="exclusive-op")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                    help="ce is always timed (it is the reference)")
    ap.add_argument("--epochs", type=int, default=None, help="update epochs (default: the dataset's recipe)")
    ap.add_argument("--subset", type=float, default=1.0, help="share of the dataset used")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = parse_with_smoke(ap, ["--subset", "0.3", "--epochs", "2", "--repeats", "1"])
    set_threads(args.threads)
    print(machine(), flush=True)

    dataset = load_data(TrialConfig(dataset=args.dataset, scale=args.subset, test_scale=args.subset))
    store = ReferenceStore()
    settings = {"epochs": args.epochs} if args.epochs else {}
    methods = ["ce"] + [m for m in args.methods if m != "ce"]
    configs = {m: TrialConfig(dataset=args.dataset, arrangement=args.arrangement, method=m, scale=args.subset, test_scale=args.subset,
                              seed=args.seed, device="cpu").with_settings(settings) for m in methods}
    epochs = configs["ce"].recipes()[1].epochs
    for m in methods:  # train the shared references (M1, φ_new, the CE update) once, untimed
        run_trial(configs[m], store=store, dataset=dataset)
    info = {}

    def variant(method):
        def run():
            res = run_trial(configs[method], store=store, dataset=dataset)
            if res.status != "ok":
                raise SystemExit(f"{method} trial {res.status}: {res.error}")
            info[method] = res.info
            return res.timings["update"]
        return run

    print(f"[{args.dataset}/{args.arrangement}] update: {epochs} epochs; references trained {store.trained}",
          flush=True)
    times = interleave({m: variant(m) for m in methods}, args.repeats)
    per_epoch = {m: median(times[m]) / epochs for m in methods if m != "neurecover"}
    for m in methods:
        print(f"  {m:<11} update {spread(times[m])}", flush=True)
    ratios = {m: per_epoch[m] / per_epoch["ce"] for m in methods if m not in ("ce", "neurecover")}
    parts, ok = [], True
    if ratios:
        parts.append("per epoch vs ce (target <= 1.5x): " + ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items()))
        ok = max(ratios.values()) <= 1.5
    if "neurecover" in methods:
        nr = info["neurecover"]
        print(f"  neurecover: {nr.get('n_neg')} negative flips, {nr.get('localised_total')} weights localised, "
              f"{nr.get('iterations')} iterations, localise {nr.get('seconds_localise', 0):.3f}s "
              f"search {nr.get('seconds_search', 0):.3f}s {nr.get('note', '')}", flush=True)
        if not nr.get("iterations"):
            print("  WARNING: NeuRecover searched nothing here; choose another --seed/--arrangement", flush=True)
        repair = median(times["neurecover"]) / per_epoch["ce"]
        parts.append(f"neurecover repair vs 1 ce epoch (target < 1x): {repair:.2f}x")
        ok = ok and repair < 1
    print(f"method overhead, {args.dataset}/{args.arrangement}: " + "; ".join(parts)
          + f" -> {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
