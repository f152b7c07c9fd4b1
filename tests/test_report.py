"""`flipsearch report`: fronts, the paper-1 table, recommendations and commands on hand-made
rows with known answers — chosen on validation, reported on test; seed spread, the ce
baseline and the noise floor; the optimism gap; counts; early stopping; the files of a
report and their escaping; the presets; and one real small sweep with replicates."""

from __future__ import annotations

import json
import math
import re
import shlex

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from flipsearch.cli import _config, _parse_settings, cli, main
from flipsearch.config import TrialConfig
from flipsearch.data import dataset_defaults
from flipsearch.errors import UsageError
from flipsearch.objectives import parse_constraint, parse_objective
from flipsearch.report.baselines import find_baseline, noise_floor
from flipsearch.report.build import build_report
from flipsearch.report.configs import aggregate_seeds, hparams_of
from flipsearch.report.pareto import hypervolume, pareto_front
from flipsearch.report.recommend import best_operating_point, recommend, trial_command
from flipsearch.report.render import md_code, md_text
from flipsearch.report.selection import selection_frame, reported_frame
from flipsearch.report.stats import seed_stat, t_quantile
from flipsearch.report.tables import paper1_table
from flipsearch.results import ResultsWriter, decode_config, metric_columns, read_results
from flipsearch.search.space import load_space
from flipsearch.storage import Storage

SPACES = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "search_spaces")
OBJ = [parse_objective("accuracy_new:max"), parse_objective("nfr:min")]
N = 500          # test samples of the hand-made rows (every rate is k / 500)
N_VAL = 100      # validation samples
STUDY = "digits__{}__small"


def _metrics(acc, nfr, n, prefix=""):
    """Every base metric and count of an update with M1 accuracy 0.8 on `n` samples."""
    c_old, c_new, neg = round(0.8 * n), round(acc * n), round(nfr * n)
    pos = c_new - c_old + neg
    both_wrong = n - c_old - pos
    m = {"n": n, "n_correct_old": c_old, "n_correct_new": c_new, "n_errors_old": n - c_old,
         "n_errors_new": n - c_new, "n_negative_flips": neg, "n_positive_flips": pos, "n_both_wrong": both_wrong,
         "accuracy_old": c_old / n, "accuracy_new": c_new / n, "nfr": neg / n, "pfr": pos / n,
         "br": neg / c_old, "btc": (c_old - neg) / c_old, "bec": both_wrong / (n - c_new) if n > c_new else math.nan,
         "accuracy_ratio": c_old / c_new, "accuracy_gain": (c_new - c_old) / n,
         "er_old": (n - c_old) / n, "er_new": (n - c_new) / n}
    return {prefix + k: float(v) for k, v in m.items()}


def row(method="ce", acc=0.9, nfr=0.02, seed=0, status="ok", trial=0, arrangement="exclusive-op",
        val=None, **hp):
    """One result row as a sweep writes it (digits recipe, accuracy_old 0.8): test values
    `acc`/`nfr` on 500 samples, validation values `val` = (acc, nfr) on 100 (default: the
    test values)."""
    recipe = dataset_defaults("digits").recipe.as_dict()
    r = {"study": STUDY.format(arrangement), "trial_number": trial, "trial_uid": None, "dataset": "digits",
         "arrangement": arrangement, "model": "small", "method": method, "seed": seed, "old_fraction": 0.5,
         "critical_classes": "", "status": status, "error": "" if status in ("ok", "stopped") else "boom",
         "hp_init": "old", "epochs": 5}
    r.update({f"hp_{k}": v for k, v in hp.items()})
    r.update({f"m1_{k}": v for k, v in recipe.items()})
    r.update({f"update_{k}": v for k, v in recipe.items()})
    va, vn = val if val is not None else (acc, nfr)
    if status in ("ok", "stopped"):
        r.update(_metrics(va, vn, N_VAL, "val_"))
    if status == "ok":
        r.update(_metrics(acc, nfr, N))
        r.update(seconds_total=2.0 + trial, seconds_update=1.0 + trial)
    return r


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(r, trial_number=i) for i, r in enumerate(rows)])


def sweep_dir(tmp_path, rows, objectives=("accuracy_new:max", "nfr:min"), constraints=(), name="hand",
              scheduler=None):
    """A sweep output directory holding `rows` (one Parquet part each), its sweep.json and,
    with `scheduler`, a scheduler.json."""
    out = Storage.open(str(tmp_path / name))
    writer = ResultsWriter(out)
    for i, r in enumerate(rows):
        r = dict(r, trial_number=r.get("trial_number", i))
        # unique in its first 12 characters: they name the part file
        r["trial_uid"] = r.get("trial_uid") or f"{i:04d}-{r['study']}-{r['trial_number']}"
        writer.append(r)
    out.write_bytes(json.dumps({"name": name, "objectives": list(objectives), "constraints": list(constraints),
                                "scenarios": sorted({r["study"] for r in rows}), "seeds": [0],
                                "methods": {"ce": {}, "bct": {"lambda_c": ["loguniform", [0.1, 4.0]]}},
                                "scenario_options": {}}).encode(), "sweep.json")
    if scheduler is not None:
        out.write_bytes(json.dumps(scheduler).encode(), "scheduler.json")
    return str(tmp_path / name)


def replicate(of: dict, k: int, acc, nfr, val=None, **kw):
    """Replicate k of the row `of` (another seed)."""
    r = row(of["method"], acc, nfr, seed=of["seed"] + 1 + k, trial=of["trial_number"], arrangement=of["arrangement"],
            val=val, **{h[3:]: v for h, v in of.items() if h.startswith("hp_") and h != "hp_init"}, **kw)
    r.update(replicate_of=of["trial_uid"], replicate=k, trial_uid=f"r{k}-{of['trial_uid']}")
    return r


def baseline_replicate(arrangement: str, k: int, acc, nfr):
    r = row("ce", acc, nfr, seed=1 + k, trial=-1, arrangement=arrangement)
    r.update(replicate_of=f"baseline:{STUDY.format(arrangement)}", replicate=k, trial_uid=f"b{k}-{arrangement}")
    return r


# --------------------------------------------------------------- rule and recommendation


def three_points():
    return frame(row("bct", 0.95, 0.030, lambda_c=0.1), row("bct", 0.93, 0.008, lambda_c=1.0),
                 row("bct", 0.90, 0.002, lambda_c=3.0), row("bct", 0.99, 0.0, status="failed", lambda_c=9.0))


