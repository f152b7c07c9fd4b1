"""The update recipe in the search: a method block's `update.lr` (and the other recipe
settings) is sampled per trial, lands in the rows and the reproduce command; packs give
their members their own learning rate; `search.budget: per-method` gives each method the
same number of trials."""

from __future__ import annotations

import json
import math
import shlex

import optuna
import pytest
from click.testing import CliRunner

from flipsearch import TrialConfig, read_results, run_trial, sweep
from flipsearch.cli import cli
from flipsearch.errors import UsageError
from flipsearch.pack_trial import pack_key, run_pack
from flipsearch.references import ReferenceStore
from flipsearch.report.recommend import trial_command
from flipsearch.results import metric_columns
from flipsearch.search.space import load_space
from flipsearch.search.sweep import preflight_space

SCENARIO = """
name: t-recipe
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0], training: {epochs: 2}}
objectives: [accuracy_new:max, nfr:min]
"""


def test_a_method_block_searches_its_update_recipe(tiny_space):
    space = load_space(tiny_space(SCENARIO + """
search: {sampler: random, trials_per_scenario: 4, seed: 3}
methods:
  fd: {lambda: 1.0, update.lr: {loguniform: [0.001, 0.1]}, update: {optimizer: {choice: [sgd, adam]}}}
  ce: {update.epochs: 3, update.grad_clip: 1.5}
"""))
    assert set(space.methods["fd"]) == {"lambda", "update.lr", "update.optimizer"}
    key = next(iter(space.templates))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        method, hp, seed = space.suggest(trial)
        cfg = space.config(key, method, hp, seed)
        assert set(cfg.hparams) == {h for h in cfg.hparams if "." not in h}  # recipe keys left the hparams
        if method == "fd":
            assert 0.001 <= cfg.update_recipe.lr <= 0.1 and cfg.update_recipe.optimizer in ("sgd", "adam")
            seen.add(cfg.update_recipe.lr)
        else:  # a fixed per-method recipe: ce trains 3 clipped epochs, M1 keeps the scenario's 2
            assert (cfg.update_recipe.epochs, cfg.update_recipe.grad_clip, cfg.m1_recipe.epochs) == (3, 1.5, 2)
        # the inverse that rebuilds a study from rows gives the sampled parameters back
        params, _ = space.optuna_params(cfg.method, space.point(cfg), cfg.seed)
        assert params == trial.params
    assert len(seen) > 1


@pytest.mark.parametrize("methods, search, message", [
    ("fd: {update.batch_size: 16}", "{}", "not a searchable recipe setting"),
    ("fd: {update.lr: {uniform: [0.0, 0.1]}}", "{}", "lr must be a positive number"),
    ("fd: {update.optimizer: {choice: [sgd, rmsprop]}}", "{}", "not allowed"),
    ("fd: {update: 0.1}", "{}", "must map recipe settings"),
    ("fd: {update.epochs: {int: [2, 6]}}", "{scheduler: mo-asha}", "scheduler decides how long"),
    ("fd: {update.epochs: 4}", "{scheduler: mo-asha}", "scenario.update_training"),
    ("fd: {}", "{budget: equal}", "search.budget='equal'"),
    ("fd: {}", "{budget: per-method, sampler: grid}", "does not apply to the grid sampler"),
])
def test_bad_recipe_settings_are_one_line_errors(tiny_space, methods, search, message):
    with pytest.raises(UsageError, match=message) as e:
        load_space(tiny_space(SCENARIO + f"search: {search}\nmethods:\n  {methods}\n"))
    assert "\n" not in str(e.value)


def test_preflight_refuses_a_recipe_edge_the_method_cannot_run(tiny_space):
    space = load_space(tiny_space(SCENARIO + "methods:\n  neurecover: {update.epochs: {int: [1, 3]}}\n"))
    with pytest.raises(UsageError, match="at least 2 epochs"):
        preflight_space(space, {})


