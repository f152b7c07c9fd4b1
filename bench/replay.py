"""Replay benchmark for early stopping: record learning curves once, replay schedulers on them.

    python bench/replay.py record [--space search_spaces/demo.yaml] [--epochs 9] [--n 48]
                                  [--methods ce,bct,fd,mpt] [--table bench/replay_demo.parquet]
    python bench/replay.py replay [--table bench/replay_demo.parquet] [--orderings 200] [--workers 2]
    python bench/replay.py smoke                      # a synthetic table, 20 orderings: seconds

`record` (bench/replay_record.py) trains N random configurations per scenario for the full
epoch budget, one process per scenario, and keeps per-epoch validation objectives, per-epoch
seconds and the final test values in a Parquet table. `replay` (bench/replay_sim.py) drives the
real scheduler classes through the calls Ray Tune makes (on_trial_add, on_trial_result ->
CONTINUE/STOP/PAUSE, on_trial_complete), K workers, a simulated clock from the recorded
seconds, the same random orderings of the N configurations for every variant.

Figures, per scenario and variant, median [IQR] over orderings:
- the fraction of the full-budget compute (every configuration's seconds_total) at which the
  validation hypervolume of the completed configurations first reaches 95 / 99 / 100 % of
  the full-budget one (all N at full budget), and in how many orderings it is reached at all
  (an ordering that never reaches it counts as infinite, so a median can be "-");
- "100 % <= 0.5": the orderings reaching 100 % within half of the full-budget compute;
- the test hypervolume of the validation-chosen front at 25 / 50 / 100 % of the compute,
  over the full-budget front's test hypervolume (a variant that has finished earlier keeps
  its final front);
- used: the variant's whole compute over the full budget.
Hypervolume: `flipsearch._pareto` (`pareto_mask`, `hypervolume`) and `report.pareto.default_reference` (
reference 0 / 1 for accuracy_new:max / nfr:min). Only complete configurations (full budget,
status ok) count; a stopped one has no test values and is never on a front.

Variants: `random` (full budget, nothing stopped: a random-order search), `asha-acc` (Ray
Tune's ASHAScheduler on val_accuracy_new), `mo-asha` (flipsearch's MOASHAScheduler),
`mo-asha-oracle` (the same rungs fed each configuration's final values: a perfect predictor,
for scale), `syne-moasha` (Syne Tune's MOASHA through its scheduler API, where syne-tune
imports; accuracy negated since it minimises every metric), and the stratified schedulers
(flipsearch/search/stratified.py). All use grace 1, η 3, max_t = the recorded epochs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import _timing  # noqa: F401  (puts the checkout on sys.path)

import numpy as np

HERE = Path(__file__).resolve().parent
OBJECTIVES = [("accuracy_new", "max"), ("nfr", "min")]
LEVELS = (0.95, 0.99, 1.0)
FRACTIONS = (0.25, 0.5, 1.0)
TABLE = HERE / "replay_demo.parquet"


def log(msg: str) -> None:
    print(f"[replay {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the schedulers compared


def _objs():
    from flipsearch.objectives import Objective

    return [Objective(m, d) for m, d in OBJECTIVES]


def _ray_asha(c):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", metric="val_accuracy_new", mode="max", max_t=c.max_epoch,
                         grace_period=1, reduction_factor=3)


def _mo_asha(c):
    from flipsearch.search.scheduler import MOASHAScheduler

    return MOASHAScheduler(_objs(), max_t=c.max_epoch, grace_period=1, reduction_factor=3)


def _stratified(brackets: int = 1, by_method: bool | None = False, predict: bool = False, front: bool = False,
                **front_kw):
    def make(c):
        from flipsearch.search.stratified import StratifiedMOASHAScheduler

        # by_method None: one stratum (MO-ASHA with brackets only)
        stratum = (lambda config: config["config"]["method"]) if by_method else \
            (lambda config: "") if by_method is None else None
        return StratifiedMOASHAScheduler(_objs(), max_t=c.max_epoch, grace_period=1, reduction_factor=3,
                                         brackets=brackets, stratum=stratum, predict=predict, front=front,
                                         **front_kw)
    return make


class SyneMOASHA:
    """Syne Tune's MOASHA behind Ray's scheduler calls: its own Trial objects (int ids),
    every objective minimised (accuracy negated), its decision mapped to Ray's strings."""

    def __init__(self, c):
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        self.s = MOASHA({}, metrics=["neg_val_accuracy_new", "val_nfr"], do_minimize=True, time_attr="epoch",
                        max_t=c.max_epoch, grace_period=1, reduction_factor=3, random_seed=0)
        self.trials: dict[str, Any] = {}

    def _trial(self, trial):
        import datetime

        from syne_tune.backend.trial_status import Trial

        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = Trial(trial_id=len(self.trials), config={},
                                                creation_time=datetime.datetime.now())
        return self.trials[trial.trial_id]

    @staticmethod
    def _res(result):
        return {**result, "neg_val_accuracy_new": -result["val_accuracy_new"]}

    def on_trial_add(self, ctl, trial):
        self.s.on_trial_add(self._trial(trial))

    def on_trial_result(self, ctl, trial, result):
        from replay_sim import Decide

        return Decide.norm(self.s.on_trial_result(self._trial(trial), self._res(result)))

    def on_trial_complete(self, ctl, trial, result):
        self.s.on_trial_complete(self._trial(trial), self._res(result))


