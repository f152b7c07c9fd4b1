"""The report's content as one document (`document`): the overview, the method ×
arrangement table, each scenario's front, recommendation, baseline, flips and trials, early
stopping. Building it once keeps summary.md, index.html and the terminal output saying the
same thing; `markdown`, `terminal` and `html` render it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from ..rundir import RunDir
from ._format import count_text, counts_text, fmt, fmt_hparams, fmt_rate, fmt_unit, header, is_percent, short
from .baselines import m1_metric
from .budget import budget_blocks
from .blocks import Bold, Cell, Code, Figure, GroupRow, Heading, InlineCode, Link, Para, Raw, Section, Table, cell, para
from .configs import searched_or_changed
from .tables import COUNTS, HIGH, LOW, VAL, table_metrics

if TYPE_CHECKING:
    from .model import FrontPoint, ScenarioReport
    from .model import ReportData as Report


INFEASIBLE_MARK = " (infeasible)"
def no_spread(capital: bool = False) -> list:
    """'no seed spread is available …; rerun the sweep with `--replicates 3` …' as inline parts."""
    return [("N" if capital else "n") + "o seed spread is available (each point ran with one seed); rerun the sweep "
            "with ", InlineCode("--replicates 3"), " to re-run the front and the ce baseline with three more seeds"]




# -------------------------------------------------------------------- value helpers


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: kv[0] != "ok"))


def _int_text(v) -> str:
    return "" if v is None or pd.isna(v) else str(int(v))


def _num(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def signed(metric: str, value: float) -> str:
    """'+0.19 %', '−0.05 %', '0.00 %' (no sign for zero)."""
    if value is None or math.isnan(value):
        return "—"
    text = fmt_unit(metric, abs(value))
    if float(fmt(metric, abs(value)).replace(",", "")) == 0:
        return text
    return ("+" if value > 0 else "−") + text


def stat_text(metric: str, stat) -> str:
    """'1.23 ± 0.10 % [1.01, 1.45]' (mean ± std, 95 % interval) or '1.23 %' for one run."""
    if stat is None or stat.n == 0:
        return "—"
    if not stat.has_spread:
        return fmt_unit(metric, stat.mean)
    unit = " %" if is_percent(metric) else ""
    return f"{fmt(metric, stat.mean, stat.std)}{unit} [{fmt(metric, stat.low)}, {fmt(metric, stat.high)}]"


def stat_cell(metric: str, stat, runs: pd.DataFrame) -> Cell:
    """A cell of a metric over runs: mean ± std with the interval and the counts below."""
    if stat is None or stat.n == 0:
        return cell("—", num=True)
    counts = counts_text(runs, metric) if len(runs) else ""
    if not stat.has_spread:
        return cell(fmt_unit(metric, stat.mean), counts, stat.mean, num=True)
    unit = " %" if is_percent(metric) else ""
    sub = f"95 % CI [{fmt(metric, stat.low)}, {fmt(metric, stat.high)}]{unit}" + (f"\n{counts}" if counts else "")
    return cell(fmt_unit(metric, stat.mean, stat.std), sub, stat.mean, num=True)


def rate_cell(row: pd.Series, metric: str) -> Cell:
    """One run's value with its counts below it."""
    v = _num(row.get(metric))
    return cell(fmt_unit(metric, v), count_text(row, metric), v, num=True)


def _inline_value(metric: str, row: pd.Series) -> str:
    """'NFR 0.37 % (2 / 539)' for one run."""
    return f"{short(metric)} {fmt_rate(row, metric)}"


def _stat_inline(metric: str, stat, runs: pd.DataFrame) -> str:
    text = stat_text(metric, stat)
    counts = counts_text(runs, metric) if len(runs) else ""
    return f"{short(metric)} {text}" + (f" ({counts})" if counts else "")


# ------------------------------------------------------------------------ the blocks


