"""A real multi-objective sweep on the session's local Ray: rows, studies, shared reference
models, resume without duplicates, and the guards around an output directory."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from flipsearch.errors import UsageError
from flipsearch.results import read_results
from flipsearch.search.space import load_space
from flipsearch import sweep
from flipsearch.search.sweep import SweepOptions, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPACE = """
name: t-sweep
scenario:
  datasets: [digits]
  arrangements: [exclusive-op, class-incremental]
  models: [small]
  training: {epochs: 2}
objectives: [accuracy_new:max, nfr:min]
constraints: ["accuracy_new >= 0.3"]
search: {sampler: nsga2, trials_per_scenario: 4, seed: 3, concurrency: 2}
methods:
  ce: {init: {choice: [old, scratch]}}
  bct:
    lambda_c: {loguniform: [0.05, 2.0]}
    variant: {choice: [new-error, strict-imitation]}
"""


def _studies(out):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def test_sweep_rows_studies_references_and_resume(ray_local, tiny_space, tmp_path):
    path = tiny_space(SPACE)
    out = tmp_path / "out"
    summary = run_sweep(load_space(path), SweepOptions(out=str(out), quiet=True))
    assert summary.trials_run == 8 and not summary.interrupted

    rows = read_results(str(out))
    assert len(rows) == 8
    assert not rows.duplicated(["study", "trial_number"]).any()
    assert set(rows["status"]) == {"ok"}
    assert set(rows["method"]) <= {"ce", "bct"} and set(rows["arrangement"]) == {"exclusive-op", "class-incremental"}
    bct = rows[rows["method"] == "bct"]
    assert bct["hp_lambda_c"].between(0.05, 2.0).all() and rows["hp_init"].notna().all()
    assert rows["accuracy_new"].between(0, 1).all() and rows["nfr"].between(0, 1).all()
    assert rows.loc[rows["arrangement"] == "class-incremental", "nfr_old_classes"].notna().all()
    # M1 is trained once per scenario and every other trial loads it.
    assert (rows["ref_m1"] == "miss").sum() == 2 and summary.references_trained == 2
    assert summary.reference_hits == 6

    studies = _studies(out)
    assert set(studies) == {"digits__exclusive-op__small", "digits__class-incremental__small"}
    for study in studies.values():
        assert len(study.directions) == 2
        assert all(t.state == TrialState.COMPLETE for t in study.trials)  # none left RUNNING
        assert study.best_trials  # the Pareto front is non-empty
        assert all(set(t.constraints) == {"accuracy_new>=0.3"} for t in study.trials)
    record = json.loads((out / "sweep.json").read_text())
    assert record["objectives"] == ["accuracy_new:max", "nfr:min"]
    assert not (out / "sweep.lock").exists()

    # Rerunning into the same directory without --resume is refused, nothing changes.
    with pytest.raises(UsageError, match="--resume"):
        run_sweep(load_space(path), SweepOptions(out=str(out), quiet=True))

    # A resumed sweep with a larger budget appends only the new trials.
    before = rows.set_index(["study", "trial_number"])["finished_at"]
    summary = sweep(path, out=str(out), resume=True, trials_per_scenario=6, quiet=True)
    assert summary.trials_run == 4
    rows = read_results(str(out))
    assert len(rows) == 12 and not rows.duplicated(["study", "trial_number"]).any()
    after = rows.set_index(["study", "trial_number"])["finished_at"]
    assert (after.loc[before.index] == before).all()  # finished trials were not rerun
    assert (rows["ref_m1"] == "miss").sum() == 2  # the resumed run reused the cached M1s
    # A resume with nothing left to do runs nothing.
    assert sweep(path, out=str(out), resume=True, trials_per_scenario=6, quiet=True).trials_run == 0


def test_grid_sampler_runs_every_point_once(ray_local, tiny_space, tmp_path):
    path = tiny_space("""
scenario: {datasets: [digits], arrangements: [exclusive-dev], training: {epochs: 2}, seeds: [0, 1]}
search: {sampler: grid, concurrency: 1}
methods:
  ce: {}
  fd: {distance: {choice: [lm, kl]}, lambda: 0.5}
""")
    space = load_space(path)
    assert space.trials_per_scenario == 6  # (1 ce + 2 fd) x 2 seeds
    run_sweep(space, SweepOptions(out=str(tmp_path / "g"), quiet=True))
    rows = read_results(str(tmp_path / "g"))
    combos = set(zip(rows["method"], rows["hp_distance"].fillna("-"), rows["seed"]))
    assert combos == {("ce", "-", 0), ("ce", "-", 1), ("fd", "lm", 0), ("fd", "lm", 1), ("fd", "kl", 0), ("fd", "kl", 1)}
    assert (rows.loc[rows["method"] == "fd", "hp_lambda"] == 0.5).all()


REPEATS = """
name: t-repeats
scenario: {datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0], training: {epochs: 2}}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: random, trials_per_scenario: 5, seed: 4, concurrency: 1}
methods:
  ce: {init: {choice: [old, scratch]}}
  bct: {lambda_c: {loguniform: [0.1, 4.0]}}
"""


def test_a_repeated_suggestion_is_told_its_outcome_not_trained_again(ray_local, tiny_space, tmp_path):
    """ce has two configurations: the random sampler suggests them again and again. A repeat
    is told the outcome of the row it repeats, never trained; every row is a new
    configuration, also across --resume."""
    out = tmp_path / "rep"
    summary = sweep(tiny_space(REPEATS), out=str(out), quiet=True)
    rows = read_results(str(out))
    configs = list(zip(rows["method"], rows["hp_init"], rows["hp_lambda_c"].fillna(-1).round(12)))
    assert len(rows) == 5 and len(set(configs)) == 5 and summary.repeats >= 1
    study = _studies(out)["digits__exclusive-op__small"]
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert len(repeats) == summary.repeats
    by_uid = rows.set_index("trial_uid")
    for t in repeats:
        r = by_uid.loc[t.user_attrs["repeat_of"]]
        assert t.state == TrialState.COMPLETE and t.params == {"method": "ce", "ce.init": r["hp_init"]}
        assert t.values == [r["val_accuracy_new"], r["val_nfr"]]          # its validation outcome
    summary = sweep(tiny_space(REPEATS), out=str(out), quiet=True, resume=True, trials_per_scenario=8)
    rows = read_results(str(out))
    configs = list(zip(rows["method"], rows["hp_init"], rows["hp_lambda_c"].fillna(-1).round(12)))
    assert len(rows) == 8 and len(set(configs)) == 8
