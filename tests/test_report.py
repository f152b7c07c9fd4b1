"""`flipsearch report`: fronts, the paper-1 table, recommendations and commands on hand-made
rows with known answers; the files of a report; the presets; and one real small sweep."""

from __future__ import annotations

import json
import math
import shlex

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from flipsearch.cli import _config, _parse_settings, cli, main
from flipsearch.errors import UsageError
from flipsearch.objectives import parse_constraint, parse_objective
from flipsearch.report.baselines import ce_baseline, noise_floor
from flipsearch.report.build import build_report
from flipsearch.report.configs import aggregate_seeds, hparams_of
from flipsearch.report.pareto import pareto_front
from flipsearch.report.recommend import best_operating_point, recommend, trial_command
from flipsearch.report.tables import paper1_table
from flipsearch.results import ResultsWriter, read_results
from flipsearch.search.space import load_space
from flipsearch.storage import Storage
from flipsearch.config import TrialConfig
from flipsearch.data import dataset_defaults

OBJ = [parse_objective("accuracy_new:max"), parse_objective("nfr:min")]


def row(method="ce", acc=0.9, nfr=0.02, seed=0, status="ok", trial=0, arrangement="exclusive-op", **hp):
    """One result row as a sweep writes it (digits recipe, accuracy_old 0.8)."""
    recipe = dataset_defaults("digits").recipe.as_dict()
    r = {"study": f"digits__{arrangement}__small", "trial_number": trial, "dataset": "digits",
         "arrangement": arrangement, "model": "small", "method": method, "seed": seed, "old_fraction": 0.5,
         "critical_classes": "", "status": status, "error": "" if status == "ok" else "boom",
         "hp_init": "old"}
    r.update({f"hp_{k}": v for k, v in hp.items()})
    r.update({f"m1_{k}": v for k, v in recipe.items()})
    r.update({f"update_{k}": v for k, v in recipe.items()})
    if status == "ok":
        r.update(accuracy_old=0.8, accuracy_new=acc, nfr=nfr, br=nfr / 0.8, bec=0.5,
                 accuracy_ratio=0.8 / acc, accuracy_gain=acc - 0.8)
    return r


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(r, trial_number=i) for i, r in enumerate(rows)])


def sweep_dir(tmp_path, rows, objectives=("accuracy_new:max", "nfr:min"), constraints=(), name="hand"):
    """A sweep output directory holding `rows` (one Parquet part each) and its sweep.json."""
    out = Storage.open(str(tmp_path / name))
    writer = ResultsWriter(out)
    for i, r in enumerate(rows):
        writer.append(dict(r, trial_number=r.get("trial_number", i)))
    out.write_bytes(json.dumps({"name": name, "objectives": list(objectives), "constraints": list(constraints),
                                "scenarios": sorted({r["study"] for r in rows}), "seeds": [0],
                                "methods": {"ce": {}, "bct": {"lambda_c": ["loguniform", [0.1, 4.0]]}},
                                "scenario_options": {}}).encode(), "sweep.json")
    return str(tmp_path / name)


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


def test_mean_and_std_over_seeds_decide_the_operating_point():
    df = frame(
        # lambda_c=1: one lucky seed (0.97) but a mean of 0.89
        row("bct", 0.97, 0.01, seed=0, lambda_c=1.0), row("bct", 0.85, 0.02, seed=1, lambda_c=1.0),
        row("bct", 0.85, 0.03, seed=2, lambda_c=1.0),
        row("bct", 0.90, 0.05, seed=0, lambda_c=2.0),              # one seed, mean 0.90
        row("ce", 0.88, 0.04, seed=0), row("ce", 0.86, 0.06, seed=1),
    )
    configs = aggregate_seeds(df)
    assert len(configs) == 3
    many = configs[configs["hp_lambda_c"] == 1.0].iloc[0]
    assert many["n_runs"] == 3 and many["seeds"] == "0,1,2" and many["seed"] == 0
    assert many["accuracy_new"] == pytest.approx(0.89) and many["nfr"] == pytest.approx(0.02)
    assert many["nfr_std"] == pytest.approx(0.01)                  # sample std (ddof 1) of .01 .02 .03
    assert math.isnan(configs[configs["hp_lambda_c"] == 2.0].iloc[0]["nfr_std"])

    table = paper1_table(df, OBJ, [])
    bct = table[table["method"] == "bct"].iloc[0]
    assert bct["n_runs"] == 1 and bct["accuracy_new"] == pytest.approx(0.90)   # means, not the lucky seed
    ce = table[table["method"] == "ce"].iloc[0]
    assert ce["nfr"] == pytest.approx(0.05) and ce["nfr_std"] == pytest.approx(np.std([0.04, 0.06], ddof=1))
    assert ce["accuracy_ratio"] == pytest.approx((0.8 / 0.88 + 0.8 / 0.86) / 2)
    # Under nfr<=0.03 only the three-seed configuration of bct is feasible.
    searched = {"bct": {"lambda_c": ["choice", [1.0, 2.0]]}}           # sweep.json's methods block
    bct = paper1_table(df, OBJ, [parse_constraint("nfr<=0.03")], searched).set_index("method").loc["bct"]
    assert bct["feasible"] and bct["hparams"] == {"lambda_c": 1.0} and bct["n_runs"] == 3

    band = noise_floor(df, ce_baseline(configs), "nfr")
    assert (band.low, band.high, band.n) == (0.04, 0.06, 2) and band.mean == pytest.approx(0.05)


