"""What multi-objective early stopping (MO-ASHA) buys, at equal total compute.

Four variants run on the same scenarios and search space (methods ce / bct / fd with
continuous λ ranges, so dominated configurations exist), each repeated with different sampler
seeds (`search.seed`):

- (a) random search, every trial at full budget (scheduler fifo);
- (b) NSGA-II at full budget (fifo; the default) -- the baseline every figure is relative to;
- (c) NSGA-II + mo-asha;
- (d) random + mo-asha;
- (e) NSGA-II + stratified-asha, (f) random + stratified-asha: the per-arm scheduler of
  issue 28 (flipsearch/search/stratified.py), the live check of the replay's ranking.

`--variants` picks which run (default all); (b) always runs, every figure is relative to it.

The mo-asha variants get `--asha-factor` times (b)'s trials per scenario, so that their
compute can match (b)'s; every curve is cut at (b)'s total budget. Both NSGA-II variants use
the same population size (the one (b) gets by default), so the scheduler and the trial count
are the only differences. Budget is counted two ways, per scenario (study), over the rows in
`finished_at` order: cumulative update epochs (`epochs`) and cumulative trial seconds
(`seconds_total`, run_trial's wall time; for a stopped trial its time up to the last epoch
report).

Hypervolume (objectives accuracy_new:max, nfr:min; reference point 0 / 1 as
`report.pareto.default_reference` gives for these rates): validation HV = HV of the
non-dominated ok rows on their validation values (val_*; the space has no constraints, so
every ok row is feasible); test HV = HV of the test values of that validation-chosen front.
Stopped rows never count (they have no test values and are never on a front).

Figures, per scenario and budget unit: HV at 25 / 50 / 100 % of (b)'s total budget of the
same repetition, divided by (b)'s final HV of that repetition, median [min-max] over the
repetitions; and for (c), (d) the fraction of (b)'s budget at which each first reached (b)'s
final validation and test HV (median over repetitions; a repetition that never reaches it
within (b)'s budget counts as infinite). Target: <= 1/3.

    python bench/early_stopping.py [--reps 3] [--trials 8] [--asha-factor 3] [--out DIR]
    python bench/early_stopping.py --quick           # 1 repetition, tiny: a smoke check (about
                                                     # 2 min idle; 6-7 min at load 10 on 2 cores)
    python bench/early_stopping.py --analyse DIR     # the tables again from a finished --out
    python bench/early_stopping.py --only-fashion --fashion-reps 3 --fashion-trials 8   # Fashion-MNIST
                                                     # 10 % subset, compact, exclusive-op
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _timing  # noqa: F401  (puts the checkout on sys.path)
from _timing import machine, parse_with_smoke

import numpy as np

VARIANTS = {  # key -> (label, sampler, scheduler)
    "a": ("(a) random, fifo", "random", "fifo"),
    "b": ("(b) NSGA-II, fifo", "nsga2", "fifo"),
    "c": ("(c) NSGA-II + mo-asha", "nsga2", "mo-asha"),
    "d": ("(d) random + mo-asha", "random", "mo-asha"),
    "e": ("(e) NSGA-II + strat-asha", "nsga2", "stratified-asha"),
    "f": ("(f) random + strat-asha", "random", "stratified-asha"),
}
EARLY = [k for k, (_, _, sched) in VARIANTS.items() if sched != "fifo"]
FRACTIONS = (0.25, 0.5, 1.0)
TARGET = 1 / 3
OBJ = (("accuracy_new", "max"), ("nfr", "min"))
UNITS = {"epochs": "update epochs", "seconds_total": "trial seconds (seconds_total)"}

SPACE = """\
name: esbench-{tag}
scenario:
  datasets: [{dataset}]
  arrangements: [{arrangements}]
  models: [{model}]
  seeds: [0]
{extra}  training: {{epochs: {epochs}, batch_size: {batch}, lr: 0.05, grad_clip: 2.0}}
objectives: [accuracy_new:max, nfr:min]
search: {{concurrency: {concurrency}, cpus_per_trial: 1}}
methods:
{methods}"""
METHODS = """\
  ce: {}
  bct:
    lambda_c: {loguniform: [0.05, 8.0]}
  fd:
    lambda: {loguniform: [0.05, 20.0]}