def _overview(report: "Report") -> list:
    n = sum(report.counts.values())
    blocks = [Heading(1, f"flipsearch report: {report.name}"),
              para("Sweep ", InlineCode(report.out), f": {n} rows ({_counts_text(report.counts)}) in {len(report.scenarios)} "
                f"scenario{'s' if len(report.scenarios) != 1 else ''}. Objectives: ",
                *_join([InlineCode(str(o)) for o in report.objectives]), ". Constraints: ",
                *(_join([InlineCode(str(c)) for c in report.constraints]) or ["none"]), "."),
              para(Bold(["Chosen on validation, reported on test."]),
                " Every front, hypervolume, feasibility check, the operating points of the method × arrangement "
                "table and the recommendation use the validation split only (the ", InlineCode("val_*"), " columns). Every "
                "value shown as a result is on the test set, with the counts behind it (e.g. NFR 0.37 % (2 / 539)). "
                "Early-stopped trials and replicate runs never enter a front; they are in the all-trials tables.")]
    reps = report.n_replicates
    if reps:
        blocks.append(para(f"Seed spread: {reps} replicate runs re-ran the front points and the ce baseline with other "
                        "seeds; values over seeds are mean ± std with the 95 % t-interval in brackets."))
    else:
        blocks.append(para("Seed spread: ", *no_spread(capital=True), "."))
    blocks.append(para("Rows: ", Link("trials.csv", "trials.csv"), " (every row of the sweep, every column; the parts are ",
                    InlineCode(report.out.rstrip("/") + "/trials/*.parquet"), "), ", Link("front.parquet", "front.parquet"),
                    " (every front point). The Optuna journal: ", InlineCode(report.journal), " — browse it with ",
                    InlineCode(f"optuna-dashboard {report.journal}"), "."))
    return blocks


def _join(parts: list, sep: str = ", ") -> list:
    out: list = []
    for i, p in enumerate(parts):
        if i:
            out.append(sep)
        out.append(p)
    return out


def paper1_block(report: "Report") -> Table:
    """The method × arrangement table: each method at its best operating point per scenario, test values over
    its seeds."""
    metrics = table_metrics(report.objectives)
    chosen = [o.metric for o in report.objectives]
    costs = {(s.key, r["method"]): r for s in report.scenarios for _, r in s.costs.iterrows()}
    heads = ["method", *(header(m) for m in metrics), "chosen on (validation)", "seeds", "s / trial",
             "hyperparameters"]
    rows: list = []
    scenario = None
    for _, r in report.table.iterrows():
        if r["scenario"] != scenario:
            scenario = r["scenario"]
            rows.append(GroupRow(f"{r['dataset']} / {r['arrangement']} / {r['model']}"))
        baseline = r.get("role") == "baseline"
        has = bool(r["n_seeds"])
        method = str(r["method"]) + ("" if r["feasible"] or not report.constraints else INFEASIBLE_MARK)
        if baseline:
            method = "ce baseline (init=old)"
        elif not has:
            method = f"{r['method']} (no ok search trial)"
        chosen_text = ", ".join(f"{short(m)} {fmt_unit(m, r.get(VAL + m))}" for m in chosen
                                if pd.notna(r.get(VAL + m))) if has else ""
        if baseline:
            chosen_text = f"defined, not chosen (validation {chosen_text})" if chosen_text else "defined, not chosen"
        cells = []
        for m in metrics:
            if not has:
                cells.append(cell("—", num=True))
                continue
            spread = pd.notna(r[m + "_std"])
            sub = (f"[{fmt(m, r[m + LOW])}, {fmt(m, r[m + HIGH])}]" if spread else "")
            sub = "\n".join(t for t in (sub, r[m + COUNTS]) if t)
            cells.append(cell(fmt(m, r[m], r[m + "_std"]), sub, _num(r[m]), num=True))
        cost = costs.get((r["scenario"], r["method"]))
        secs = _num(cost["median_seconds"]) if cost is not None else math.nan
        rows.append([cell(method, cls="wrap"), *cells,
                     cell(chosen_text, cls="wrap"),
                     cell(str(int(r["n_seeds"])), r["run_seeds"], int(r["n_seeds"]), num=True),
                     cell("—" if math.isnan(secs) else f"{secs:.2f}", "", secs, num=True),
                     cell(fmt_hparams(r["hparams"]) if has else "", cls="hp")])
    return Table(heads, rows, id="paper1-table", cls="paper1")