# ----------------------------------------------------------------------- the command


def _rebuild(command: str) -> tuple[dict, TrialConfig]:
    """Parse `command` with the real `trial` command and rebuild its TrialConfig."""
    argv = shlex.split(command)
    assert argv[:2] == ["flipsearch", "trial"]
    p = dict(cli.commands["trial"].make_context("trial", argv[2:]).params)
    settings = p.pop("settings")
    p.pop("save_model"), p.pop("as_json")
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


def test_hparams_of_types_values_by_schema():
    r = pd.Series(row("neurecover", particles=21.0, iterations=16.0, reduction_rate=0.1, hp_init=float("nan")))
    r["hp_init"] = float("nan")
    hp = hparams_of(r)
    assert hp["particles"] == 21 and isinstance(hp["particles"], int) and "init" not in hp


# ------------------------------------------------------------------ the report files


def test_report_files_on_hand_made_sweep(tmp_path):
    rows = [row("ce", 0.90, 0.020, seed=0), row("ce", 0.91, 0.024, seed=1),
            row("bct", 0.92, 0.010, lambda_c=1.0), row("bct", 0.95, 0.030, lambda_c=0.2),
            row("bct", 0.80, 0.200, lambda_c=3.0), row("bct", status="diverged", lambda_c=4.0),
            row("bct", 0.93, 0.012, arrangement="exclusive-dev", lambda_c=1.0),
            row("ce", 0.94, 0.030, arrangement="exclusive-dev")]
    out = sweep_dir(tmp_path, [dict(r, trial_number=i) for i, r in enumerate(rows)])
    rep = build_report(out, constraints=["nfr<=0.015"])
    op = next(s for s in rep.scenarios if s.arrangement == "exclusive-op")
    assert list(op.front["hp_lambda_c"]) == [1.0]                 # the constrained front
    assert op.recommendation.feasible and op.recommendation.point["hp_lambda_c"] == 1.0
    assert op.noise["nfr"].n == 2 and op.m1 == {"accuracy_new": 0.8}
    assert op.counts == {"ok": 5, "diverged": 1} and len(op.hypervolume) == 6
    assert all(b >= a for a, b in zip(op.hypervolume, op.hypervolume[1:]))
    written = rep.write(str(tmp_path / "rep"))
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert names == {"index.html", "summary.md", "front.parquet", "hypervolume.png",
                     "front-digits__exclusive-op__small.png", "front-digits__exclusive-dev__small.png"}
    front = pd.read_parquet(tmp_path / "rep" / "front.parquet")
    assert sorted(front["scenario"]) == ["digits__exclusive-dev__small", "digits__exclusive-op__small"]
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "![" in md and "front-digits__exclusive-op__small.png" in md and "--set lambda_c=1.0" in md
    # Without the constraint the front has the trade-off: (0.95, 0.03), (0.92, 0.01) — ce 0.91/0.024 is dominated.
    rep = build_report(out)
    op = next(s for s in rep.scenarios if s.arrangement == "exclusive-op")
    assert list(op.front["hp_lambda_c"]) == [0.2, 1.0]