@pytest.mark.parametrize("constraints, expected", [
    ([], 0.1),                                       # best accuracy, whatever its flips
    (["nfr<=0.01"], 1.0),                            # the constraint moves the pick
    (["nfr<=0.005"], 3.0),
    (["nfr<=0.01", "accuracy_new>=0.92"], 1.0),
])
def test_constraint_changes_the_pick_and_failed_rows_never_win(constraints, expected):
    configs = aggregate_seeds(three_points())
    point = best_operating_point(configs, OBJ, [parse_constraint(c) for c in constraints])
    assert point["hp_lambda_c"] == expected          # the failed row (acc 0.99, nfr 0) is never picked


def test_infeasible_names_the_binding_constraint_and_the_closest_point():
    configs = aggregate_seeds(three_points())
    cons = [parse_constraint("nfr<=0.001"), parse_constraint("accuracy_new>=0.5")]
    rec = recommend("s", configs, OBJ, cons)
    assert not rec.feasible
    assert [str(c) for c in rec.binding] == ["nfr<=0.001"]       # accuracy_new>=0.5 holds everywhere
    assert rec.point["hp_lambda_c"] == 3.0                        # smallest NFR: closest to the bound
    assert "--set lambda_c=3.0" in rec.command


def test_nothing_ok_gives_no_recommendation():
    configs = aggregate_seeds(frame(row("ce", status="failed"), row("bct", status="diverged", lambda_c=1.0)))
    rec = recommend("s", configs, OBJ, [parse_constraint("nfr<=0.01")])
    assert rec.point is None and rec.command is None and [str(c) for c in rec.binding] == ["nfr<=0.01"]


def test_seed_means_choose_on_validation_and_report_test_over_seeds():
    df = frame(
        # lambda_c=1: one lucky seed (val 0.97) but a validation mean of 0.89
        row("bct", 0.90, 0.010, seed=0, lambda_c=1.0, val=(0.97, 0.01)),
        row("bct", 0.90, 0.020, seed=1, lambda_c=1.0, val=(0.85, 0.02)),
        row("bct", 0.90, 0.030, seed=2, lambda_c=1.0, val=(0.85, 0.03)),
        row("bct", 0.80, 0.050, seed=0, lambda_c=2.0, val=(0.90, 0.05)),      # one seed, validation mean 0.90
        row("ce", 0.88, 0.040, seed=0), row("ce", 0.86, 0.060, seed=1),
    )
    df["trial_uid"] = [f"u{i}" for i in range(len(df))]
    configs = aggregate_seeds(selection_frame(df))
    many = configs[configs["hp_lambda_c"] == 1.0].iloc[0]
    assert many["n_runs"] == 3 and many["seeds"] == "0,1,2" and many["seed"] == 0
    assert many["accuracy_new"] == pytest.approx(0.89) and many["nfr"] == pytest.approx(0.02)   # validation means

    table = paper1_table(df, OBJ, [])
    bct = table[(table["method"] == "bct") & (table["role"] == "best")].iloc[0]
    assert bct["hparams"] == {"lambda_c": 2.0}                          # validation mean 0.90 > 0.89
    assert bct["val_accuracy_new"] == pytest.approx(0.90)
    assert bct["accuracy_new"] == pytest.approx(0.80)                   # ... reported on test
    assert bct["nfr_counts"] == "25 / 500"
    ce = table[(table["method"] == "ce") & (table["role"] == "best")].iloc[0]
    assert ce["nfr"] == pytest.approx(0.05) and ce["nfr_std"] == pytest.approx(np.std([0.04, 0.06], ddof=1))
    half = t_quantile(1) * np.std([0.04, 0.06], ddof=1) / math.sqrt(2)
    assert (ce["nfr_low"], ce["nfr_high"]) == pytest.approx((max(0.0, 0.05 - half), 0.05 + half))
    assert ce["nfr_counts"] == "20, 30 / 500"
    # Under nfr<=0.03 (on validation) only the three-seed configuration of bct is feasible.
    searched = {"bct": {"lambda_c": ["choice", [1.0, 2.0]]}}
    t = paper1_table(df, OBJ, [parse_constraint("nfr<=0.03")], searched)
    bct = t[(t["method"] == "bct") & (t["role"] == "best")].iloc[0]
    assert bct["feasible"] and bct["hparams"] == {"lambda_c": 1.0} and bct["n_runs"] == 3
    assert bct["accuracy_new"] == pytest.approx(0.90) and bct["nfr"] == pytest.approx(0.02)

    base = find_baseline(reported_frame(df), selection_frame(df), "digits__exclusive-op__small", ["nfr", "accuracy_new"])
    assert base.source == "search" and base.seeds == [0, 1]
    band = noise_floor(base, "nfr")
    assert (band.low, band.high, band.n) == (0.04, 0.06, 2) and band.mean == pytest.approx(0.05)
    assert band.stat.std == pytest.approx(np.std([0.04, 0.06], ddof=1))
    ce_row = table[(table["method"] == "ce") & (table["role"] == "baseline")].iloc[0]
    assert ce_row["n_seeds"] == 2 and ce_row["nfr"] == pytest.approx(0.05)


def test_seed_stat_is_the_t_interval_clipped_to_the_unit_interval():
    s = seed_stat([0.01, 0.02, 0.06])
    mean, sd = np.mean([0.01, 0.02, 0.06]), np.std([0.01, 0.02, 0.06], ddof=1)
    assert t_quantile(2) == pytest.approx(4.302652729749464)
    assert (s.mean, s.std, s.high) == pytest.approx((mean, sd, mean + 4.302652729749464 * sd / math.sqrt(3)))
    assert s.low == pytest.approx(mean - 4.302652729749464 * sd / math.sqrt(3))        # below 0: no bounds given
    assert seed_stat([0.01, 0.02, 0.06], (0.0, 1.0)).low == 0.0
    one = seed_stat([0.3, float("nan")])
    assert one.n == 1 and not one.has_spread and math.isnan(one.std) and not one.overlaps(s)


# ----------------------------------------------------------------------- the command


def _rebuild(command: str) -> tuple[dict, TrialConfig]:
    """Parse `command` with the real `trial` command and rebuild its TrialConfig."""
    argv = shlex.split(command)
    assert argv[:2] == ["flipsearch", "trial"]
    p = dict(cli.commands["trial"].make_context("trial", argv[2:]).params)
    settings = p.pop("settings")
    p.pop("save_model"), p.pop("as_json"), p.pop("threads")
    p["critical_classes"] = tuple(int(c) for c in (p["critical_classes"] or "").split(",") if c)
    return p, _config(**p).with_settings(_parse_settings(settings))