def optimism_block(report: "Report") -> Table:
    """The optimism-gap table: per scenario the hypervolume and best values chosen on validation against those
    chosen on test."""
    heads = ["scenario", "HV validation", "HV test (real)", "HV test if chosen on test", "HV gap"]
    for o in report.objectives:
        heads += [f"best {header(o.metric)} real", "… claimed", "gap"]
    rows = []
    for s in report.scenarios:
        op = s.optimism
        r = [cell(s.key), cell(f"{op.hv_val:.4f}", "", op.hv_val, True), cell(f"{op.hv_real:.4f}", "", op.hv_real, True),
             cell(f"{op.hv_claimed:.4f}", "", op.hv_claimed, True), cell(f"{op.hv_gap:+.4f}", "", op.hv_gap, True)]
        for o in report.objectives:
            g = op.gap(o.metric)
            r += [cell(fmt_unit(o.metric, op.best_real.get(o.metric)), "", op.best_real.get(o.metric), True),
                  cell(fmt_unit(o.metric, op.best_claimed.get(o.metric)), "", op.best_claimed.get(o.metric), True),
                  cell(signed(o.metric, g), "", g, True)]
        rows.append(r)
    return Table(heads, rows, id="optimism-table", cls="optimism")


def _facts(report: "Report", s: "ScenarioReport") -> list:
    facts: list = [f"{s.n_trials} rows ({_counts_text(s.counts)}): {s.n_search} search trials"
                   + (f", {s.n_trials - s.n_search} replicate runs" if s.n_trials > s.n_search else "")]
    ok = s.test[(s.test["status"] == "ok")] if "status" in s.test else s.test
    for m, v in s.m1.items():
        old = m1_metric(m) or m
        facts.append(f"M1: {short(old)} {fmt_unit(old, v)} on test (mean over ok rows"
                     + (f"; e.g. {count_text(ok.iloc[0], old)}" if len(ok) and count_text(ok.iloc[0], old) else "")
                     + ")")
    return ["; ".join(facts) + "."]


def _baseline_blocks(report: "Report", s: "ScenarioReport") -> list:
    b = s.baseline
    parts: list = [Bold(["ce baseline"]), ": plain cross-entropy fine-tuning of M1 with default hyperparameters (",
                   InlineCode("ce"), " with ", InlineCode("init=old"), ") on this scenario's training recipe. "]
    if b is None:
        parts.append("Neither the search nor a replicate phase ran it, so there is no baseline and no noise floor "
                     "here (a sweep with ")
        parts += [InlineCode("--replicates 3"), " runs it with three seeds)."]
        return [Para(parts)]
    src = {"search": "the search ran it", "replicates": "the search did not run it; the replicate phase provides it",
           "search+replicates": "the search ran it and the replicate phase re-ran it with other seeds"}[b.source]
    parts.append(f"Runs: {b.describe()} — {src}. Test: ")
    parts.append("; ".join(_stat_inline(m, b.test.get(m), b.runs) for o in report.objectives
                           if (m := o.metric) in b.test) + ".")
    blocks = [Para(parts)]
    for m, band in s.noise.items():
        if band.n > 1:
            st = band.stat
            blocks.append(para(Bold(["Noise floor"]), f" ({short(m)} of the ce baseline over {band.n} seeds "
                            f"{', '.join(map(str, band.seeds))}): {fmt(m, band.low)}–{fmt_unit(m, band.high)}, "
                            f"mean {stat_text(m, st)} ({counts_text(b.runs, m)}). A method whose {short(m)} lies "
                            "in this band has not shown an improvement over plain retraining."))
        else:
            blocks.append(para(Bold(["Noise floor"]), f": the ce baseline ran with one seed only ({short(m)} "
                            f"{fmt_rate(b.runs.iloc[0], m)}), so ", *no_spread(), "."))
    return blocks