def test_three_objectives_and_bad_objectives(tmp_path):
    rows = [row("bct", 0.95, 0.03, lambda_c=0.1), row("bct", 0.90, 0.01, lambda_c=1.0),
            row("ce", 0.90, 0.01), row("ce", 0.85, 0.02, seed=1)]
    rows[2]["bec"] = 0.9                                            # same acc/nfr as row 1, better BEC
    out = sweep_dir(tmp_path, [dict(r, trial_number=i) for i, r in enumerate(rows)])
    objs = ["accuracy_new:max", "nfr:min", "bec:max"]
    rep = build_report(out, objectives=objs)
    front = rep.scenarios[0].front
    assert sorted(front["trial_number"]) == [0, 2]                  # row 1 loses on BEC, row 3 everywhere
    df = read_results(out)
    assert list(front.index) == list(pareto_front(df, objs).index)
    assert rep.scenarios[0].png[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in (["accuracy_new", "nfr", "br", "bec"], ["critical_nfr:min"], ["nfr:min", "nfr:max"], ["nosuch"]):
        with pytest.raises(UsageError):
            build_report(out, objectives=bad)


def test_report_on_empty_or_non_sweep_dir_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a sweep")
    for target in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SystemExit) as e:
            main(["report", str(target)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no sweep results" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]     # nothing written


def test_presets_validate_and_scale_down():
    paper = load_space("search_spaces/paper1.yaml")
    assert set(paper.methods) == {"ce", "bct", "neurecover"} and paper.sampler == "grid"
    assert {(s.dataset, s.arrangement, s.model) for s in paper.scenarios} == {
        (d, a, "cnn8") for d in ("cifar10", "fashion-mnist")
        for a in ("exclusive-op", "exclusive-dev", "inclusive-1-5", "inclusive-4-5")}
    upd = paper.templates["fashion-mnist__exclusive-op__cnn8"].update_recipe
    assert (upd.epochs, upd.batch_size) == (5, 128)
    mpt = load_space("search_spaces/mpt-cifar100.yaml")
    assert [(s.dataset, s.arrangement, s.model) for s in mpt.scenarios] == [("cifar100", "class-incremental", "resnet18")]
    assert mpt.methods["mpt"]["k"].grid_values() == [0, 1, 2, 4]
    assert sorted(mpt.methods["mpt"]["distance"].grid_values()) == ["kl", "lm"]
    m1, upd = next(iter(mpt.templates.values())).recipes()
    assert m1 == upd and (upd.epochs, upd.lr, upd.momentum, upd.weight_decay, upd.schedule,
                          upd.augment, upd.batch_size) == (100, 0.1, 0.9, 5e-4, "cosine", True, 128)
    small = load_space("search_spaces/mpt-cifar100.yaml", {"scenario": {"scale": 0.05, "training": {"epochs": 2}}})
    tmpl = next(iter(small.templates.values()))
    assert tmpl.scale == 0.05 and tmpl.m1_recipe.epochs == 2


# ------------------------------------------------------------------ one real sweep

SPACE = """
name: t-report
scenario:
  datasets: [digits]
  arrangements: [exclusive-op]
  models: [small]
  seeds: [0, 1]
  training: {epochs: 2}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: nsga2, trials_per_scenario: 4, seed: 1, concurrency: 2}
methods:
  ce: {}
  bct:
    lambda_c: {loguniform: [0.1, 2.0]}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_report_of_a_real_sweep(ray_local, tiny_space, tmp_path):
    from flipsearch.search.sweep import SweepOptions, run_sweep

    out = tmp_path / "sweep"
    run_sweep(load_space(tiny_space(SPACE)), SweepOptions(out=str(out), quiet=True))
    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(out), "--constraint", "accuracy_new>=0.5"])
    assert res.exit_code == 0, res.output
    assert "Method × arrangement" in res.output and "flipsearch trial --dataset digits" in res.output
    rep = out / "report"
    pngs = sorted(p.name for p in rep.glob("*.png"))
    assert pngs == ["front-digits__exclusive-op__small.png", "hypervolume.png"]
    for name in ("index.html", "summary.md", "front.parquet"):
        assert (rep / name).stat().st_size > 0
    html = (rep / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert all(f'data-file="{p}"' in html for p in pngs) and "<table>" in html
    assert len(pd.read_parquet(rep / "front.parquet")) >= 1

    res = runner.invoke(cli, ["report", str(out), "--format", "json", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    scen = doc["scenarios"][0]
    assert doc["objectives"] == ["accuracy_new:max", "nfr:min"] and scen["scenario"] == "digits__exclusive-op__small"
    assert scen["front"] and scen["recommendation"]["command"].startswith("flipsearch trial")
    assert {r["method"] for r in doc["table"]} <= {"ce", "bct"} and (tmp_path / "r2" / "index.html").exists()