def test_trial_command_reproduces_hparams_recipes_and_scenario():
    r = row("bct", 0.9, 0.01, seed=3, arrangement="class-incremental", lambda_c=0.123456789012345,
            variant="strict-imitation", dissonance_scale="batch")
    r.update(m1_epochs=3, update_epochs=3, update_lr=0.01, update_augment=True, critical_classes="3,5",
             old_fraction=0.4, hp_k=float("nan"), data_root="/data/x y")  # hp_k: another method's: ignored
    command, notes = trial_command(pd.Series(r))
    assert "--set epochs=3" in command and "--set update.lr=0.01" in command and "m1.lr" not in command
    params, cfg = _rebuild(command)
    assert cfg.hparams == {"lambda_c": 0.123456789012345, "variant": "strict-imitation",
                           "dissonance_scale": "batch", "init": "old"}
    m1, upd = cfg.recipes()
    assert (m1.epochs, upd.epochs, m1.lr, upd.lr, m1.augment, upd.augment) == (3, 3, 0.05, 0.01, False, True)
    assert (cfg.seed, cfg.arrangement, cfg.old_fraction, cfg.critical_classes) == (3, "class-incremental", 0.4, (3, 5))
    assert params["data_root"] == "/data/x y" and notes == []


def test_trial_command_and_scale():
    command, notes = trial_command(pd.Series(row("ce")))
    assert "--scale" not in command and notes == []
    command, notes = trial_command(pd.Series(dict(row("ce"), scale=0.05, test_scale=0.5)))
    assert "--scale 0.05" in command and "--test-scale 0.5" in command and notes == []


def test_trial_command_carries_the_rows_thread_count_and_says_when_it_cannot_be_exact():
    command, notes = trial_command(pd.Series(dict(row("ce"), threads=3)))
    argv = shlex.split(command)
    assert argv[-2:] == ["--threads", "3"] and notes == []
    assert cli.commands["trial"].make_context("trial", argv[2:]).params["threads"] == 3
    command, notes = trial_command(pd.Series(dict(row("ce"), pack_size=4)))
    assert "--threads" not in command and len(notes) == 1 and "pack of 4" in notes[0]


def test_hparams_of_types_values_by_schema():
    r = pd.Series(row("neurecover", particles=21.0, iterations=16.0, reduction_rate=0.1, hp_init=float("nan")))
    r["hp_init"] = float("nan")
    hp = hparams_of(r)
    assert hp["particles"] == 21 and isinstance(hp["particles"], int) and "init" not in hp


# ------------------------------------------------ selection on validation, report on test


def _selection_rows():
    """Two scenarios where validation and test disagree, with stopped, failed and replicate rows."""
    op = [row("ce", 0.90, 0.020, seed=0, trial=0, val=(0.92, 0.02)),
          row("bct", 0.92, 0.010, trial=1, lambda_c=1.0, val=(0.93, 0.01)),
          row("bct", 0.95, 0.030, trial=2, lambda_c=0.2, val=(0.91, 0.03)),       # test's best, dominated on val
          row("bct", 0.80, 0.200, trial=3, lambda_c=3.0, val=(0.95, 0.04)),       # val's best acc, bad on test
          row("bct", status="stopped", trial=4, lambda_c=4.0, val=(0.99, 0.0)),   # would win on val: never on a front
          row("bct", status="diverged", trial=5, lambda_c=5.0)]
    ci = [row("bct", 0.93, 0.012, trial=0, arrangement="class-incremental", lambda_c=1.0, val=(0.94, 0.01)),
          row("ce", 0.94, 0.030, trial=1, arrangement="class-incremental", val=(0.95, 0.03))]
    rows = [dict(r, trial_uid=f"op{r['trial_number']}") for r in op] + \
           [dict(r, trial_uid=f"ci{r['trial_number']}") for r in ci]
    # a replicate with perfect validation values: never on a front either
    rows.append(replicate(rows[1], 0, 0.91, 0.012, val=(1.0, 0.0)))
    rows.append(replicate(rows[1], 1, 0.93, 0.008, val=(1.0, 0.0)))
    rows.append(baseline_replicate("exclusive-op", 0, 0.91, 0.024))
    return rows


def _picks(rep):
    """What selection decides: front membership, hypervolume, recommendation, table picks."""
    return {
        "fronts": {s.key: sorted(int(t) for t in s.front["trial_number"]) for s in rep.scenarios},
        "hv": {s.key: [round(h, 12) for h in s.hypervolume] for s in rep.scenarios},
        "rec": {s.key: (s.recommendation.feasible, None if s.recommendation.point is None
                        else int(s.recommendation.point["trial_number"])) for s in rep.scenarios},
        "table": [(r["scenario"], r["method"], r["role"], bool(r["feasible"]),
                   None if pd.isna(r["trial_number"]) else int(r["trial_number"])) for _, r in rep.table.iterrows()],
    }


def test_front_and_recommendation_depend_on_validation_values_only(tmp_path):
    rows = _selection_rows()
    base = build_report(sweep_dir(tmp_path, rows, name="base"), constraints=["nfr<=0.035"], flips=False)
    picks = _picks(base)
    op = STUDY.format("exclusive-op")
    assert picks["fronts"][op] == [1]              # on validation: #3 (val NFR 4 %) breaks nfr<=0.035; #4 is stopped
    assert picks["rec"][op] == (True, 1)
    assert _picks(build_report(sweep_dir(tmp_path, rows, name="free"), flips=False))["fronts"][op] == [1, 3]
    # Permute and perturb every TEST metric column across the rows: nothing selection decides moves.
    rng = np.random.default_rng(0)
    test_cols = [c for c in metric_columns() if any(c in r for r in rows)]          # plain names: test values
    assert "nfr" in test_cols and "n_negative_flips" in test_cols and not any(c.startswith("val_") for c in test_cols)
    order = rng.permutation(len(rows))
    shuffled = []
    for i, r in enumerate(rows):
        donor = rows[order[i]]
        s = dict(r)
        for c in test_cols:
            v = donor.get(c)
            s[c] = None if v is None else float(v) * float(rng.uniform(0.5, 1.5))
        shuffled.append(s)
    other = build_report(sweep_dir(tmp_path, shuffled, name="shuffled"), constraints=["nfr<=0.035"], flips=False)
    assert _picks(other) == picks
    assert other.scenarios[0].optimism.hv_real != base.scenarios[0].optimism.hv_real    # the test values did change
    # Changing validation values does move the front and the recommendation.
    moved = [dict(r) for r in rows]
    moved[2].update(_metrics(0.99, 0.0, N_VAL, "val_"))            # trial #2 now best on validation
    again = build_report(sweep_dir(tmp_path, moved, name="moved"), constraints=["nfr<=0.035"], flips=False)
    assert _picks(again)["fronts"][op] == [2] and _picks(again)["rec"][op] == (True, 2)