def _recommendation_blocks(report: "Report", s: "ScenarioReport") -> list:
    rec = s.recommendation
    if rec.point is None:
        return [para(Bold(["Recommendation"]), f": none — {'; '.join(rec.notes) or 'no successful trial'}.")]
    p = rec.point
    chosen = list(dict.fromkeys([o.metric for o in report.objectives] + [c.metric for c in report.constraints]))
    val_text = ", ".join(f"{short(m)} {fmt_unit(m, p[m])}" for m in chosen if m in p.index)
    test_metrics = list(dict.fromkeys(chosen + ["nfr", "br"]))
    test_text = "; ".join(_stat_inline(m, s.rec_stats.get(m), s.rec_runs) for m in test_metrics if m in s.rec_stats)
    hp = fmt_hparams(searched_or_changed(p, report.searched))
    seeds = ", ".join(str(int(x)) for x in s.rec_runs["seed"]) if len(s.rec_runs) else ""
    runs = f"{len(s.rec_runs)} run{'s' if len(s.rec_runs) != 1 else ''} (seeds {seeds})"
    if rec.feasible:
        head: list = [Bold(["Recommendation"]), f" ({rec.rule}): ", InlineCode(str(p["method"])), f" with {hp} (trial "
                      f"#{_int_text(p.get('trial_number'))}) — chosen on validation: {val_text}. On test over {runs}: "
                      f"{test_text}."]
    else:
        head = [Bold(["No configuration satisfies"]), " ", *_join([InlineCode(str(c)) for c in report.constraints]),
                " on validation. Binding: ", *_join([InlineCode(str(c)) for c in rec.binding]),
                f" (relax {'it' if len(rec.binding) == 1 else 'them'}). Closest: ", InlineCode(str(p["method"])),
                f" with {hp} — validation: {val_text}. On test over {runs}: {test_text}."]
    blocks = [Para(head), Code(rec.command or "")]
    blocks += [para("Note: " + n + ("" if n.endswith(".") else ".")) for n in rec.notes]
    return blocks


def front_block(report: "Report", s: "ScenarioReport") -> Table:
    """A scenario's validation-chosen front: per point its validation and test values, seeds and seed-noise
    verdict."""
    objs = [o.metric for o in report.objectives]
    extra = [m for m in report.reported if m not in objs]
    heads = ["trial", "method", "seeds"]
    for m in objs:
        heads += [f"{header(m)} val", f"{header(m)} test"]
    heads += ["other test metrics"] * bool(extra) + ["seed noise", "hyperparameters"]
    rows = []
    for p in s.points:
        r = [cell(p.label, "", _num(p.row.get("trial_number")), num=True), cell(str(p.row["method"])),
             cell(str(p.n_seeds), ", ".join(str(int(x)) for x in p.runs["seed"]) if "seed" in p.runs else "",
                  p.n_seeds, num=True)]
        for m in objs:
            r.append(rate_cell(p.val, m))
            r.append(stat_cell(m, p.stats.get(m), p.runs) if p.n_seeds > 1 else rate_cell(p.test, m))
        if extra:
            lines = [(_stat_inline(m, p.stats.get(m), p.runs) if p.n_seeds > 1 else _inline_value(m, p.test))
                     for m in extra]
            r.append(cell(lines[0], "\n".join(lines[1:]), cls="metrics"))
        r.append(cell(noise_text(p), cls="wrap"))
        r.append(cell(fmt_hparams(p.searched_hparams), cls="hp"))
        rows.append(r)
    n_obj = 3 + 2 * len(objs)
    terminal = list(range(n_obj)) + [len(heads) - 2, len(heads) - 1]      # the other metrics: page and summary.md
    return Table(heads, rows, id=f"front-table-{s.key}", cls="front", terminal_cols=terminal)


