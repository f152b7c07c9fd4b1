"""`interp`'s BatchNorm statistics: interpolated with the weights, or recomputed on D_update?

For each arrangement and seed the CE update is trained once (a shared `ReferenceStore`);
then `interp` runs at α = 0.1, 0.2, …, 0.9 with `bn: interpolate` and with `bn: recompute`,
and the script prints, per α, the validation accuracy of M2 and its NFR against M1 for both
modes, and per (arrangement, seed) the validation hypervolume of each mode's nine points
(accuracy_new max, nfr min; reference accuracy 0, NFR 1) and how many α the recomputed
statistics dominate / are dominated by the interpolated ones. Validation only: this chooses
a default, as a search would.

    python bench/interp_bn.py [--dataset fashion-mnist-mini] [--model compact]
                              [--arrangements exclusive-op class-incremental] [--seeds 0 1]

The defaults are the demo sweep's scenario (search_spaces/demo.yaml: compact has BatchNorm).
"""

from __future__ import annotations

import argparse
import time

import _timing  # noqa: F401
from _timing import machine, set_threads

from flipsearch.references import ReferenceStore
from flipsearch.report.pareto import hypervolume
from flipsearch.trial import TrialConfig, load_data, run_trial

ALPHAS = [round(0.1 * i, 1) for i in range(1, 10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist-mini")
    ap.add_argument("--model", default="compact")
    ap.add_argument("--arrangements", nargs="+", default=["exclusive-op", "class-incremental"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    print(machine())
    base = TrialConfig(dataset=args.dataset, model=args.model, method="interp", val_fraction=0.2)
    # the demo's recipe (search_spaces/demo.yaml)
    base = base.with_settings({"epochs": 3, "batch_size": 64, "lr": 0.05, "grad_clip": 2.0})
    data = load_data(base)
    wins = {"recompute": 0, "interpolate": 0, "equal": 0}
    hv_sum = {"recompute": 0.0, "interpolate": 0.0}
    t0 = time.perf_counter()
    for arrangement in args.arrangements:
        for seed in args.seeds:
            store = ReferenceStore()
            points: dict[str, list[tuple[float, float]]] = {"recompute": [], "interpolate": []}
            print(f"\n{arrangement} seed {seed}: alpha, val accuracy_new / val nfr (%) interpolate | recompute")
            for alpha in ALPHAS:
                vals = {}
                for bn in ("interpolate", "recompute"):
                    cfg = base.replace(arrangement=arrangement, seed=seed, hparams={"alpha": alpha, "bn": bn})
                    m = run_trial(cfg, store=store, dataset=data).metrics
                    vals[bn] = (m["val_accuracy_new"], m["val_nfr"])
                    points[bn].append(vals[bn])
                (ai, ni), (ar, nr) = vals["interpolate"], vals["recompute"]
                if (ar, nr) == (ai, ni):
                    wins["equal"] += 1
                elif ar >= ai and nr <= ni:
                    wins["recompute"] += 1
                elif ai >= ar and ni <= nr:
                    wins["interpolate"] += 1
                print(f"  {alpha:.1f}  {ai * 100:6.2f} / {ni * 100:5.2f}  |  {ar * 100:6.2f} / {nr * 100:5.2f}")
            hv = {bn: hypervolume(pts, ("max", "min"), (0.0, 1.0)) for bn, pts in points.items()}
            for bn in hv:
                hv_sum[bn] += hv[bn]
            print(f"  hypervolume interpolate {hv['interpolate']:.4f}  recompute {hv['recompute']:.4f}  "
                  f"ratio recompute/interpolate {hv['recompute'] / hv['interpolate']:.3f}")
    n = len(args.arrangements) * len(args.seeds)
    print(f"\nover {n} (arrangement, seed) x {len(ALPHAS)} alphas: recompute dominates at {wins['recompute']}, "
          f"interpolate dominates at {wins['interpolate']}, equal at {wins['equal']}, "
          f"neither at {n * len(ALPHAS) - sum(wins.values())}")
    print(f"mean hypervolume ratio recompute/interpolate: {hv_sum['recompute'] / hv_sum['interpolate']:.3f}  "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