def test_front_points_show_test_values_beside_validation_and_the_optimism_gap(tmp_path):
    rows = _selection_rows()
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    s = next(x for x in rep.scenarios if x.arrangement == "exclusive-op")
    p3 = next(p for p in s.points if p.row["trial_number"] == 3)
    assert p3.val["accuracy_new"] == pytest.approx(0.95) and p3.test["accuracy_new"] == pytest.approx(0.80)
    p1 = next(p for p in s.points if p.row["trial_number"] == 1)
    assert p1.n_seeds == 3 and list(p1.runs["seed"]) == [0, 1, 2]        # the trial and its two replicates
    assert p1.stats["nfr"].mean == pytest.approx(np.mean([0.010, 0.012, 0.008]))
    # Optimism: chosen on test the front is {#1 (.92,.01), #2 (.95,.03), replicate-free ok search rows only}.
    op = s.optimism
    hv = lambda pts: hypervolume(np.array(pts), ["max", "min"], [0.0, 1.0])  # noqa: E731
    assert op.hv_claimed == pytest.approx(hv([[0.92, 0.01], [0.95, 0.03]]))
    assert op.hv_real == pytest.approx(hv([[0.92, 0.01], [0.80, 0.20]]))
    assert op.hv_val == pytest.approx(hv([[0.93, 0.01], [0.95, 0.04]]))
    assert op.best_claimed == pytest.approx({"accuracy_new": 0.95, "nfr": 0.01})
    assert op.best_real == pytest.approx({"accuracy_new": 0.92, "nfr": 0.01})
    assert op.gap("accuracy_new") == pytest.approx(0.03) and op.gap("nfr") == pytest.approx(0.0)
    doc = json.loads(json.dumps(rep.to_json(), allow_nan=False))
    js = next(x for x in doc["scenarios"] if x["arrangement"] == "exclusive-op")
    assert js["optimism"]["hypervolume"]["gap"] == pytest.approx(op.hv_gap)
    acc = js["optimism"]["objectives"]["accuracy_new"]
    assert acc["direction"] == "max" and (acc["real"], acc["claimed"], acc["gap"]) == pytest.approx((0.92, 0.95, 0.03))
    point = next(f for f in js["front"] if f["trial_number"] == 3)
    assert point["val"]["accuracy_new"] == {"value": 0.95, "count": 95, "denominator": 100}
    assert point["test"]["nfr"] == {"value": 0.2, "count": 100, "denominator": 500}
    assert doc["selection"] == "validation" and doc["reported"] == "test"
    md = rep_text(rep, tmp_path)["md"]
    assert "## Optimism gap" in md and f"{op.hv_claimed:.4f}" in md and f"{op.hv_real:.4f}" in md
    term = rep_text(rep, tmp_path)["terminal"]
    assert "Optimism gap" in term and f"{op.hv_gap:+.4f}" in term


def rep_text(rep, tmp_path, name="rep"):
    from flipsearch.report.render import render_terminal

    rep.write(str(tmp_path / name))
    return {"md": (tmp_path / name / "summary.md").read_text(), "html": (tmp_path / name / "index.html").read_text(),
            "terminal": render_terminal(rep)}


def test_stopped_and_replicate_rows_stay_off_fronts_but_in_the_all_trials_table(tmp_path):
    rows = _selection_rows()
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    for s in rep.scenarios:
        assert (s.front["status"] == "ok").all() and s.front["replicate_of"].isna().all()
    text = rep_text(rep, tmp_path)
    html = text["html"]
    table = re.search(r'<table id="trials-table-digits__exclusive-op__small".*?</table>', html, re.S).group(0)
    assert table.count("<tr>") == 1 + 6 + 2 + 1                   # header, 6 search rows, 2 replicates, 1 baseline
    assert "stopped" in table and "diverged" in table and "replicate of #1" in table
    assert "replicate of ce baseline" in table and "sortable" in table
    # Sorting reads data-v: every numeric cell carries its value.
    assert 'data-v="0.95"' in table


def test_baseline_from_search_and_replicates_and_within_noise_marks(tmp_path):
    a = dict(row("bct", 0.92, 0.010, trial=0, lambda_c=1.0, val=(0.92, 0.010)), trial_uid="a")
    b = dict(row("bct", 0.94, 0.030, trial=1, lambda_c=0.2, val=(0.94, 0.030)), trial_uid="b")
    c = dict(row("bct", 0.96, 0.050, trial=2, lambda_c=0.1, val=(0.96, 0.050)), trial_uid="c")
    ce = dict(row("ce", 0.90, 0.040, trial=3, val=(0.90, 0.060)), trial_uid="ce")
    rows = [a, b, c, ce,
            # a's seeds: test means (0.94, 0.012), wide: b (mean 0.946, 0.028) dominates... no: see below
            replicate(a, 0, 0.96, 0.012), replicate(a, 1, 0.94, 0.014),
            # b's seeds: mean (0.95, 0.02) dominates a's mean (0.94, 0.012)? no (NFR worse); c's (0.97, 0.052)
            replicate(b, 0, 0.96, 0.016), replicate(b, 1, 0.95, 0.014),
            replicate(c, 0, 0.962, 0.006), replicate(c, 1, 0.960, 0.002),
            baseline_replicate("exclusive-op", 0, 0.92, 0.030), baseline_replicate("exclusive-op", 1, 0.88, 0.050)]
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    s = rep.scenarios[0]
    assert s.baseline.source == "search+replicates" and s.baseline.seeds == [0, 1, 2]
    assert s.noise["nfr"].n == 3 and s.noise["nfr"].low == pytest.approx(0.03) and s.noise["nfr"].high == 0.05
    points = {p.label: p for p in s.points}
    assert set(points) == {"#0", "#1", "#2"}
    # Test seed means: #0 (0.94, 0.012), #1 (0.95, 0.02), #2 (0.9607, 0.0193): #2 dominates #1; their
    # intervals overlap in both objectives -> #1 is within noise of #2.
    assert points["#2"].stats["accuracy_new"].mean == pytest.approx((0.96 + 0.962 + 0.960) / 3)
    assert points["#1"].within_noise_of == ["#2"] and points["#1"].beyond_noise_of == []
    assert points["#0"].within_noise_of == [] and points["#2"].within_noise_of == []
    text = rep_text(rep, tmp_path)
    assert "within noise of #2" in text["md"] and "within noise of #2" in text["html"]
    assert "Noise floor" in text["md"] and "over 3 seeds" in text["md"]
    assert "search trial #3 (seed 0) and 2 replicate runs (seeds 1, 2)" in text["md"]
    doc = json.loads(json.dumps(rep.to_json(), allow_nan=False))["scenarios"][0]
    assert doc["baseline"]["source"] == "search+replicates" and doc["baseline"]["seeds"] == [0, 1, 2]
    assert doc["noise_floor"]["nfr"]["runs"] == 3 and doc["seed_spread_available"]
    f1 = next(f for f in doc["front"] if f["trial_number"] == 1)
    assert f1["within_noise_of"] == ["#2"] and f1["seeds"]["n"] == 3
    assert f1["seeds"]["test"]["nfr"]["counts"] == "15, 8, 7 / 500"
    lo, hi = f1["seeds"]["test"]["nfr"]["ci95"]
    st = seed_stat([0.03, 0.016, 0.014], (0, 1))
    assert (lo, hi) == pytest.approx((st.low, st.high))