def noise_text(p: "FrontPoint") -> str:
    """A front point's seed-noise verdict in words (within noise of / dominated beyond noise by / not
    dominated)."""
    if p.n_seeds < 2:
        return "one seed: no spread"
    if p.within_noise_of:
        return "within noise of " + ", ".join(p.within_noise_of)
    if p.beyond_noise_of:
        return "dominated on test beyond noise by " + ", ".join(p.beyond_noise_of)
    return "not dominated on test"


def cost_block(s: "ScenarioReport") -> Table:
    """A scenario's cost table: per method its trials, timed trials and median seconds."""
    rows = []
    for _, r in s.costs.iterrows():
        med, upd = _num(r["median_seconds"]), _num(r["median_update_seconds"])
        rows.append([cell(str(r["method"])), cell(str(int(r["trials"])), "", int(r["trials"]), True),
                     cell(str(int(r["timed"])), "", int(r["timed"]), True),
                     cell("—" if math.isnan(med) else f"{med:.2f}", "", med, True),
                     cell("—" if math.isnan(upd) else f"{upd:.2f}", "", upd, True)])
    return Table(["method", "search trials", "timed", "median s / trial", "median update s"], rows,
                 id=f"cost-table-{s.key}", cls="cost")


def _optimism_para(report: "Report", s: "ScenarioReport") -> Para:
    op = s.optimism
    per = "; ".join(f"best {short(o.metric)} {fmt_unit(o.metric, op.best_real.get(o.metric))} real vs "
                    f"{fmt_unit(o.metric, op.best_claimed.get(o.metric))} claimed" for o in report.objectives)
    extra = (f" {op.test_infeasible} front point{'s' if op.test_infeasible != 1 else ''} chosen on validation "
             "break a constraint on test." if op.test_infeasible else "")
    return para(Bold(["Optimism gap"]), f": chosen on test, this front would claim a test hypervolume of "
             f"{op.hv_claimed:.4f}; the front chosen on validation really scores {op.hv_real:.4f} on test (gap "
             f"{op.hv_gap:+.4f}; {op.n_shared} of its {op.n_val_front} points are on both fronts). {per}.{extra}")


def _flips_blocks(report: "Report", s: "ScenarioReport") -> list:
    head = Heading(3, "Flips: the recommendation against plain retraining", f"flips-{s.key}")
    f = s.flips
    if f is None:
        why = ("skipped (--no-flips)" if not report.flips_requested else "no recommendation to re-run")
        return [head, para(f"Flip comparison {why}.")]
    from .flips import flips_html
    from ._format import esc

    if f.error or f.rec is None:
        text = [para(f"No flip comparison: {f.error}.")]
        return [head, Raw(flips_html(f, esc), text, text)]
    sides = [x for x in (f.rec, f.ce) if x is not None]
    kept = [x.label for x in sides if x.source.startswith("kept model")]
    rerun = [x.label for x in sides if not x.source.startswith("kept model")]
    how = (f"The report loaded the kept model{'s' if len(kept) > 1 else ''} of the {' and the '.join(kept)}"
           + (f" and re-ran the {' and the '.join(rerun)}" if rerun else " (no re-run)") if kept
           else f"The sweep kept no model of these, so the report re-ran the {' and the '.join(rerun)}")
    lead = para(how + " (ce: ", InlineCode("init=old"),
             f") at seed {f.rec.config.seed} — the same M1 — and audited both on the test set "
             f"({f.seconds:.1f} s). What this update breaks that plain retraining breaks too, what only it breaks, "
             "and what it saves:")
    if f.ce is None:
        summary = [para(f"The recommendation is the ce baseline itself: {f.rec.negatives.size} negative flips.")]
    else:
        summary = [para(f"Negative flips: {f.rec.negatives.size} of the recommendation "
                     f"({fmt_rate_audit(f.rec)}), {f.ce.negatives.size} of ce ({fmt_rate_audit(f.ce)}); "
                     f"{f.both.size} broken by both, {f.only_rec.size} only by the recommendation, "
                     f"{f.only_ce.size} only by ce (saved). The images are in index.html.")]
    for side in (f.rec, f.ce):
        if side is not None and side.reproduced is False:
            what = "kept model of the" if side.source.startswith("kept model") else "re-run"
            why = (f"it cannot be exact here ({'; '.join(side.not_exact)})" if side.not_exact else
                   "the row records the same torch, device, precision and threads as this run, so this is "
                   "a reproducibility defect worth reporting")
            summary.append(para(f"Note: the {what} {side.label} has NFR {side.nfr * 100:.2f} % where its recorded row "
                                f"has {side.recorded_nfr * 100:.2f} %: {why}; these flips are of the models shown."))
    return [head, lead, Raw(flips_html(f, esc), summary, summary)]