@pytest.mark.slow
def test_pack_members_with_their_own_learning_rate_equal_their_solo_trials():
    base = TrialConfig(dataset="digits", method="fd").with_settings({"epochs": 2, "grad_clip": 2.0})
    cfgs = [base.with_settings({"update.lr": lr, "update.weight_decay": wd}) for lr, wd in ((0.01, 0.0), (0.08, 5e-4))]
    assert len({pack_key(c) for c in cfgs}) == 1
    assert pack_key(cfgs[0]) != pack_key(base.with_settings({"update.epochs": 3}))  # epochs are shared
    store = ReferenceStore()
    packed = run_pack(cfgs, store=store)
    for cfg, member in zip(cfgs, packed):
        alone = run_trial(cfg, store=store)
        assert member.status == alone.status == "ok" and member.config.update_recipe == cfg.update_recipe
        solo, pack = alone.model.state_dict(), member.model.state_dict()
        assert max(float((solo[k] - pack[k]).abs().max()) for k in solo) < 5e-3  # float rounding only
    w0, w1 = (m.model.state_dict() for m in packed)
    assert any(not w0[k].equal(w1[k]) for k in w0)  # the two learning rates trained two models


SWEEP = SCENARIO + """
search: {sampler: random, trials_per_scenario: 6, seed: 5, concurrency: 1, budget: per-method, replicates: 1}
methods:
  ce: {update.lr: {loguniform: [0.002, 0.2]}}
  fd: {lambda: {loguniform: [0.5, 2.0]}, update.lr: {loguniform: [0.002, 0.2]}}
  interp: {alpha: {uniform: [0.0, 1.0]}}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_lands_the_sampled_lr_and_its_command_reproduces_the_row(ray_local, tiny_space, tmp_path):
    out = tmp_path / "lr"
    sweep(tiny_space(SWEEP), out=str(out), quiet=True)
    everything = read_results(str(out))
    rows = everything[everything["replicate_of"].isna()]
    assert rows["method"].value_counts().to_dict() == {"ce": 2, "fd": 2, "interp": 2}  # per-method budget
    searched = rows[rows["method"] != "interp"]
    assert searched["update_lr"].between(0.002, 0.2).all() and searched["update_lr"].nunique() == 4
    assert (rows.loc[rows["method"] == "interp", "update_lr"] == 0.05).all()  # the scenario's recipe
    assert (rows["m1_lr"] == 0.05).all()  # M1 is trained by the scenario's recipe, whatever the update's
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["budget"] == "per-method" and meta["methods"]["fd"]["update.lr"][0] == "loguniform"

    row = searched[searched["status"] == "ok"].iloc[0]
    command, _ = trial_command(row)
    assert f"update.lr={float(row['update_lr'])!r}" in command
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a sweep trial's thread count: float sums depend on it
    try:
        again = CliRunner().invoke(cli, shlex.split(command)[1:] + ["--json"])
    finally:
        torch.set_num_threads(threads)
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout)
    assert result["config"]["update_recipe"]["lr"] == row["update_lr"]
    compared = [m for m in metric_columns() + metric_columns("val_") if not _missing(row.get(m))]
    assert len(compared) >= 20 and {m: result["metrics"][m] for m in compared} == {m: row[m] for m in compared}

    # the report says which budget ran and shows each method's trials and sampled lr
    from flipsearch.report.build import build_report
    from flipsearch.report.render import render_markdown

    report = build_report(str(out), flips=False)
    text = render_markdown(report)
    assert "Budget and instability per method" in text and "Budget mode per-method" in text
    lrs = {format(float(v), ".4g") for v in searched.loc[searched["status"] == "ok", "update_lr"]}
    assert any(f"update.lr={lr}" in text for lr in lrs)  # a chosen point's settings show its sampled lr

    # The ce baseline is ce on the scenario's recipe (lr 0.05), never a ce search trial at a sampled
    # lr: the sweep ran it at the search seed (0) as well as at the replicate seed (1), and the
    # report's baseline is made of exactly those two runs.
    base = everything[everything["replicate_of"] == "baseline:digits__exclusive-op__small"]
    assert sorted(base["seed"]) == [0, 1] and (base["update_lr"] == 0.05).all() and (base["status"] == "ok").all()
    scenario = report.scenarios[0]
    assert scenario.baseline is not None and sorted(scenario.baseline.runs["seed"]) == [0, 1]
    assert (scenario.baseline.runs["update_lr"] == 0.05).all()


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