def test_a_ce_front_point_takes_its_seeds_from_the_baselines_replicates(tmp_path):
    # The sweep replicates the ce baseline's configuration once, as the baseline; a ce trial at
    # its defaults on the front is that configuration, so the baseline's runs are its seeds.
    ce = dict(row("ce", 0.95, 0.030, trial=0, val=(0.95, 0.030)), trial_uid="ce")
    bct = dict(row("bct", 0.92, 0.010, trial=1, lambda_c=1.0, val=(0.92, 0.010)), trial_uid="b")
    rows = [ce, bct, replicate(bct, 0, 0.93, 0.012), replicate(bct, 1, 0.91, 0.014),
            baseline_replicate("exclusive-op", 0, 0.93, 0.040), baseline_replicate("exclusive-op", 1, 0.91, 0.050)]
    s = build_report(sweep_dir(tmp_path, rows), flips=False).scenarios[0]
    points = {p.label: p for p in s.points}
    assert set(points) == {"#0", "#1"} and points["#0"].n_seeds == 3 and points["#1"].n_seeds == 3
    assert points["#0"].stats["nfr"].mean == pytest.approx((0.030 + 0.040 + 0.050) / 3)
    table = paper1_table(pd.DataFrame(rows), OBJ, [])
    ce_row = table[(table["method"] == "ce") & (table["role"] == "best")].iloc[0]
    assert ce_row["n_seeds"] == 3 and ce_row["nfr"] == pytest.approx(0.04)
    # A sweep from before this rule replicated the ce point a second time at the same seeds:
    # each seed counts once.
    old = rows + [replicate(ce, 0, 0.93, 0.040), replicate(ce, 1, 0.91, 0.050)]
    s = build_report(sweep_dir(tmp_path, old, name="old"), flips=False).scenarios[0]
    assert {p.label: p.n_seeds for p in s.points}["#0"] == 3


def test_without_replicates_or_baseline_the_report_says_so(tmp_path):
    rows = [row("bct", 0.92, 0.010, trial=0, lambda_c=1.0), row("bct", 0.95, 0.030, trial=1, lambda_c=0.2),
            row("ce", 0.93, 0.02, trial=2, init="scratch")]            # ce, but not the default init=old
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    assert rep.scenarios[0].baseline is None and rep.scenarios[0].noise == {}
    text = rep_text(rep, tmp_path)
    for where in ("md", "html", "terminal"):
        assert "no seed spread is available" in text[where].replace("No seed spread", "no seed spread")
        assert "--replicates 3" in text[where]
        assert "Neither the search nor a replicate phase ran it" in text[where]
    doc = json.loads(json.dumps(rep.to_json(), allow_nan=False))
    assert doc["replicate_runs"] == 0 and not doc["scenarios"][0]["seed_spread_available"]
    assert doc["scenarios"][0]["baseline"]["available"] is False


def test_every_rate_comes_with_its_counts(tmp_path):
    rows = [row("bct", 0.92, 0.010, trial=0, lambda_c=1.0), row("ce", 0.90, 0.020, trial=1)]
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    text = rep_text(rep, tmp_path)
    for where in ("md", "html", "terminal"):
        assert "5 / 500" in text[where] and "10 / 500" in text[where]          # bct's and ce's NFR
        assert "460 / 500" in text[where]                                      # bct's accuracy
        assert "5 / 400" in text[where]                                        # bct's BR: flips / M1's correct
    assert "NFR 1.00 % (5 / 500)" in text["terminal"]
    doc = json.loads(json.dumps(rep.to_json(), allow_nan=False))
    rec = doc["scenarios"][0]["recommendation"]
    assert rec["test"]["nfr"]["counts"] == "5 / 500"
    point = doc["scenarios"][0]["front"][0]
    assert point["test"]["br"] == {"value": 5 / 400, "count": 5, "denominator": 400}
    bct = next(r for r in doc["table"] if r["method"] == "bct")
    assert bct["test"]["nfr"]["counts"] == "5 / 500" and bct["val"]["nfr"] == pytest.approx(0.01)