def fmt_rate_audit(side) -> str:
    """"NFR x % (n / N)" of one side of a flip comparison."""
    from ..audit.core import format_metric

    return "NFR " + format_metric("nfr", side.audit.metrics["nfr"])


def all_trials_block(report: "Report", s: "ScenarioReport") -> Table:
    """Every row of the scenario: search trials (on the front or not), stopped, failed and
    replicate runs, with validation and test objective values and hyperparameters."""
    from .configs import hparams_of

    objs = [o.metric for o in report.objectives]
    front = set(s.front.index)
    uid_to_trial = {}
    if "trial_uid" in s.rows.columns:
        uid_to_trial = {str(u): t for u, t in zip(s.rows["trial_uid"], s.rows["trial_number"]) if pd.notna(u)}
    heads = ["trial", "method", "role", "status", "seed", "epochs", "seconds", *(f"{header(m)} val" for m in objs),
             *(f"{header(m)} test" for m in objs), "hyperparameters"]
    rows = []
    for idx, r in _trial_order(s.rows).iterrows():
        rep_of = r.get("replicate_of")
        if isinstance(rep_of, str) and rep_of:
            role = ("replicate of ce baseline" if rep_of.startswith("baseline:")
                    else f"replicate of #{_int_text(uid_to_trial.get(rep_of))}")
        else:
            role = "front" if idx in front else "search"
        secs = _num(r.get("seconds_total"))
        number = _num(r.get("trial_number"))
        row = [cell(_int_text(number) if number >= 0 else "—", "", number if number >= 0 else None, True),
               cell(str(r["method"])), cell(role), cell(str(r.get("status")), cls=f"st-{r.get('status')}"),
               cell(_int_text(r.get("seed")), "", _num(r.get("seed")), True),
               cell(_int_text(r.get("epochs")), "", _num(r.get("epochs")), True),
               cell("—" if math.isnan(secs) else f"{secs:.2f}", "", secs, True)]
        row += [rate_cell(s.val.loc[idx], m) for m in objs]
        row += [rate_cell(s.test.loc[idx], m) for m in objs]
        row.append(cell(fmt_hparams(hparams_of(r)), cls="hp"))
        rows.append(row)
    return Table(heads, rows, id=f"trials-table-{s.key}", cls="trials", sortable=True)