"""


def demo_methods() -> str:
    """search_spaces/demo.yaml's methods that report learning curves (ce / bct / fd / mpt, as
    bench/replay.py recorded them): the arms whose early ranks mislead mo-asha (issue 28)."""
    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parent.parent / "search_spaces" / "demo.yaml").read_text())
    methods = {m: demo["methods"][m] for m in ("ce", "bct", "fd", "mpt")}
    return "".join("  " + line + "\n" for line in yaml.safe_dump(methods, sort_keys=False).splitlines())


def log(msg: str) -> None:
    print(f"[esbench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running the sweeps


def write_space(path: Path, group: dict, concurrency: int) -> str:
    extra = "".join(f"  {k}: {group[k]}\n" for k in ("scale", "test_scale", "val_fraction")
                    if group.get(k) is not None)
    path.write_text(SPACE.format(tag=group["tag"], dataset=group["dataset"],
                                 arrangements=", ".join(group["arrangements"]), model=group["model"],
                                 extra=extra, epochs=group["epochs"], batch=group["batch"],
                                 concurrency=concurrency, methods=group.get("methods", METHODS)))
    return str(path)


def run_group(root: Path, group: dict, args) -> None:
    """Every (repetition, variant) sweep of one scenario group, the variants' order rotating
    each repetition (the machine is shared: no variant always runs first or last)."""
    from flipsearch import sweep

    gdir = root / group["tag"]
    gdir.mkdir(parents=True, exist_ok=True)
    space = write_space(gdir / "space.yaml", group, args.concurrency)
    n = group["trials"]
    pop = max(4, min(50, n // 2))  # what (b) gets by default; (c) is given the same
    keys = [k for k in VARIANTS if k in args.variants]
    for rep in range(group["reps"]):
        seed = args.seed + rep
        order = keys[rep % len(keys):] + keys[:rep % len(keys)]
        for k in order:
            label, sampler, scheduler = VARIANTS[k]
            out = gdir / f"rep{rep}" / k
            if (out / "bench.json").exists():
                log(f"{group['tag']} rep {rep} {label}: already done, kept")
                continue
            if out.exists():
                shutil.rmtree(out)
            trials = n if scheduler == "fifo" else n * args.asha_factor
            opts = dict(sampler=sampler, scheduler=scheduler, trials_per_scenario=trials, seed=seed,
                        grace_period=group["grace"], reduction_factor=group["eta"])
            if sampler == "nsga2":
                opts["population_size"] = pop
            log(f"{group['tag']} rep {rep} {label}: {trials} trials/scenario, seed {seed}, "
                f"load {os.getloadavg()[0]:.1f}")
            t0 = time.time()
            summary = sweep(space, out=str(out), quiet=True, **opts)
            wall = time.time() - t0
            log(f"  {summary.line()}")
            (out / "bench.json").write_text(json.dumps({
                "variant": k, "rep": rep, "seed": seed, "trials_per_scenario": trials, "options": opts,
                "wall_seconds": wall, "summary": summary.line(), "load_end": os.getloadavg()[0]}))


# ---------------------------------------------------------------- analysis


def hv_curve(rows) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """For the rows of one study in `finished_at` order: validation HV and test HV (of the
    validation-chosen front) after each row, and the cumulative budgets."""
    from flipsearch.report.pareto import default_reference, hypervolume, pareto_mask

    directions = [d for _, d in OBJ]
    ref = default_reference(rows, [f"{m}:{d}" for m, d in OBJ])          # [0, 1] for these rates
    val = rows[[f"val_{m}" for m, _ in OBJ]].to_numpy(dtype=float, na_value=np.nan)
    test = rows[[m for m, _ in OBJ]].to_numpy(dtype=float, na_value=np.nan)
    ok = (rows["status"] == "ok").to_numpy(dtype=bool)
    hv_val, hv_test = np.zeros(len(rows)), np.zeros(len(rows))
    for t in range(len(rows)):
        idx = np.flatnonzero(ok[: t + 1])
        if idx.size == 0:
            continue
        front = idx[pareto_mask(val[idx], directions)]
        hv_val[t] = hypervolume(val[front], directions, ref)
        hv_test[t] = hypervolume(test[front], directions, ref)
    budgets = {}
    for unit in UNITS:
        b = rows[unit].to_numpy(dtype=float, na_value=np.nan)
        if unit == "seconds_total":  # a failed trial's row may have only the trainable's wall time
            wall = rows["wall_seconds"].to_numpy(dtype=float, na_value=np.nan)
            b = np.where(np.isnan(b) & ~rows["status"].isin(["ok", "stopped"]).to_numpy(), wall, b)
        if np.isnan(b).any():
            bad = rows[np.isnan(b)]
            raise SystemExit(f"{int(np.isnan(b).sum())} rows lack {unit} (statuses "
                             f"{sorted(set(bad['status']))}); cannot count their budget")
        budgets[unit] = np.cumsum(b)
    return hv_val, hv_test, budgets


def at_budget(curve: np.ndarray, cum: np.ndarray, cap: float) -> float:
    """The curve's value once every row whose cumulative budget fits in `cap` is in."""
    inside = np.flatnonzero(cum <= cap * (1 + 1e-9))
    return float(curve[inside[-1]]) if inside.size else 0.0