def test_early_stopping_section_from_scheduler_state(tmp_path):
    from flipsearch.search.scheduler import ParetoRungs

    rows = [row("bct", 0.92, 0.01, trial=0, lambda_c=1.0), row("bct", status="stopped", trial=1, lambda_c=2.0),
            row("bct", status="stopped", trial=2, lambda_c=3.0), row("bct", 0.95, 0.03, trial=3, lambda_c=0.2)]
    for r, epochs, tid in zip(rows, (9, 1, 3, 9), ("t0", "t1", "t2", "t3")):
        r.update(epochs=epochs, update_epochs=9, ray_trial_id=tid)
    core = ParetoRungs(["max", "min"], max_t=9, grace_period=1, reduction_factor=3)   # rungs 1, 3
    core._recorded = {1.0: [("t0", (0.9, 0.01), 0.0), ("t1", (0.5, 0.3), 0.0), ("t2", (0.91, 0.02), 0.0),
                            ("t3", (0.95, 0.03), 0.0)], 3.0: [("t0", (0.92, 0.01), 0.0), ("t2", (0.6, 0.2), 0.0),
                                                              ("t3", (0.95, 0.03), 0.0)]}
    core._recorded = {1: core._recorded[1.0], 3: core._recorded[3.0]}
    core.decisions = {"t0": [(1, "continue"), (3, "continue")], "t1": [(1, "stop")],
                      "t2": [(1, "continue"), (3, "stop")], "t3": [(1, "continue"), (3, "continue")]}
    core.stopped = {"t1": 1, "t2": 3}
    state = {"core": core.state_dict(), "time_attr": "epoch", "keys": ["val_accuracy_new", "val_nfr"]}
    rep = build_report(sweep_dir(tmp_path, rows, scheduler=state), flips=False)
    es = rep.early
    assert (es.epochs_run, es.epochs_full) == (22, 36) and es.saved == pytest.approx(1 - 22 / 36)
    counts = {r: (c.recorded, c.continued, c.stopped) for r, c in es.rungs.items()}
    assert counts == {1.0: (4, 3, 1), 3.0: (3, 2, 1)}
    assert es.per_scenario[STUDY.format("exclusive-op")]["stopped"] == 2
    curve = rep.scenarios[0].curve
    assert curve.epochs == [9, 10, 13, 22] and curve.status == ["ok", "stopped", "stopped", "ok"]
    assert curve.hypervolume[1] == curve.hypervolume[2] == curve.hypervolume[0] < curve.hypervolume[3]
    text = rep_text(rep, tmp_path)
    assert "## Early stopping" in text["md"] and "22 of the 36" in text["md"] and "38.9 % saved" in text["md"]
    assert "4 / 3 / 1" in text["md"] and 'id="plotly-convergence"' in text["html"]
    doc = json.loads(json.dumps(rep.to_json(), allow_nan=False))
    assert doc["early_stopping"]["rungs"]["3"] == {"recorded": 3, "continued": 2, "stopped": 1}
    assert doc["scenarios"][0]["convergence"]["cumulative_epochs"] == [9, 10, 13, 22]
    # Without scheduler.json the rungs come from the stopped rows' epochs.
    rep = build_report(sweep_dir(tmp_path, rows, name="noscheduler"), flips=False)
    assert rep.early.source == "rows" and {r: c.stopped for r, c in rep.early.rungs.items()} == {1.0: 1, 3.0: 1}
    # A sweep with neither has no such section.
    plain = build_report(sweep_dir(tmp_path, [rows[0], rows[3]], name="fifo"), flips=False)
    assert plain.early is None and "## Convergence" in rep_text(plain, tmp_path, "fifo-rep")["md"]


# ------------------------------------------------------------------ the report files


def test_report_files_on_hand_made_sweep(tmp_path):
    rows = [row("ce", 0.90, 0.020, seed=0), row("ce", 0.91, 0.024, seed=1),
            row("bct", 0.92, 0.010, lambda_c=1.0), row("bct", 0.95, 0.030, lambda_c=0.2),
            row("bct", 0.80, 0.200, lambda_c=3.0), row("bct", status="diverged", lambda_c=4.0),
            row("bct", 0.93, 0.012, arrangement="exclusive-dev", lambda_c=1.0),
            row("ce", 0.94, 0.030, arrangement="exclusive-dev")]
    out = sweep_dir(tmp_path, [dict(r, trial_number=i) for i, r in enumerate(rows)])
    rep = build_report(out, constraints=["nfr<=0.015"], flips=False)
    op = next(s for s in rep.scenarios if s.arrangement == "exclusive-op")
    assert list(op.front["hp_lambda_c"]) == [1.0]                 # the constrained front
    assert op.recommendation.feasible and op.recommendation.point["hp_lambda_c"] == 1.0
    assert op.noise["nfr"].n == 2 and op.m1 == {"accuracy_new": 0.8}
    assert op.counts == {"ok": 5, "diverged": 1} and len(op.hypervolume) == 6
    assert all(b >= a for a, b in zip(op.hypervolume, op.hypervolume[1:]))
    written = rep.write(str(tmp_path / "rep"))
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert names == {"index.html", "summary.md", "front.parquet", "trials.csv", "hypervolume.png",
                     "front-digits__exclusive-op__small.png", "front-digits__exclusive-dev__small.png"}
    front = pd.read_parquet(tmp_path / "rep" / "front.parquet")
    assert sorted(front["scenario"]) == ["digits__exclusive-dev__small", "digits__exclusive-op__small"]
    assert len(pd.read_csv(tmp_path / "rep" / "trials.csv")) == len(rows)
    md = (tmp_path / "rep" / "summary.md").read_text()
    # lambda_c=1.0 is bct's default, so the command needs no --set for it
    assert "![" in md and "front-digits__exclusive-op__small.png" in md
    assert "flipsearch trial --dataset digits --arrangement exclusive-op --method bct --seed 0\n" in md
    # Without the constraint the front has the trade-off: (0.95, 0.03), (0.92, 0.01) — ce 0.91/0.024 is dominated.
    rep = build_report(out, flips=False)
    op = next(s for s in rep.scenarios if s.arrangement == "exclusive-op")
    assert list(op.front["hp_lambda_c"]) == [0.2, 1.0]