def _trial_order(rows: pd.DataFrame) -> pd.DataFrame:
    """Search trials by number, each followed by its replicates; the baseline's replicates last."""
    number = {str(u): _num(t) for u, t in zip(rows["trial_uid"], rows["trial_number"]) if pd.notna(u)} \
        if "trial_uid" in rows and "trial_number" in rows else {}
    rep_of = rows["replicate_of"] if "replicate_of" in rows else pd.Series(None, index=rows.index, dtype=object)
    trial = rows["trial_number"] if "trial_number" in rows else pd.Series(0, index=rows.index)
    origin = [number.get(o, math.inf) if isinstance(o, str) and o else _num(t) for o, t in zip(rep_of, trial)]
    k = rows["replicate"].astype("Float64").fillna(-1).to_numpy(dtype=float) if "replicate" in rows \
        else [-1.0] * len(rows)
    return rows.assign(_o=origin, _k=k).sort_values(["_o", "_k"], kind="stable").drop(columns=["_o", "_k"])


def _scenario_blocks(report: "Report", s: "ScenarioReport") -> Section:
    from .interactive import front_figure

    blocks: list = [Heading(2, f"{s.dataset} / {s.arrangement} / {s.model}", f"scenario-{s.key}"),
                    Para(_facts(report, s))]
    blocks += [para("Note: " + n + ".") for n in s.notes]
    blocks += _baseline_blocks(report, s)
    blocks += _recommendation_blocks(report, s)
    blocks.append(Figure(s.png_name, True, f"trade-off in {s.key}: validation and test",
                         lambda: front_figure(report, s), f"plot-front-{s.key}"))
    blocks.append(Heading(3, "Front (chosen on validation) with its test values", f"front-{s.key}"))
    if s.points:
        blocks.append(para(f"{len(s.points)} point{'s' if len(s.points) != 1 else ''}"
                        f"{', constrained' if report.constraints else ''}, best {report.objectives[0].metric} "
                        "(validation) first. Each objective shows its validation value (what chose the point) and its "
                        "test value: mean ± std over the point's seeds with the 95 % interval and the counts, or the "
                        "single run's value and counts. \u201cwithin noise\u201d: a point whose seed mean is dominated "
                        "on test by another's, but whose intervals overlap it in every objective."))
        blocks.append(front_block(report, s))
        if not any(p.n_seeds > 1 for p in s.points):
            blocks.append(para("Seed spread: ", *no_spread(), "."))
    else:
        blocks.append(para("The front is empty: no ok search trial satisfies the constraints on validation."))
    blocks.append(_optimism_para(report, s))
    blocks.append(Heading(3, "Compute cost per method", f"cost-{s.key}"))
    blocks.append(para("Median seconds per search trial (update, evaluation and any reference model not yet cached); "
                    "early-stopped trials record no time."))
    blocks.append(cost_block(s))
    blocks += _flips_blocks(report, s)
    blocks.append(Heading(3, "All trials", f"trials-{s.key}"))
    table = all_trials_block(report, s)
    note = para(f"{len(s.rows)} rows: every search trial (front, dominated, stopped, failed) and every replicate run. "
             "Click a header to sort. Every column of every row: ", Link("trials.csv", "trials.csv"), ".")
    where = [para(f"{len(s.rows)} rows; every column of every row is in ", Link("trials.csv", "trials.csv"),
               ", and index.html has them as a sortable table.")]
    blocks.append(Raw("", where, where))
    blocks.append(Section(f"all-trials-{s.key}", [note, table], cls=HTML_ONLY))
    return Section(f"s-{s.key}", blocks, cls="scenario")


