"""`flipsearch report`: from a sweep's output directory to fronts, tables, plots and files.

`build_report(out)` reads the rows (`flipsearch.results.read_results`), `sweep.json` and,
when present, `scheduler.json`, and computes everything in memory. Selection happens on
VALIDATION metrics only (`selection.selection_frame`): per scenario the Pareto front over
the objectives (ok search trials; stopped, failed, diverged and replicate rows never enter),
feasibility under the constraints, the hypervolume after each trial, the recommendation and
the paper-1 table's operating points. Then the report shows TEST values: for every front
point its test values next to its validation ones, mean ± std and the 95 % interval over
its seeds (the trial and its replicates), the `ce` baseline and the noise floor, and the
optimism gap (what choosing on test would have claimed). With `flips` it re-runs the
recommendation and the `ce` baseline of each scenario and audits their flips
(`flips.compare_flips`). Only `Report.write` touches the report directory, so a bad
objective or an empty directory leaves nothing behind.

The data classes are in `model`, the files and the JSON in `export`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .._pareto import dominates_by_name
from ..errors import UsageError
from ..metrics import is_known_metric
from ..objectives import (DEFAULT_OBJECTIVES, SELECTION_PREFIX, Constraint, Objective, parse_constraint,
                          parse_objective)
from ..results import read_results
from ..rundir import RunDir, SweepRecord
from ..baseline import mark as mark_baseline
from .baselines import Baseline, find_baseline, m1_value, noise_floor, noise_metrics
from .configs import aggregate_seeds, config_keys, scenario_keys, searched_or_changed
from .early import convergence, early_stopping, read_scheduler_state
from .export import ROWS_FILE, Report, default_report_dir  # noqa: F401 - their home before export.py
from .flips import compare_flips
from .model import FrontPoint, ScenarioReport
from .optimism import optimism
from .pareto import default_reference, hypervolume_history, pareto_front
from .plots import FrontPlotData, Panel, method_colors
from .recommend import feasible_mask, recommend
from .selection import (finishing_order, is_replicate, missing_selection, reported_frame, runs_with_replicates,
                        search_mask, selection_frame)
from .stats import stats_of
from .tables import config_runs, paper1_table

MAX_OBJECTIVES = 3
# Test metrics every front point, baseline and recommendation reports (with the objectives
# and constraints), when the rows have them.
REPORTED = ("accuracy_old", "accuracy_new", "accuracy_gain", "nfr", "br", "bec", "accuracy_ratio")

Progress = Callable[[str, int, int], None]


def _objectives(given: Iterable[Objective | str] | None, record: SweepRecord) -> list[Objective]:
    objs = [parse_objective(o) for o in (given or ())] or [parse_objective(o) for o in record.objectives] \
        or list(DEFAULT_OBJECTIVES)
    if len(objs) > MAX_OBJECTIVES:
        raise UsageError(f"{len(objs)} objectives given; a report plots one, two or three — "
                         "pick them with --objective METRIC:max|min")
    if len({o.metric for o in objs}) != len(objs):
        raise UsageError(f"objectives {', '.join(map(str, objs))} name a metric twice; give each metric once")
    return objs


def _check_columns(df: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> None:
    """Every objective and constraint needs its test column and, since fronts are chosen on
    validation, validation values in some search row."""
    for what, metrics in (("objective", [o.metric for o in objectives]), ("constraint", [c.metric for c in constraints])):
        missing = [m for m in metrics if m not in df.columns]
        if missing:
            have = [c for c in df.columns if is_known_metric(str(c)) and not str(c).startswith(SELECTION_PREFIX)]
            hint = " (critical_* metrics need a sweep with scenario.critical_classes)" \
                if any(m.startswith("critical_") for m in missing) else ""
            raise UsageError(f"the sweep has no {what} metric {', '.join(map(repr, missing))}{hint}; "
                             f"metrics present: {', '.join(have) or 'none'}")
        if (df["status"] == "ok").any():
            no_val = missing_selection(df, metrics)
            if no_val:
                raise UsageError(f"no search trial has a validation value of {what} "
                                 f"{', '.join(repr(m) for m in no_val)} ({', '.join(SELECTION_PREFIX + m for m in no_val)}); "
                                 "a report chooses fronts on validation metrics only — pick another "
                                 f"{what} or rerun the sweep with a validation split")


def build_report(out: str, objectives: Iterable[Objective | str] | None = None,
                 constraints: Iterable[Constraint | str] | None = None,
                 progress: Progress | None = None, flips: bool = True) -> Report:
    """Compute the whole report of the sweep in `out` (a path or URI), writing nothing in
    the report directory (with `flips`, re-running two trials per scenario may add a missing
    reference model to `OUT/references`).

    `objectives` / `constraints` default to the sweep's (sweep.json); given ones replace
    them. `progress(step, done, total)` is told each step (reading, each scenario, each
    flip re-run with its expected cost). `flips=False` skips the re-runs.
    Raises a one-line `UsageError` for an empty or non-sweep directory or a metric the
    results do not have."""
    tell = progress or (lambda step, done, total: None)
    run = RunDir(out)
    storage = run.storage
    df = read_results(storage)                                  # UsageError when there is no sweep
    given = run.read_record()
    record = given or SweepRecord()
    state = read_scheduler_state(storage)
    objs = _objectives(objectives, record)
    cons = [parse_constraint(c) for c in (constraints if constraints else record.constraints)]
    if "status" not in df.columns:
        df = df.assign(status="ok")
    df = mark_baseline(df, record.templates)  # which rows ran the ce baseline (recipe included)
    lacking = [c for c in ("method", "seed") if c not in df.columns]
    if lacking:
        raise UsageError(f"{storage.uri}: the result rows have no {', '.join(map(repr, lacking))} column; "
                         "is this a flipsearch sweep, or were its rows edited?")
    _check_columns(df, objs, cons)
    reported = [m for m in dict.fromkeys([o.metric for o in objs] + [c.metric for c in cons] + list(REPORTED))
                if m in df.columns]
    keys = scenario_keys(df)
    order = list(dict.fromkeys([k for k in record.scenarios if (keys == k).any()] + sorted(set(keys))))
    searched = record.methods
    colors = method_colors(list(searched) + sorted(set(df["method"].astype(str))))
    steps = len(order) * (2 if flips else 1) + 1
    tell(f"read {len(df)} rows in {len(order)} scenario{'s' if len(order) != 1 else ''}"
         + ("; the flip comparison will re-run 2 trials per scenario" if flips else ""), 0, steps)
    scenarios = []
    for i, key in enumerate(order):
        tell(f"scenario {key}", i + 1, steps)
        scenarios.append(_scenario(key, df[keys == key], objs, cons, searched, colors, reported))
    early = _early(run, df, state, keys)                        # before the re-runs: a damaged state stops here
    _mark_kept(storage, record, scenarios)
    if flips:
        for i, s in enumerate(scenarios):
            if s.recommendation.point is None:
                continue
            cost = _expected_seconds(s)
            uid = str(s.recommendation.point.get("trial_uid"))
            kept = any(p.kept for p in s.points if str(p.row.get("trial_uid")) == uid)
            how = ("loading the recommendation's kept model, re-running a ce baseline without one"
                   if kept else "re-running the recommendation and the ce baseline")
            tell(f"flips {s.key}: {how} (at most about {cost:.0f} s)", len(order) + i + 1, steps)
            s.flips = compare_flips(storage.uri, s.key, s.recommendation.point, s.test,
                                    threads=record.threads)
    tell("tables and plots", steps, steps)
    table = paper1_table(df, objs, cons, searched, order)
    counts = {k: int(v) for k, v in df["status"].value_counts().items()}
    return Report(storage.uri, record.name or storage.uri.rstrip("/").rsplit("/", 1)[-1], objs, cons,
                  scenarios, table, counts, searched, rows=df, early=early, reported=reported, record=given,
                  flips_requested=flips)


def _mark_kept(storage, record: SweepRecord, scenarios: list[ScenarioReport]) -> None:
    """Which front points have a kept model; a note names those without one (a report on
    other objectives or constraints than the sweep kept its front for)."""
    from ..kept_models import kept_uids

    keep = record.keep or "none"
    if keep == "none":
        return
    kept = kept_uids(storage)
    for s in scenarios:
        for p in s.points:
            p.kept = str(p.row.get("trial_uid")) in kept
        missing = [p.label for p in s.points if not p.kept]
        if missing:
            what = (f"the front of {', '.join(record.objectives)}"
                    + (f" under {', '.join(record.constraints)}" if record.constraints else "")
                    if keep == "front" else "every finished trial")
            s.notes.append(f"front point{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                           f"{'have' if len(missing) > 1 else 'has'} no kept model (the sweep kept {what}); "
                           "`flipsearch export` cannot ship it: rerun it with its command and --save-model")


def _early(run: RunDir, df: pd.DataFrame, state, keys: pd.Series):
    """The early-stopping section; a scheduler.json of the wrong shape is a one-line UsageError."""
    search = ~is_replicate(df)
    try:
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"it holds {type(state).__name__}")
        return early_stopping(df[search], state, keys[search])
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UsageError(f"{run.child_uri(RunDir.SCHEDULER)} is damaged ({type(e).__name__}: {e}); move it away "
                         "to report without the early-stopping section's rung counts") from None


def _expected_seconds(s: ScenarioReport) -> float:
    """What the two flip re-runs should take: twice the median update time of the scenario's
    trials (M1 and the other references are cache hits), plus a little for the audit."""
    sec = s.rows["seconds_update"].to_numpy(dtype=float, na_value=np.nan) if "seconds_update" in s.rows \
        else np.array([np.nan])
    med = float(np.nanmedian(sec)) if np.isfinite(sec).any() else 5.0
    return 2 * med + 2


def _scenario(key: str, rows: pd.DataFrame, objectives, constraints, searched, colors, reported) -> ScenarioReport:
    first = rows.iloc[0]
    val, test = selection_frame(rows), reported_frame(rows)
    search = search_mask(rows)
    sval, stest = val[search], test[search]
    notes = []
    no_val = missing_selection(rows, [o.metric for o in objectives])
    if no_val:
        notes.append(f"no search trial of this scenario has validation values of {', '.join(no_val)}, "
                     "so its front is empty")
    # --- selection: validation values only
    front_sel = pareto_front(sval, objectives, constraints) if len(sval) else sval
    reference = default_reference(sval, objectives)
    ordered = finishing_order(val[~is_replicate(rows)])
    hv = hypervolume_history(ordered, objectives, reference, constraints=constraints)
    configs = aggregate_seeds(sval)
    rec = recommend(key, configs, objectives, constraints)
    # --- reporting: test values of what validation chose
    baseline = find_baseline(test, val, str(first.get("study")) if "study" in rows else None, reported)
    metrics = [o.metric for o in objectives]
    points = []
    for idx in front_sel.index:
        runs = test.loc[runs_with_replicates(rows, pd.Index([idx]))]
        points.append(FrontPoint(idx, rows.loc[idx], val.loc[idx], test.loc[idx], runs, stats_of(runs, reported),
                                 searched_or_changed(rows.loc[idx], searched)))
    _mark_noise(points, baseline, objectives)
    rec_runs = test.iloc[0:0]
    if rec.point is not None:
        rec_runs = test.loc[config_runs(rows, config_keys(sval), rec.point)]
    m1 = {m: v for m in metrics if (v := m1_value(stest, m)) is not None}
    m1_val = {m: v for m in metrics if (v := m1_value(sval, m)) is not None}
    noise = {m: b for m in noise_metrics(metrics + ["nfr"]) if (b := noise_floor(baseline, m)) is not None}
    opt = optimism(sval, stest, front_sel.index, objectives, constraints, reference)
    claimed = pareto_front(stest, objectives, constraints).index if len(stest) else pd.Index([])
    title = f"{first.get('dataset')} / {first.get('arrangement')} / {first.get('model')}"
    point_stats = {p.index: p.stats for p in points if p.n_seeds > 1}
    panels = [
        Panel("validation (chooses the front)", sval, front_sel.index, feasible_mask(sval, constraints), m1_val,
              baseline.mean_row("val") if baseline else None, baseline.val if baseline else {}),
        Panel("test (reported)", stest, front_sel.index, feasible_mask(stest, constraints), m1,
              baseline.mean_row("test") if baseline else None, baseline.test if baseline else {},
              {m: b for m, b in noise.items() if m in metrics}, claimed, point_stats),
    ]
    plot = FrontPlotData(title, panels, objectives, constraints, colors, len(rows))
    counts = {k: int(v) for k, v in rows["status"].value_counts().items()}
    curve = convergence(ordered, hv)
    return ScenarioReport(key, str(first.get("dataset")), str(first.get("arrangement")), str(first.get("model")),
                          counts, rows, val, test, rows.loc[front_sel.index], points, m1, m1_val, baseline, noise,
                          [float(h) for h in hv], [float(r) for r in reference], curve, rec, rec_runs,
                          stats_of(rec_runs, reported), opt, cost_table(rows[~is_replicate(rows)]), plot, notes)


def _mark_noise(points: list[FrontPoint], baseline: Baseline | None, objectives) -> None:
    """Per front point: the points (and the ce baseline) whose seed mean dominates its seed
    mean on test, split into those whose 95 % intervals overlap it in every objective
    ("within noise": the seeds cannot tell them apart) and those beyond the noise."""
    others = [(p.label, p.stats) for p in points]
    if baseline is not None:
        others.append(("ce", baseline.test))
    for p in points:
        mine = {o.metric: p.stats[o.metric].mean for o in objectives if o.metric in p.stats}
        for label, stats in others:
            if label == p.label:
                continue
            theirs = {o.metric: stats[o.metric].mean for o in objectives if o.metric in stats}
            if not dominates_by_name(theirs, mine, {o.metric: o.direction for o in objectives}):
                continue
            spread = all(o.metric in stats and stats[o.metric].has_spread and p.stats[o.metric].has_spread
                         for o in objectives)
            if not spread:
                continue
            if all(p.stats[o.metric].overlaps(stats[o.metric]) for o in objectives):
                p.within_noise_of.append(label)
            else:
                p.beyond_noise_of.append(label)


def cost_table(search_rows: pd.DataFrame) -> pd.DataFrame:
    """Per method: trials, trials with a recorded time, median total and update seconds per trial."""
    out = []
    for method, g in search_rows.groupby("method", sort=False):
        total = g["seconds_total"].to_numpy(dtype=float, na_value=np.nan) if "seconds_total" in g \
            else np.full(len(g), np.nan)
        upd = g["seconds_update"].to_numpy(dtype=float, na_value=np.nan) if "seconds_update" in g \
            else np.full(len(g), np.nan)
        timed = np.isfinite(total)
        out.append({"method": method, "trials": len(g), "timed": int(timed.sum()),
                    "median_seconds": float(np.median(total[timed])) if timed.any() else math.nan,
                    "median_update_seconds": float(np.nanmedian(upd)) if np.isfinite(upd).any() else math.nan})
    return pd.DataFrame(out, columns=["method", "trials", "timed", "median_seconds", "median_update_seconds"])