def syne_status() -> str | None:
    """None when Syne Tune's MOASHA imports, else why not."""
    try:
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def variants(names: list[str] | None = None) -> dict[str, tuple[Callable | None, bool]]:
    """name -> (scheduler factory or None, oracle)."""
    out: dict[str, tuple[Callable | None, bool]] = {
        "random": (None, False),
        "asha-acc": (_ray_asha, False),
        "mo-asha": (_mo_asha, False),
        "mo-asha-oracle": (_mo_asha, True),
        "stratified": (_stratified(), False),
        "stratified-method": (_stratified(by_method=True), False),
        "stratified-b2": (_stratified(brackets=2), False),
        "stratified-b3": (_stratified(brackets=3), False),
        "mo-asha-b3": (_stratified(brackets=3, by_method=None), False),
        "stratified-predict": (_stratified(predict=True), False),
        "stratified-predict-b2": (_stratified(brackets=2, predict=True), False),
        "stratified-predict-b3": (_stratified(brackets=3, predict=True), False),
        "front-bare": (_stratified(predict=True, front=True, front_tol=0, explore=0, eliminate=0), False),
        "front-tol0": (_stratified(predict=True, front=True, front_tol=0), False),
        "front-no-explore": (_stratified(predict=True, front=True, explore=0), False),
        "front-no-eliminate": (_stratified(predict=True, front=True, eliminate=0), False),
        "front-b2": (_stratified(brackets=2, predict=True, front=True), False),
        "stratified-asha": (_stratified(predict=True, front=True), False),
    }
    if syne_status() is None:
        out["syne-moasha"] = (SyneMOASHA, False)
    return {k: v for k, v in out.items() if names is None or k in names}


# ---------------------------------------------------------------- figures of one run


class Scorer:
    """Full-budget references of one scenario and the figures of a replayed run."""

    def __init__(self, curves):
        import pandas as pd

        from flipsearch.report.pareto import default_reference

        self.c = curves
        self.dirs = curves.directions
        fake = pd.DataFrame({m: curves.test[:, j] for j, m in enumerate(curves.objectives)})
        fake["status"] = np.where(curves.ok, "ok", "failed")
        self.ref = default_reference(fake, [f"{m}:{d}" for m, d in OBJECTIVES])
        self.final_val = curves.val[:, -1, :]
        self.total = float(curves.seconds_total.sum())
        all_ok = np.flatnonzero(curves.ok)
        self.full_val, self.full_test, self.front = self.hv(all_ok)

    def hv(self, idx) -> tuple[float, float, np.ndarray]:
        from flipsearch._pareto import hypervolume, pareto_mask

        idx = np.asarray(idx, dtype=int)
        if idx.size == 0:
            return 0.0, 0.0, idx
        front = idx[pareto_mask(self.final_val[idx], self.dirs)]
        return (hypervolume(self.final_val[front], self.dirs, self.ref),
                hypervolume(self.c.test[front], self.dirs, self.ref), front)

    def score(self, run) -> dict[str, float]:
        frac = np.asarray(run.done_at) / self.total
        hv_val, hv_test = np.zeros(len(frac)), np.zeros(len(frac))
        for t in range(len(frac)):
            hv_val[t], hv_test[t], _ = self.hv(run.done_idx[: t + 1])
        out = {"used": run.compute / self.total, "epochs": run.epochs / (self.c.n * self.c.max_epoch),
               "completed": len(frac)}
        for lvl in LEVELS:
            hit = np.flatnonzero(hv_val >= lvl * self.full_val * (1 - 1e-12))
            out[f"reach{lvl}"] = float(frac[hit[0]]) if hit.size else math.inf
        for f in FRACTIONS:
            inside = np.flatnonzero(frac <= f * (1 + 1e-9))
            out[f"test{f}"] = (float(hv_test[inside[-1]]) if inside.size else 0.0) / self.full_test
        out["front_found"] = len(set(run.done_idx) & set(self.front.tolist())) / max(1, len(self.front))
        return out