def test_three_objectives_and_bad_objectives(tmp_path):
    rows = [row("bct", 0.95, 0.03, lambda_c=0.1), row("bct", 0.90, 0.01, lambda_c=1.0),
            row("ce", 0.90, 0.01), row("ce", 0.85, 0.02, seed=1)]
    rows[2]["val_bec"] = 0.95                                       # same acc/nfr as row 1, better BEC (validation)
    out = sweep_dir(tmp_path, [dict(r, trial_number=i) for i, r in enumerate(rows)])
    objs = ["accuracy_new:max", "nfr:min", "bec:max"]
    rep = build_report(out, objectives=objs, flips=False)
    front = rep.scenarios[0].front
    assert sorted(front["trial_number"]) == [0, 2]                  # row 1 loses on BEC, row 3 everywhere
    df = read_results(out)
    assert list(front.index) == list(pareto_front(selection_frame(df), objs).index)
    assert rep.scenarios[0].png[:8] == b"\x89PNG\r\n\x1a\n"
    # The page plots every pair of the three objectives (validation and test panel each), and
    # each panel's front is the three-objective front.
    data, layout = plotly_calls(rep_text(rep, tmp_path)["html"])["plotly-front-digits__exclusive-op__small"]
    name = lambda axis: axis["title"]["text"].split(" ")[0]  # noqa: E731
    pairs = [(name(layout[f"xaxis{i or ''}"]), name(layout[f"yaxis{i or ''}"])) for i in (0, 2, 3, 4, 5, 6)]
    assert sorted(pairs) == sorted([("accuracy_new", "nfr"), ("accuracy_new", "bec"), ("nfr", "bec")] * 2)
    fronts = [t for t in data if t.get("name", "").startswith("front")]
    assert len(fronts) == 6
    for t in fronts:
        assert sorted(re.search(r"trial #(\d+)", h).group(1) for h in t["hovertext"]) == ["0", "2"]
    for bad in (["accuracy_new", "nfr", "br", "bec"], ["critical_nfr:min"], ["nfr:min", "nfr:max"], ["nosuch"]):
        with pytest.raises(UsageError):
            build_report(out, objectives=bad, flips=False)


def test_an_objective_without_validation_values_is_refused(tmp_path):
    rows = [row("bct", 0.95, 0.03, lambda_c=0.1)]
    for k in [k for k in rows[0] if k.startswith("val_")]:
        rows[0][k] = None
    with pytest.raises(UsageError, match="validation value"):
        build_report(sweep_dir(tmp_path, rows), flips=False)


def test_report_on_empty_or_non_sweep_dir_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a sweep")
    for target in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SystemExit) as e:
            main(["report", str(target)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no sweep results" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]     # nothing written


NASTY = "imagefolder:/data/<b>x</b>|y`z`&amp;"


def test_summary_md_escapes_user_strings(tmp_path):
    from markdown_it import MarkdownIt

    rows = [row("bct", 0.92, 0.01, lambda_c=1.0), row("ce", 0.90, 0.02, trial=1)]
    for r in rows:                      # the sweep names a study with ':' and '/' replaced, the rest kept
        r.update(dataset=NASTY, study=NASTY.replace(":", "_").replace("/", "_") + "__exclusive-op__small")
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    md = rep_text(rep, tmp_path)["md"]
    prose = re.sub(r"```.*?```", "", md, flags=re.S)               # a fenced command shows it literally: fine
    assert "<b>" not in prose and "&amp;amp;" in prose and "\\|" in prose and "\\`z\\`" in prose
    assert "<b>" in md.split("```sh")[1]                            # ... and the command is the real one
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<b>x</b>" not in html                                    # no tag of ours leaked through
    assert "&lt;b&gt;x&lt;/b&gt;|y`z`&amp;amp;" in html              # the text reads as written
    for table in re.findall(r"<table>.*?</table>", html, re.S):     # no | split a cell: rows as wide as the header
        widths = {len(re.findall(r"<t[hd][ >]", tr)) for tr in re.findall(r"<tr>.*?</tr>", table, re.S)}
        assert len(widths) == 1, widths
    assert md_code("a`b|c", in_table=True) == "``a`b\\|c``" and md_text("*x* <y>") == "\\*x\\* &lt;y&gt;"
    assert md_text("lambda_c=1 _x_") == "lambda_c=1 \\_x\\_"
    # index.html escapes them too
    page = rep_text(rep, tmp_path)["html"]
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_index_html_is_offline_interactive_and_shows_coincident_points(tmp_path):
    from flipsearch.report.interactive import plotly_js

    rows = [row("bct", 0.92, 0.010, trial=0, lambda_c=1.0, val=(0.92, 0.01)),
            row("bct", 0.92, 0.010, trial=1, lambda_c=1.5, val=(0.92, 0.01)),      # the same point twice
            row("ce", 0.92, 0.010, trial=2, val=(0.92, 0.01)),                     # ... and by another method
            row("bct", 0.95, 0.030, trial=3, lambda_c=0.2),
            row("bct", 0.96, 0.010, trial=0, arrangement="class-incremental", lambda_c=1.0),
            row("bct", 0.97, 0.020, trial=1, arrangement="class-incremental", lambda_c=0.5)]
    for r in rows[4:]:                                                  # M1 knows half the classes: 49 %
        r.update(accuracy_old=0.49, val_accuracy_old=0.49)
    rep = build_report(sweep_dir(tmp_path, rows), flips=False)
    html = rep_text(rep, tmp_path)["html"]
    assert html.count(plotly_js()) == 1 and len(plotly_js()) > 1_000_000   # inlined once
    ours = html.replace(plotly_js(), "")
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"(src|href)=\"https?:", ours)
    figs = plotly_calls(html)
    assert set(figs) == {"plotly-front-digits__exclusive-op__small", "plotly-front-digits__class-incremental__small"}
    op = figs["plotly-front-digits__exclusive-op__small"][0]
    bct = [t for t in op if t.get("name") == "bct"]
    assert "×2" in bct[0]["text"]                                     # two bct trials on one point, one marker
    joined = " ".join(h for t in bct for h in t["hovertext"])
    assert "trial #0" in joined and "trial #1" in joined and "lambda_c=1.5" in joined
    assert "validation: acc M2" in joined and "test: acc M2" in joined and "(460 / 500)" in joined
    ce = next(t for t in op if t.get("name") == "ce")
    i = bct[0]["text"].index("×2")
    assert (ce["x"][0], ce["y"][0]) != (bct[0]["x"][i], bct[0]["y"][i])   # set apart from the bct marker
    names = [t.get("name") for t in op]
    assert names.index("ce baseline") < names.index("bct")              # the baseline is drawn under the trials
    layout = figs["plotly-front-digits__class-incremental__small"][1]
    assert layout["xaxis"]["range"][0] > 0.9                            # zoomed on the trials, not on M1's 49 %
    assert any("off this axis" in a.get("text", "") for a in layout["annotations"])


def plotly_calls(html: str) -> dict:
    """{div id: (data, layout)} of every Plotly.newPlot call of the page's front plots."""
    dec = json.JSONDecoder()
    out = {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"(plotly-front-[^"]+)",\s*', html):
        data, end = dec.raw_decode(html, m.end())
        rest = html[end:].lstrip()
        assert rest.startswith(",")
        start = end + (len(html[end:]) - len(rest)) + 1
        while html[start].isspace():
            start += 1
        layout, _ = dec.raw_decode(html, start)
        out[m.group(1)] = (data, layout)
    return out


