"""Search-space files: includes, merging several files, distributions, define-by-run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from flipsearch.errors import UsageError
from flipsearch.search.space import Dist, load_space


SPACES = Path(__file__).resolve().parent.parent / "search_spaces"  # from any working directory


def test_every_shipped_space_validates():
    paths = sorted(SPACES.glob("*.yaml"))
    names = {p.name for p in paths}
    assert len(paths) >= 5 and {"demo.yaml", "smoke.yaml", "scenario.yaml", "paper1.yaml"} <= names, names
    for path in paths:
        if path.name == "scenario.yaml":
            with pytest.raises(UsageError, match="'methods' must map"):
                load_space(str(path))  # the shared part alone is not a sweep
            continue
        space = load_space(str(path))
        assert space.methods and space.scenarios and space.trials_per_scenario >= 1, path.name


def test_include_and_multi_file_merge(tmp_path):
    (tmp_path / "base.yaml").write_text("scenario: {datasets: [digits], seeds: [0, 1]}\nsearch: {trials_per_scenario: 5}\n")
    (tmp_path / "a.yaml").write_text("include: [base.yaml]\nname: a\nmethods: {ce: {}}\n")
    (tmp_path / "b.yaml").write_text("include: base.yaml\nname: b\nsearch: {trials_per_scenario: 9}\n"
                                     "methods: {fd: {lambda: {loguniform: [0.1, 2]}}}\n")
    a = load_space(str(tmp_path / "a.yaml"))
    assert a.seeds == [0, 1] and a.trials_per_scenario == 5 and list(a.methods) == ["ce"]
    both = load_space([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    assert both.name == "a_b" and list(both.methods) == ["ce", "fd"] and both.trials_per_scenario == 9
    assert both.methods["fd"]["lambda"] == Dist("loguniform", (0.1, 2.0))


def test_include_cycle_is_refused(tmp_path):
    (tmp_path / "x.yaml").write_text("include: [y.yaml]\nmethods: {ce: {}}\n")
    (tmp_path / "y.yaml").write_text("include: [x.yaml]\n")
    with pytest.raises(UsageError, match="include cycle"):
        load_space(str(tmp_path / "x.yaml"))


def test_define_by_run_keeps_method_params_apart(tmp_path):
    (tmp_path / "s.yaml").write_text("""
scenario: {seeds: [0, 1]}
methods:
  fd: {alpha: {uniform: [0, 1]}, distance: kl}
  mpt: {alpha: {uniform: [1, 2]}, k: {choice: [0, 2, 4]}}
""")
    space = load_space(str(tmp_path / "s.yaml"))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        t = study.ask()
        method, hp, seed = space.suggest(t)
        seen.add(method)
        assert seed in (0, 1)
        if method == "fd":
            assert 0 <= hp["alpha"] <= 1 and hp["distance"] == "kl" and set(t.params) == {"method", "fd.alpha", "seed"}
        else:
            assert 1 <= hp["alpha"] <= 2 and hp["k"] in (0, 2, 4)
            assert set(t.params) == {"method", "mpt.alpha", "mpt.k", "seed"}
        study.tell(t, [0.5, 0.1])
    assert seen == {"fd", "mpt"}


def test_int_distribution_must_fit_an_int_hyperparameter(tmp_path):
    (tmp_path / "s.yaml").write_text("methods: {bct: {lambda_c: {int: [0, 3]}}}\n")
    with pytest.raises(UsageError, match="use uniform or loguniform"):
        load_space(str(tmp_path / "s.yaml"))