def _early_blocks(report: "Report") -> list:
    from .interactive import convergence_figure

    es = report.early
    fig = Figure(report.HYPERVOLUME_PNG, True, "validation hypervolume against cumulative update epochs",
                 lambda: convergence_figure(report), "plot-convergence")
    if es is None:
        return [Heading(2, "Convergence", "convergence"),
                para("Hypervolume of the validation front after each search trial, against the update epochs spent so "
                  "far (finishing order). Reference: 0 for a maximised rate, 1 for a minimised one."),
                fig, _final_hv(report)]
    s = es.settings
    how = (f"MO-ASHA (rungs {', '.join(f'{r:g}' for r in s['rungs'])} epochs, at most {s.get('max_t')}, "
           f"η = {s.get('reduction_factor')})" if s.get("rungs") else "Early stopping")
    saved = "—" if math.isnan(es.saved) else f"{es.saved * 100:.1f} %"
    blocks = [Heading(2, "Early stopping", "early-stopping"),
              para(f"{how} stopped trials on their validation values. The search ran {es.epochs_run} of the "
                f"{es.epochs_full} update epochs its trials would have run at full budget: {saved} saved. "
                + (f"Rung counts from the scheduler's state ({RunDir.SCHEDULER})." if es.source == RunDir.SCHEDULER
                   else f"No {RunDir.SCHEDULER}: the rungs are read from the epochs of the stopped rows.")),
              ]
    rungs = sorted({r for v in es.per_scenario.values() for r in v["rungs"]} | set(es.rungs))
    heads = ["scenario", "epochs run / full", "saved", *(f"rung {r:g}: recorded / continued / stopped" for r in rungs)]
    rows = []
    for key, v in list(es.per_scenario.items()) + [("all scenarios", {"epochs_run": es.epochs_run,
                                                                      "epochs_full": es.epochs_full,
                                                                      "saved": es.saved, "rungs": es.rungs})]:
        r = [cell(key), cell(f"{v['epochs_run']} / {v['epochs_full']}", "", v["epochs_run"], True),
             cell("—" if math.isnan(v["saved"]) else f"{v['saved'] * 100:.1f} %", "", v["saved"], True)]
        for rung in rungs:
            c = v["rungs"].get(rung)
            r.append(cell("—" if c is None else f"{c.recorded} / {c.continued} / {c.stopped}", "",
                          None if c is None else c.stopped, True))
        rows.append(r)
    blocks.append(Table(heads, rows, id="rungs-table", cls="rungs"))
    blocks.append(para("Hypervolume of the validation front against cumulative compute (update epochs, search trials in "
                    "finishing order; a stopped trial spends epochs without entering the front):"))
    blocks += [fig, _final_hv(report)]
    return blocks


def _final_hv(report: "Report") -> Para:
    return para("Final validation hypervolume (reference: 0 for a maximised rate, 1 for a minimised one): "
             + "; ".join(f"{s.key} {s.hypervolume[-1]:.4f}" if s.hypervolume else f"{s.key} —"
                         for s in report.scenarios) + ".")


def document(report: "Report") -> list:
    """The whole report as blocks, in reading order: what every writer renders."""
    blocks: list = _overview(report)
    blocks += [
        Heading(2, "Method × arrangement", "paper1"),
        para(f"Each method at its best operating point ({report.rule}), reported on test: mean ± std over its seeds "
          "(search trials and replicates) with the 95 % interval and the counts below. acc ratio = acc(M1)/acc(M2) "
          "as paper 1 prints its accuracy improvement rate (below 1 when M2 is more accurate); acc gain = "
          "acc(M2) − acc(M1) in points; BR, BEC, NFR in %. s / trial: median seconds of the method's search trials."
          + (" (infeasible): no configuration of the method meets the constraints on validation; its closest one "
             "is shown." if report.constraints else "")),
        paper1_block(report),
        *budget_blocks(report),
        Heading(2, "Optimism gap", "optimism"),
        para("What each front would have claimed had it been chosen on the test set, against what the front chosen on "
          "validation really scores on test. HV: hypervolume of the front's test values (one reference per "
          "scenario); best: the best test value of each objective on the front; a positive gap is optimism."),
        optimism_block(report),
    ]
    for s in report.scenarios:
        blocks.append(_scenario_blocks(report, s))
    blocks += _early_blocks(report)
    return blocks


HTML_ONLY = "html-only"


def flatten(blocks: Sequence) -> list:
    """The blocks with sections opened, leaving out the sections only the page shows."""
    out = []
    for b in blocks:
        if isinstance(b, Section):
            if b.cls != HTML_ONLY:
                out += flatten(b.blocks)
        else:
            out.append(b)
    return out