# ---------------------------------------------------------------- replay and tables


def replay_scenario(curves, names: list[str] | None, orderings: int, workers: int, seed: int):
    from replay_sim import replay

    scorer = Scorer(curves)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(curves.n) for _ in range(orderings)]
    results: dict[str, list[dict[str, float]]] = {}
    for name, (factory, oracle) in variants(names).items():
        t0 = time.perf_counter()
        results[name] = [scorer.score(replay(curves, o, factory(curves) if factory else None, workers, oracle=oracle))
                         for o in orders]
        log(f"{curves.scenario} {name}: {orderings} orderings in {time.perf_counter() - t0:.1f} s")
    return scorer, results


def _q(xs) -> tuple[float, float, float]:
    """Quartiles without interpolation (values may be inf: never reached)."""
    a = np.asarray(xs, dtype=float)
    return tuple(float(np.quantile(a, q, method="inverted_cdf")) for q in (0.25, 0.5, 0.75))


def fmt(xs, digits=2) -> str:
    lo, med, hi = _q(xs)
    f = lambda v: "-" if math.isinf(v) else f"{v:.{digits}f}"  # noqa: E731
    return f"{f(med)} [{f(lo)}-{f(hi)}]"


def table(scorer, results, orderings: int) -> list[str]:
    c = scorer.c
    lines = [f"#### {c.scenario}: {c.n} configurations ({int(c.ok.sum())} ok), {c.max_epoch} epochs; "
             f"full-budget front {len(scorer.front)} members ("
             + ", ".join(sorted(c.structure[i] for i in scorer.front)) + f"); val HV {scorer.full_val:.4f}, "
             f"test HV {scorer.full_test:.4f}",
             "",
             "| variant | used | complete | front found | 95 % at (n) | 99 % at (n) | 100 % at (n) | 100 % <= 0.5 "
             "| test HV @25 % | @50 % | @100 % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in results.items():
        col = lambda k: [r[k] for r in rs]  # noqa: E731
        reach = [f"{fmt(col(f'reach{l}'))} ({sum(math.isfinite(x) for x in col(f'reach{l}'))})" for l in LEVELS]
        within = sum(x <= 0.5 for x in col("reach1.0"))
        lines.append(f"| {name} | {fmt(col('used'))} | {np.median(col('completed')):.0f} | "
                     f"{fmt(col('front_found'))} | " + " | ".join(reach)
                     + f" | {within}/{orderings} | " + " | ".join(fmt(col(f'test{f}'), 3) for f in FRACTIONS) + " |")
    return lines


def paired(results, new: str = "stratified-asha", old: str = "mo-asha", base: str = "random") -> list[str]:
    """Target (c) and (d) per ordering: every variant replays the same orderings, so the test HV
    of `new` at 25 / 50 / 100 % of the compute is compared with `old`'s and `base`'s on each
    ordering (a paired comparison, not two medians): in how many orderings `new` is higher,
    equal (the same front: common at full compute) or lower, the median paired difference, and
    a two-sided Wilcoxon signed-rank p-value over the unequal pairs (ties dropped)."""
    from scipy.stats import wilcoxon

    lines = []
    for other in (old, base):
        if new not in results or other not in results:
            continue
        cells = []
        for f in FRACTIONS:
            a = np.array([r[f"test{f}"] for r in results[new]])
            b = np.array([r[f"test{f}"] for r in results[other]])
            d = a - b
            d[np.abs(d) <= 1e-12] = 0.0  # float noise is a tie, for the counts and the test alike
            p = wilcoxon(d, zero_method="wilcox").pvalue if np.any(d != 0) else 1.0
            cells.append(f"@{int(f * 100)} %: higher / equal / lower in {int((d > 0).sum())} / {int((d == 0).sum())} / "
                         f"{int((d < 0).sum())}, median diff {np.median(d):+.4f}, p {p:.2g}")
        lines.append(f"paired test HV, {new} vs {other}, same orderings: " + "; ".join(cells))
    return lines


def diagnose(curves) -> list[str]:
    """Where the full-budget front members rank at each epoch, overall and in their stratum
    (validation accuracy), and the rank correlation of early with final values."""
    from scipy.stats import spearmanr

    scorer = Scorer(curves)
    ok = np.flatnonzero(curves.ok)
    lines = []
    for j, (m, d) in enumerate(OBJECTIVES):
        sign = -1 if d == "max" else 1
        cors = [spearmanr(curves.val[ok, e, j], curves.val[ok, -1, j])[0] for e in range(curves.max_epoch)]
        lines.append(f"spearman(val_{m} at epoch e, at the last epoch), e = 1..: "
                     + " ".join(f"{x:.2f}" for x in cors))
    for i in scorer.front:
        ranks = []
        for e in (0, 2):
            from flipsearch.search.scheduler import pareto_order

            order = pareto_order(curves.val[ok, e, :], curves.directions)
            same = [k for k in ok if curves.structure[k] == curves.structure[i]]
            order_s = pareto_order(curves.val[same, e, :], curves.directions)
            ranks.append(f"epoch {e + 1}: {order.index(list(ok).index(i)) + 1}/{len(ok)} overall, "
                         f"{order_s.index(same.index(i)) + 1}/{len(same)} in stratum")
        lines.append(f"front member {i} {curves.structure[i]} (val {curves.val[i, -1, 0]:.3f} / "
                     f"{curves.val[i, -1, 1]:.4f}): " + "; ".join(ranks))
    return lines


def cmd_replay(args) -> None:
    import pandas as pd

    from replay_sim import Curves

    df = pd.read_parquet(args.table)
    names = args.variants.split(",") if args.variants else None
    lines = [f"replay of {args.table}: {args.orderings} orderings, {args.workers} workers, seed {args.seed}; "
             f"{_timing.machine()}"]
    why = syne_status()
    if why:
        lines.append(f"syne-moasha skipped: syne_tune does not import here ({why})")
    for scenario in sorted(df["scenario"].unique()):
        curves = Curves.from_table(df, scenario, OBJECTIVES)
        scorer, results = replay_scenario(curves, names, args.orderings, args.workers, args.seed)
        lines += [""] + table(scorer, results, args.orderings) + [""] + paired(results)
        if args.diagnose:
            lines += [""] + diagnose(curves)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


# ---------------------------------------------------------------- recording


def cmd_record(args) -> None:
    from replay_record import journal_from_table, record_scenario, write_table

    from flipsearch.search.space import load_space, space_overrides

    space = load_space(args.space, space_overrides({"epochs": args.epochs}))
    if args.methods:
        keep = args.methods.split(",")
        space.methods = {m: d for m, d in space.methods.items() if m in keep}
    work = Path(args.journal_dir)
    work.mkdir(parents=True, exist_ok=True)
    part = range(*map(int, args.configs.split(":"))) if args.configs else None
    suffix = f".{args.configs.replace(':', '-')}" if args.configs else ""
    if args.table and Path(args.table).exists():  # continue the table's recording, not redo it
        seeded = journal_from_table(Path(args.table), work, [m for m, _ in OBJECTIVES])
        if seeded:
            log(f"{seeded} configurations from {args.table} kept, not run again")
    for key in [k for k in space.templates if not args.scenario or args.scenario in k]:
        record_scenario(space, key, args.n, args.seed, work / f"{key}{suffix}.jsonl", log=log, configs=part)
    if args.table:
        n = write_table(sorted(work.glob("*.jsonl")), Path(args.table), [m for m, _ in OBJECTIVES])
        log(f"{n} configurations -> {args.table}")


# ---------------------------------------------------------------- smoke


def synthetic_table(n: int = 24, epochs: int = 9, seed: int = 0):
    """Learning curves with the structure the recorded ones show: three methods whose curves
    start apart (an offset that fades by epoch 3) and configurations that differ within a
    method by a final value reached at different speeds."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        method = ("fast", "mid", "slow")[i % 3]
        start_gap = {"fast": 0.3, "mid": 0.15, "slow": 0.0}[method]
        final_acc = rng.uniform(0.6, 0.9) + (0.05 if method == "slow" else 0.0)
        final_nfr = rng.uniform(0.01, 0.06) - (0.01 if method == "fast" else 0.0)
        rate = rng.uniform(0.3, 1.0)
        tot = rng.uniform(8, 12)
        for e in range(1, epochs + 1):
            prog = 1 - math.exp(-rate * e)
            fade = math.exp(-(e - 1))
            rows.append({"scenario": "synthetic", "config": i, "method": method, "hparams": "{}",
                         "structure": method, "epoch": e, "max_epoch": epochs, "seconds": 0.5 + tot * e / epochs,
                         "seconds_total": 0.7 + tot, "status": "ok",
                         "val_accuracy_new": final_acc * prog * (1 - 0.5 * (1 - start_gap) * fade),
                         "val_nfr": final_nfr + (0.08 * (1 - prog) + 0.1 * (0.3 - start_gap) * fade),
                         "test_accuracy_new": final_acc - rng.uniform(0, 0.02),
                         "test_nfr": final_nfr + rng.uniform(0, 0.005)})
    return pd.DataFrame(rows)


def cmd_smoke(args) -> None:
    from replay_sim import Curves

    df = synthetic_table() if not args.table else __import__("pandas").read_parquet(args.table)
    names = args.variants.split(",") if args.variants else None
    lines = []
    for scenario in sorted(df["scenario"].unique()):
        curves = Curves.from_table(df, scenario, OBJECTIVES)
        scorer, results = replay_scenario(curves, names, args.orderings, args.workers, args.seed)
        lines += table(scorer, results, args.orderings)
    print("\n".join(lines))


def main() -> None:
    if sys.argv[1:] == ["--smoke"]:  # the bench scripts' common smoke flag (tests/test_bench.py)
        sys.argv[1:] = ["smoke"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="train N configurations per scenario, keep their curves")
    r.add_argument("--space", default=str(HERE.parent / "search_spaces" / "demo.yaml"))
    r.add_argument("--epochs", type=int, default=9, help="training epochs (M1 and update)")
    r.add_argument("--n", type=int, default=48, help="configurations per scenario")
    r.add_argument("--seed", type=int, default=0, help="RandomSampler seed of the draw")
    r.add_argument("--methods", default="ce,bct,fd,mpt",
                   help="methods kept from the space (neurecover reports no per-epoch curve)")
    r.add_argument("--scenario", default=None, help="only the study keys containing this")
    r.add_argument("--journal-dir", default="runs/replay-record")
    r.add_argument("--configs", default=None, metavar="A:B",
                   help="only configurations A..B-1 of the draw, in their own journal (parallel recordings)")
    r.add_argument("--table", default=None, help="write the Parquet table here when done")
    for name, helptext in (("replay", "replay schedulers on a recorded table"),
                           ("smoke", "replay on a synthetic table (or --table), few orderings")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--table", default=str(TABLE) if name == "replay" else None)
        p.add_argument("--orderings", type=int, default=200 if name == "replay" else 20)
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--variants", default=None, help="comma-separated subset of: " + ", ".join(variants()))
        if name == "replay":
            p.add_argument("--diagnose", action="store_true", help="also the front members' early ranks")
            p.add_argument("--out", default=None, help="also write the tables to this file")
    args = ap.parse_args()
    {"record": cmd_record, "replay": cmd_replay, "smoke": cmd_smoke}[args.cmd](args)


if __name__ == "__main__":
    main()
