"""The methods side by side: NFR, BR and accuracy of M2 per update method, as a Markdown table.

For each seed one `ReferenceStore` is shared by all methods, so every method updates the
same M1 (and MPT / NeuRecover get the same φ_new / CE update). `ce` runs first and trains
M1, so no row pays for it. Each method runs with its own defaults unless `--set` says
otherwise; the figures are mean ± std over the seeds, in percent of the test set (BR: of
the test samples M1 gets right). Columns:

    acc M1, acc M2   accuracy of the old and the updated model
    NFR, BR          negative flip rate n(P1∩N2)/n and break rate n(P1∩N2)/n(P1)
    NFR old cl.      NFR on the old classes' test samples (class-incremental only; MPT's figure)
    trial s          seconds of one trial, all but M1 (data, method, its references, scoring)
    update s         of which the method's own work (its teachers' logits and its epochs;
                     NeuRecover: the repair)
    refs s           of which the reference models it needs besides M1, trained once per
                     seed and shareable across trials (φ_new for mpt, the CE update for
                     neurecover)

    python bench/methods_table.py [--arrangement class-incremental] [--seeds 0 1 2]
        [--set KEY=VALUE ...] [--threads 1]

Without options it prints the README's table: class-incremental (M1 knows digits 0-4, M2
all ten) with a 3-epoch update, where plain CE leaves old-class flips to remove (with the
recipe's 10 epochs CE breaks ~1 of 270 old-class test samples and every method ties).
`--set KEY=VALUE` takes the keys of `flipsearch trial --set` (training keys such as
`epochs`, `lr`, `update.epochs` apply to every method) and is applied after the default
`update.epochs=3` (so `--set update.epochs=10` restores the recipe); `METHOD.KEY=VALUE`
sets a hyperparameter of one method only, e.g. `--set bct.lambda_c=2 --set ce.init=scratch`.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from dataclasses import replace

import _timing  # noqa: F401  (puts the checkout on sys.path)
from _timing import machine, parse_with_smoke, set_threads

from flipsearch.methods import get_method
from flipsearch.references import ReferenceStore
from flipsearch.trial import TrialConfig, TrialResult, load_data, run_trial

METHODS = ("ce", "bct", "fd", "mpt", "neurecover")
DEFAULT_SETTINGS = ("update.epochs=3",)


def split_settings(pairs: list[str], methods: tuple[str, ...]) -> tuple[dict, dict[str, dict]]:
    """`KEY=VALUE` strings -> (settings for every method, {method: its own hyperparameters})."""
    common: dict = {}
    own: dict[str, dict] = {m: {} for m in methods}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        scope, _, name = key.partition(".")
        if scope in own and name:
            own[scope][name] = value
        else:
            common[key] = value
    return common, own


def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    vals = [v * scale for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"


def refs_seconds(r: TrialResult) -> float:
    return sum(v for k, v in r.timings.items() if k.startswith("ref_"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--arrangement", default="class-incremental")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = parse_with_smoke(ap, ["--seeds", "0", "--methods", "ce", "bct", "--set", "epochs=1"])
    set_threads(args.threads)
    methods = ("ce",) + tuple(m for m in args.methods if m != "ce")  # the baseline always runs, first

    common, own = split_settings([*DEFAULT_SETTINGS, *args.settings], methods)
    configs = {m: TrialConfig(dataset=args.dataset, arrangement=args.arrangement, method=m, device="cpu")
               .with_settings({**common, **own[m]}) for m in methods}
    dataset = load_data(TrialConfig(dataset=args.dataset))

    results: dict[str, list[TrialResult]] = {m: [] for m in methods}
    t0 = time.perf_counter()
    for seed in args.seeds:
        store = ReferenceStore()
        for m in methods:
            r = run_trial(replace(configs[m], seed=seed), store=store, dataset=dataset)
            results[m].append(r)
            print(f"  seed {seed} {m:<11} {r.status:<8} {r.timings.get('total', 0):6.2f}s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0

    m1, upd = configs["ce"].recipes()
    class_inc = any(not math.isnan(r.metrics.get("nfr_old_classes", math.nan))
                    for rs in results.values() for r in rs if r.status == "ok")
    print(f"command: python bench/methods_table.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}")
    print(f"dataset {args.dataset}, model {configs['ce'].model_name}, arrangement {args.arrangement}, "
          f"seeds {' '.join(map(str, args.seeds))}; wall {wall:.0f} s")
    print(f"M1 recipe: {_recipe(m1)}; update recipe: {_recipe(upd)}")
    print()
    head = ["method", "hyperparameters", "acc M1 %", "acc M2 %", "NFR %", "BR %"]
    head += ["NFR old cl. %"] if class_inc else []
    head += ["trial s", "update s", "refs s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for m in methods:
        ok = [r for r in results[m] if r.status == "ok"]
        bad = len(results[m]) - len(ok)
        hp = _changed(m, configs[m].hparams)
        if not ok:
            print(f"| {m} | {hp} | " + " | ".join(["diverged"] * (len(head) - 2)) + " |")
            continue
        col = lambda key: mean_std([r.metrics[key] for r in ok])  # noqa: E731
        row = [m + (f" ({bad} of {len(results[m])} diverged)" if bad else ""), hp,
               col("accuracy_old"), col("accuracy_new"), col("nfr"), col("br")]
        row += [col("nfr_old_classes")] if class_inc else []
        row += [mean_std([r.timings["total"] - r.timings["m1"] for r in ok], 1.0),
                mean_std([r.timings["update"] for r in ok], 1.0), mean_std([refs_seconds(r) for r in ok], 1.0)]
        print("| " + " | ".join(row) + " |")
    notes = sorted({r.info["mpt_note"] for r in results.get("mpt", []) if "mpt_note" in r.info})
    for note in notes:
        print(f"\nmpt: {note}")


def _changed(method: str, hparams: dict) -> str:
    """`init` (where the method has one) and the hyperparameters set away from their defaults."""
    defaults = {h.name: h.default for h in get_method(method).hparams}
    resolved = get_method(method).resolve(hparams)
    shown = {k: v for k, v in resolved.items() if k == "init" or v != defaults[k]}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"


def _recipe(r) -> str:
    return (f"{r.epochs} epochs, batch {r.batch_size}, {r.optimizer} lr {r.lr:g}"
            + (f", {r.schedule}" if r.schedule != "none" else "") + (", augment" if r.augment else ""))


if __name__ == "__main__":
    main()