def test_presets_validate_and_scale_down():
    paper = load_space(SPACES + "/paper1.yaml")
    assert set(paper.methods) == {"ce", "bct", "neurecover"} and paper.sampler == "grid"
    assert {(s.dataset, s.arrangement, s.model) for s in paper.scenarios} == {
        (d, a, "cnn8") for d in ("cifar10", "fashion-mnist")
        for a in ("exclusive-op", "exclusive-dev", "inclusive-1-5", "inclusive-4-5")}
    upd = paper.templates["fashion-mnist__exclusive-op__cnn8"].update_recipe
    assert (upd.epochs, upd.batch_size) == (5, 128)
    mpt = load_space(SPACES + "/mpt-cifar100.yaml")
    assert [(s.dataset, s.arrangement, s.model) for s in mpt.scenarios] == [("cifar100", "class-incremental", "resnet18")]
    assert mpt.methods["mpt"]["k"].grid_values() == [0, 1, 2, 4]
    assert sorted(mpt.methods["mpt"]["distance"].grid_values()) == ["kl", "lm"]
    m1, upd = next(iter(mpt.templates.values())).recipes()
    assert m1 == upd and (upd.epochs, upd.lr, upd.momentum, upd.weight_decay, upd.schedule,
                          upd.augment, upd.batch_size) == (100, 0.1, 0.9, 5e-4, "cosine", True, 128)
    small = load_space(SPACES + "/mpt-cifar100.yaml", {"scenario": {"scale": 0.05, "training": {"epochs": 2}}})
    tmpl = next(iter(small.templates.values()))
    assert tmpl.scale == 0.05 and tmpl.m1_recipe.epochs == 2


# ------------------------------------------------------------------ one real sweep

SPACE = """
name: t-report
scenario:
  datasets: [digits]
  arrangements: [class-incremental]
  models: [small]
  seeds: [0]
  training: {epochs: 3}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: nsga2, trials_per_scenario: 4, seed: 1, concurrency: 1, scheduler: mo-asha, replicates: 2}
methods:
  ce: {}
  bct:
    lambda_c: {loguniform: [0.1, 2.0]}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_report_of_a_real_sweep_with_replicates(ray_local, tiny_space, tmp_path):
    from flipsearch.search.sweep import SweepOptions, run_sweep

    out = tmp_path / "sweep"
    run_sweep(load_space(tiny_space(SPACE)), SweepOptions(out=str(out), quiet=True))
    rows = read_results(str(out))
    assert rows["replicate_of"].notna().sum() >= 4                  # front point(s) and the baseline, 2 seeds each
    reps = [json.dumps(decode_config(r).to_dict(), sort_keys=True) for _, r in rows[rows["replicate_of"].notna()].iterrows()]
    assert len(set(reps)) == len(reps)                                # no configuration and seed run twice
    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""                          # --format json off a terminal: stdout is the one document
    doc = json.loads(res.stdout)
    scen = doc["scenarios"][0]
    assert doc["objectives"] == ["accuracy_new:max", "nfr:min"] and scen["scenario"] == "digits__class-incremental__small"
    assert scen["front"] and scen["recommendation"]["command"].startswith("flipsearch trial")
    assert scen["baseline"]["available"] and scen["baseline"]["source"] in ("replicates", "search+replicates")
    assert len(scen["baseline"]["seeds"]) >= 2 and scen["noise_floor"]["nfr"]["runs"] >= 2
    assert any(f["seeds"]["n"] == 3 for f in scen["front"])          # the trial and its two replicates
    uids = set(rows.loc[rows["replicate_of"].notna(), "trial_uid"])
    assert not uids & {f["trial_uid"] for f in scen["front"]}       # replicates never on the front
    stopped = set(rows.loc[rows["status"] == "stopped", "trial_uid"])
    assert not stopped & {f["trial_uid"] for f in scen["front"]}
    assert doc["early_stopping"] is not None and doc["early_stopping"]["source"] == "scheduler.json"
    flips = scen["flips"]
    assert flips and not flips.get("error"), flips
    neg_rec = set(flips["recommendation"]["negative_flips"])
    if not flips["same_configuration"]:
        neg_ce = set(flips["baseline"]["negative_flips"])
        assert set(flips["both"]) == neg_rec & neg_ce and set(flips["only_baseline"]) == neg_ce - neg_rec
        assert flips["baseline"]["config"]["method"] == "ce" and flips["baseline"]["seed"] == flips["recommendation"]["seed"]
    rec_nfr = flips["recommendation"]["metrics"]["nfr"]
    assert rec_nfr["count"] == len(neg_rec) and rec_nfr["denominator"] == 539
    # The recommendation's reproduce-command gives its row back: every metric, one trial, run
    # with the thread count a sweep trial had (1 CPU: float sums depend on the thread count).
    rec = scen["recommendation"]
    recorded = rows[rows["trial_uid"] == rec["trial_uid"]].iloc[0]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = runner.invoke(cli, shlex.split(rec["command"])[1:] + ["--json"])
    finally:
        torch.set_num_threads(threads)
    assert again.exit_code == 0, again.output
    metrics = json.loads(again.stdout)["metrics"]
    compared = [m for m in metric_columns() + metric_columns("val_") if pd.notna(recorded.get(m))]
    assert len(compared) >= 20 and {m: metrics[m] for m in compared} == {m: recorded[m] for m in compared}
    rep = out / "report"
    pngs = sorted(p.name for p in rep.glob("*.png"))
    assert pngs == ["front-digits__class-incremental__small.png", "hypervolume.png"]
    for name in ("index.html", "summary.md", "front.parquet", "trials.csv"):
        assert (rep / name).stat().st_size > 0
    html = (rep / "index.html").read_text()
    assert "Flips: the recommendation against plain retraining" in html and 'class="flipsets"' in html
    assert len(pd.read_parquet(rep / "front.parquet")) == len(scen["front"])

    res = runner.invoke(cli, ["report", str(out), "--no-flips", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    assert "Method × arrangement" in res.stdout and "flipsearch trial --dataset digits" in res.stdout
    assert "[flipsearch report] 1/2 scenario digits__class-incremental__small" in res.stderr
    assert "flips digits" not in res.stderr and "skipped (--no-flips)" in res.stdout
