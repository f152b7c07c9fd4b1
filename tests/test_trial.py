"""One update trial end to end on the embedded digits: sane accuracy, consistent metrics,
determinism, shared reference models, and the CLI around it."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from flipsearch.cli import cli
from flipsearch.errors import UsageError
from flipsearch.references import ReferenceStore
from flipsearch.storage import Storage
from flipsearch.trial import TrialConfig, run_trial

FAST = {"epochs": 4}


@pytest.fixture(scope="module")
def ce_result():
    return run_trial(TrialConfig(method="ce").with_settings(FAST))


def test_trial_reaches_sane_accuracy_and_consistent_metrics(ce_result):
    m = ce_result.metrics
    assert ce_result.status == "ok"
    assert m["accuracy_old"] > 0.6 and m["accuracy_new"] > 0.8  # chance is 0.1
    assert m["nfr"] == pytest.approx(m["accuracy_old"] * (1 - m["btc"]))
    assert m["br"] == pytest.approx(1 - m["btc"])
    assert m["accuracy_gain"] == pytest.approx(m["pfr"] - m["nfr"])
    assert m["nfr"] == pytest.approx(m["n_negative_flips"] / m["n"])
    assert m["n"] == 539  # the fixed digits test set
    assert ce_result.scenario["arrangement"] == "exclusive-op"
    assert set(ce_result.timings) >= {"m1", "update", "eval", "total"}


def test_trial_is_deterministic_for_a_seed(ce_result):
    again = run_trial(TrialConfig(method="ce").with_settings(FAST))
    assert again.metrics == ce_result.metrics
    other = run_trial(TrialConfig(method="ce", seed=1).with_settings(FAST))
    assert other.metrics != ce_result.metrics


def test_reference_model_is_trained_once_and_shared(tmp_path):
    store = ReferenceStore(Storage.open(tmp_path))
    first = run_trial(TrialConfig(method="ce").with_settings(FAST), store=store)
    second = run_trial(TrialConfig(method="bct").with_settings({**FAST, "lambda_c": 0.5}),
                       store=ReferenceStore(Storage.open(tmp_path)))  # a new process would see the file
    assert first.references["m1"] == "miss" and second.references["m1"] == "hit"
    assert first.metrics["accuracy_old"] == second.metrics["accuracy_old"]
    assert store.trained == 1


def test_corrupt_reference_file_is_retrained_not_loaded(tmp_path):
    storage = Storage.open(tmp_path)
    run_trial(TrialConfig(method="ce").with_settings(FAST), store=ReferenceStore(storage))
    (pt,) = [p for p in tmp_path.iterdir() if p.suffix == ".pt"]
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])  # truncated
    store = ReferenceStore(storage)
    result = run_trial(TrialConfig(method="ce").with_settings(FAST), store=store)
    assert store.corrupt == 1 and store.trained == 1
    assert result.references["m1"] == "miss"


def test_class_incremental_reports_old_class_metrics():
    r = run_trial(TrialConfig(method="ce", arrangement="class-incremental").with_settings(FAST))
    m = r.metrics
    assert r.scenario["num_old_classes"] == 5 and r.scenario["num_classes"] == 10
    assert m["accuracy_old"] <= 0.55  # M1 cannot be right on the 5 classes it never saw
    assert m["accuracy_old_old_classes"] > 0.8
    assert not math.isnan(m["nfr_old_classes"])


def test_critical_classes_add_critical_metrics():
    r = run_trial(TrialConfig(method="ce", critical_classes=(3, 5)).with_settings(FAST))
    assert r.metrics["critical_n"] == pytest.approx(109, abs=2)  # ~54 test images per class
    assert "critical_nfr" in r.metrics


@pytest.mark.parametrize("settings, fragment", [
    ({"no_such_knob": 1}, "no hyperparameter 'no_such_knob'"),
    ({"lambda_c": 1}, "no hyperparameter 'lambda_c'"),  # ce has none
    ({"epochs": -1}, "epochs must be >= 1"),
    ({"m1.bogus": 1}, "unknown training setting 'm1.bogus'"),
    ({"init": "sideways"}, "init='sideways' is not allowed"),
])
def test_bad_settings_are_one_line_usage_errors(settings, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        TrialConfig(method="ce").with_settings(settings)


def test_cli_trial_json_lists_and_splits():
    runner = CliRunner()
    res = runner.invoke(cli, ["trial", "--method", "ce", "--set", "epochs=3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["status"] == "ok" and data["config"]["method"] == "ce"
    assert data["config"]["update_recipe"]["epochs"] == 3
    assert 0 <= data["metrics"]["nfr"] <= 1 and "total" in data["timings"]

    res = runner.invoke(cli, ["list", "--json"])
    listing = json.loads(res.output)
    assert set(listing["methods"]) == {"ce", "bct", "fd", "mpt", "neurecover", "interp"}
    assert any(h["name"] == "lambda_c" for h in listing["methods"]["bct"]["hyperparameters"])
    assert "exclusive-op" in listing["arrangements"] and "nfr" in listing["metrics"]

    res = runner.invoke(cli, ["split", "--arrangement", "inclusive-1-5", "--json"])
    info = json.loads(res.output)
    # 126 samples (10 % of D_update) are the validation split, set aside before the arrangement
    assert info["sizes"]["update"] == 1132 and info["sizes"]["val"] == 126
    assert info["sizes"]["train_and_update"] == info["sizes"]["train"]