def reach(curve: np.ndarray, cum: np.ndarray, target: float, cap: float) -> float:
    """The budget fraction (of `cap`) at which `curve` first reaches `target`; inf if not
    within `cap`."""
    hit = np.flatnonzero((curve >= target - 1e-12) & (cum <= cap * (1 + 1e-9)))
    return float(cum[hit[0]] / cap) if hit.size and target > 0 else math.inf


def med(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def cell(xs: list[float]) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{med(xs):.3f} [{min(xs):.2f}-{max(xs):.2f}]"


def frac_text(xs: list[float], verdict: bool) -> str:
    m = med(xs)
    per = " ".join("-" if math.isinf(x) else f"{x:.2f}" for x in xs)
    head = "not reached within (b)'s budget" if math.isinf(m) else f"at {m:.2f} of (b)'s budget"
    if verdict:
        head += " -> MISS" if math.isinf(m) or m > TARGET else " -> PASS"
    return f"{head}  [per rep, '-' = not reached: {per}]"


def analyse(root: Path, lines: list[str]) -> None:
    from flipsearch import read_results

    def out(s: str = "") -> None:
        lines.append(s)

    for gdir in sorted(p for p in root.iterdir() if p.is_dir() and (p / "space.yaml").exists()):
        runs = {}
        for bj in sorted(gdir.glob("rep*/*/bench.json")):
            meta = json.loads(bj.read_text())
            runs[(meta["rep"], meta["variant"])] = (meta, read_results(str(bj.parent)))
        if not runs:
            continue
        reps = sorted({r for r, _ in runs})
        meta0 = next(iter(runs.values()))[0]
        conc = int(re.search(r"concurrency: (\d+)", (gdir / "space.yaml").read_text()).group(1))
        studies = sorted({s for _, (_, rows) in runs.items() for s in rows["study"].unique()})
        out(f"### {gdir.name}: {len(reps)} repetition(s), (b) {runs[(reps[0], 'b')][0]['trials_per_scenario']} "
            f"trials/scenario, early-stopping variants "
            f"{next(m['trials_per_scenario'] for (r, k), (m, _) in runs.items() if k in EARLY)}, "
            f"grace {meta0['options']['grace_period']}, eta {meta0['options']['reduction_factor']}")
        out()
        for study in studies:
            curves = {}
            for (rep, k), (meta, rows) in runs.items():
                sub = rows[rows["study"] == study].sort_values("finished_at", kind="stable").reset_index(drop=True)
                curves[(rep, k)] = (sub, *hv_curve(sub))
            base_hv = {rep: (curves[(rep, "b")][1][-1], curves[(rep, "b")][2][-1]) for rep in reps}
            out(f"#### {study}")
            bad = {k: int((~c[0]["status"].isin(["ok", "stopped"])).sum()) for k, c in curves.items()}
            if any(bad.values()):
                out("failed or diverged rows (count in the budget, never on a front): "
                    + ", ".join(f"rep {r} {k}: {n}" for (r, k), n in sorted(bad.items()) if n))
            out(f"(b) final HV, median over reps: validation {med([v for v, _ in base_hv.values()]):.4f}, "
                f"test {med([t for _, t in base_hv.values()]):.4f}")
            for unit, uname in UNITS.items():
                B = {rep: curves[(rep, 'b')][3][unit][-1] for rep in reps}
                out()
                out(f"budget = {uname}; (b)'s total per rep: " + ", ".join(f"{B[r]:.0f}" for r in reps))
                hdr = (f"{'variant':<24} {'trials':>6} {'ok':>4} {'used/(b)':>9}  "
                       + "  ".join(f"{'val HV @' + format(int(f * 100)) + '%':<22}" for f in FRACTIONS) + "  "
                       + "  ".join(f"{'test HV @' + format(int(f * 100)) + '%':<22}" for f in FRACTIONS))
                out(hdr)
                out("(HV / (b)'s final HV of the same rep; median [min-max] over reps; used/(b): the variant's "
                    "whole budget over (b)'s -- every curve is cut at (b)'s, 1.00)")
                reached = {}
                for k, (label, _, _) in VARIANTS.items():
                    if not all((rep, k) in curves for rep in reps):
                        continue
                    cs = [curves[(rep, k)] for rep in reps]
                    ntr = med([len(c[0]) for c in cs])
                    nok = med([int((c[0]["status"] == "ok").sum()) for c in cs])
                    used = [c[3][unit][-1] / B[rep] for rep, c in zip(reps, cs)]
                    vals = [[at_budget(c[1], c[3][unit], f * B[rep]) / base_hv[rep][0] for rep, c in zip(reps, cs)]
                            for f in FRACTIONS]
                    tests = [[at_budget(c[2], c[3][unit], f * B[rep]) / base_hv[rep][1] for rep, c in zip(reps, cs)]
                             for f in FRACTIONS]
                    out(f"{label:<24} {ntr:>6.0f} {nok:>4.0f} {med(used):>9.2f}  "
                        + "  ".join(f"{cell(v):<22}" for v in vals) + "  "
                        + "  ".join(f"{cell(t):<22}" for t in tests))
                    reached[k] = ([reach(c[1], c[3][unit], base_hv[rep][0], B[rep]) for rep, c in zip(reps, cs)],
                                  [reach(c[2], c[3][unit], base_hv[rep][1], B[rep]) for rep, c in zip(reps, cs)])
                for k in [*EARLY, "a"]:
                    if k in reached:
                        v, t = reached[k]
                        out(f"  {VARIANTS[k][0]}: (b)'s final val HV  {frac_text(v, k != 'a')}")
                        out(f"  {' ' * len(VARIANTS[k][0])}  (b)'s final test HV {frac_text(t, k != 'a')}")
            out()
        # where a trial's seconds go, per variant, over every row of the group
        out(f"#### {gdir.name}: per-trial seconds (medians over all rows of all reps and scenarios)")
        out(f"{'variant':<24} {'sweep wall s':>12} {'sum trial s':>11} {'outside s':>9}  ok rows: {'data':>5} {'m1':>5} {'refs':>5} "
            f"{'update':>6} {'eval':>5} {'total':>6} {'s/epoch':>7} {'fixed %':>7}  stopped rows: {'n':>3} "
            f"{'epochs':>6} {'total':>6}  stopped at epoch (all reps)")
        for k, (label, _, _) in VARIANTS.items():
            rs = [(meta, rows) for (rep, kk), (meta, rows) in runs.items() if kk == k]
            if not rs:
                continue
            import pandas as pd

            allrows = pd.concat([r for _, r in rs])
            ok = allrows[allrows["status"] == "ok"]
            st = allrows[allrows["status"] == "stopped"]

            def m(col, df=ok):
                return med(df[col].to_numpy(dtype=float, na_value=np.nan).tolist()) if len(df) else math.nan

            fixed = (ok["seconds_total"] - ok["seconds_update"]) / ok["seconds_total"]
            per_epoch = ok["seconds_update"] / ok["epochs"].astype(float)
            outside = [mt["wall_seconds"] - float(r["seconds_total"].sum()) / conc for mt, r in rs]
            at = dict(sorted(st["epochs"].astype(int).value_counts().items()))
            out(f"{label:<24} {med([mt['wall_seconds'] for mt, _ in rs]):>12.1f} "
                f"{med([float(r['seconds_total'].sum()) for _, r in rs]):>11.1f} {med(outside):>9.1f}  ok rows: "
                f"{m('seconds_data'):>5.2f} {m('seconds_m1'):>5.2f} {m('seconds_references'):>5.2f} "
                f"{m('seconds_update'):>6.2f} {m('seconds_eval'):>5.2f} {m('seconds_total'):>6.2f} "
                f"{med(per_epoch.astype(float).tolist()):>7.3f} {100 * med(fixed.astype(float).tolist()):>6.1f}%"
                f"  stopped rows: {len(st) // max(1, len(rs)):>3} {m('epochs', st):>6.1f} {m('seconds_total', st):>6.2f}  "
                + (", ".join(f"{e}: {c}" for e, c in at.items()) or "-"))
        out(f"('outside s' = sweep wall - sum of seconds_total / concurrency {conc}: the sweep's time not "
            "inside any trial's run_trial -- Ray Tune starting trial workers, driver set-up, bookkeeping.)")
        first = [float(r.sort_values('finished_at')['seconds_m1'].max()) for _, (_, r) in runs.items()]
        out(f"(M1 is trained once per sweep and scenario: the largest seconds_m1 per sweep, median "
            f"{med(first):.2f} s; the other trials load it from the cache. 'fixed %' = "
            f"(seconds_total - seconds_update) / seconds_total of an ok row, the part of a trial that "
            f"early stopping cannot save.)")
        out()


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (sampler seeds) of the digits group")
    ap.add_argument("--trials", type=int, default=8, help="(b)'s trials per scenario (fifo variants)")
    ap.add_argument("--asha-factor", type=int, default=3, help="mo-asha trials = this x --trials")
    ap.add_argument("--epochs", type=int, default=9, help="update (and M1) epochs")
    ap.add_argument("--grace", type=int, default=1)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="search.seed of repetition 0 (rep r: seed + r)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--fashion-reps", type=int, default=0,
                    help="also run a Fashion-MNIST subset group with this many repetitions (0: skip)")
    ap.add_argument("--fashion-trials", type=int, default=6)
    ap.add_argument("--fashion-scale", type=float, default=0.1, help="share of the 60,000-image pool")
    ap.add_argument("--fashion-model", default="compact")
    ap.add_argument("--only-fashion", action="store_true", help="skip the digits group")
    ap.add_argument("--demo", action="store_true",
                    help="instead of digits: the embedded default (demo.yaml's fashion-mnist-mini scenarios "
                         "and its ce/bct/fd/mpt arms, val_fraction 0.2, batch 64), as the replay recorded it")
    ap.add_argument("--quick", action="store_true", help="1 repetition, one scenario, 3 epochs: a smoke check")
    ap.add_argument("--out", default=None, help="keep every sweep here (default: a temp dir, removed after)")
    ap.add_argument("--analyse", default=None, metavar="DIR", help="only print the tables of a finished --out DIR")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the driver")
    ap.add_argument("--variants", default="".join(VARIANTS),
                    help="which variants run, as letters (default all: " + "".join(VARIANTS) + "); (b) always")
    args = parse_with_smoke(ap, ["--quick", "--epochs", "2", "--trials", "2", "--asha-factor", "2",
                                 "--variants", "f"])  # (b) and one early-stopping variant: the paths all share
    if set(args.variants) - set(VARIANTS):
        ap.error(f"--variants takes letters of {''.join(VARIANTS)}, got {args.variants!r}")
    args.variants = "b" + args.variants
    if args.only_fashion and (args.quick or not args.fashion_reps):
        ap.error("--only-fashion needs --fashion-reps N (and no --quick)")

    lines: list[str] = []
    if args.analyse:
        analyse(Path(args.analyse), lines)
        print("\n".join(lines))
        return

    _timing.set_threads(args.threads)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="esbench-"))
    root.mkdir(parents=True, exist_ok=True)
    # A rerun with the same --out continues (finished sweeps are kept): the figures then
    # describe the whole benchmark, from its first start, and say how often it was restarted.
    started = root / "bench_start.json"
    first = json.loads(started.read_text()) if started.exists() else {
        "load": list(os.getloadavg()), "t0": time.time(), "machine": machine(), "invocations": 0}
    first["invocations"] += 1
    started.write_text(json.dumps(first))
    t0 = first["t0"]
    lines.append(f"machine: {first['machine']}; os.getloadavg() at start: "
                 + " ".join(f"{x:.2f}" for x in first["load"]))
    if first["invocations"] > 1:
        lines.append(f"(invocation {first['invocations']} of this --out: the earlier ones ended before "
                     "finishing, their finished sweeps are kept; times count from the first start)")
    groups = [{"tag": "digits", "dataset": "digits", "arrangements": ["exclusive-op", "class-incremental"],
               "model": "small", "epochs": args.epochs, "batch": 32, "grace": args.grace, "eta": args.eta,
               "reps": args.reps, "trials": args.trials}]
    if args.demo:
        groups[0].update(tag="demo", dataset="fashion-mnist-mini", model="compact", batch=64, val_fraction=0.2,
                         methods=demo_methods())
    if args.quick:
        groups[0].update(arrangements=["exclusive-op"], epochs=3, reps=1, trials=3)
        if args.smoke:  # smaller still: the suite's check that the script runs
            groups[0].update(epochs=args.epochs, trials=args.trials)
    elif args.fashion_reps:
        groups.append({"tag": "fashion-mnist", "dataset": "fashion-mnist",
                       "arrangements": ["exclusive-op"], "model": args.fashion_model, "epochs": args.epochs,
                       "batch": 64, "grace": args.grace, "eta": args.eta, "reps": args.fashion_reps,
                       "trials": args.fashion_trials, "scale": args.fashion_scale, "test_scale": 0.2})
        if args.only_fashion:
            groups = groups[1:]
    log(f"sweeps -> {root}")
    try:
        for g in groups:
            run_group(root, g, args)
        load1 = os.getloadavg()
        analyse(root, lines)
        lines.append(f"os.getloadavg() at end: " + " ".join(f"{x:.2f}" for x in load1)
                     + f"; benchmark wall {time.time() - t0:.0f} s since the first start")
        text = "\n".join(lines)
        (root / "early_stopping.txt").write_text(text + "\n")
        print(text, flush=True)
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
