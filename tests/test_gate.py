"""`flipsearch gate`: the exact statistics against SciPy's own exact functions, rules on
hand-made predictions, a real gate on models trained by `flipsearch trial --save-model`,
a kept trial of a sweep directory, and every bad input as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

from flipsearch.audit import flip_audit
from flipsearch.errors import UsageError
from flipsearch.gate import GateRules, evaluate
from flipsearch.gate import stats

CONF = (0.9, 0.95, 0.99)


# --------------------------------------------------------------------------- statistics

@pytest.mark.parametrize("k,n", [(0, 10), (3, 50), (49, 50), (50, 50), (7, 1000), (0, 1), (120, 539)])
def test_upper_bound_is_scipys_exact_one_sided_interval(k, n):
    for conf in CONF:
        ci = sps.binomtest(k, n, alternative="less").proportion_ci(confidence_level=conf, method="exact")
        assert stats.upper_bound(k, n, conf) == pytest.approx(ci.high, abs=1e-12)
        lo = sps.binomtest(k, n, alternative="greater").proportion_ci(confidence_level=conf, method="exact")
        assert stats.lower_bound(k, n, conf) == pytest.approx(lo.low, abs=1e-12)
        if k < n:
            assert stats.upper_bound(k, n, conf) == sps.beta.ppf(conf, k + 1, n - k)


def test_rate_rule_passes_exactly_when_the_exact_binomial_test_rejects():
    # U <= t  <=>  P(Bin(n, t) <= k) <= alpha: the bound and the test are one decision.
    checked = 0
    for n in (20, 97, 539):
        for k in range(0, n // 4, max(1, n // 40)):
            for t in (0.01, 0.05, 0.1, 0.2):
                for conf in CONF:
                    r = stats.rate_test(k, n, t, conf)
                    p = sps.binomtest(k, n, t, alternative="less").pvalue
                    assert r.p_value == pytest.approx(p, rel=1e-9, abs=1e-300)
                    if abs(p - (1 - conf)) > 1e-9:
                        assert r.passed == (p <= 1 - conf) == (r.bound <= t)
                        checked += 1
    assert checked == 336  # every (k, n, t, confidence) of the grid away from the p = alpha edge


def test_threshold_zero_is_a_hard_rule():
    assert stats.rate_test(0, 30, 0.0, 0.95).passed and not stats.rate_test(1, 3000, 0.0, 0.95).passed
    assert not stats.rate_test(0, 0, 0.1, 0.95).passed  # no samples: nothing is shown


@pytest.mark.parametrize("b,c,verdict", [(2, 20, "significant improvement"), (20, 2, "significant regression"),
                                         (6, 4, "worse but within noise"), (4, 6, "no significant change"),
                                         (0, 0, "no significant change"), (0, 5, "significant improvement")])
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(b, c, verdict):
    t = stats.mcnemar(b, c, 500, 0.95)
    assert t.verdict == verdict and t.gain == (c - b) / 500
    if b + c:
        assert t.p_regression == pytest.approx(sps.binomtest(c, b + c, 0.5, alternative="less").pvalue)
        assert t.p_improvement == pytest.approx(sps.binomtest(c, b + c, 0.5, alternative="greater").pvalue)
        assert t.p_two_sided == pytest.approx(sps.binomtest(c, b + c, 0.5).pvalue)


def test_min_gain_rule_is_an_exact_test_and_its_bound_agrees():
    checked = 0
    for b in range(0, 30, 3):
        for c in range(0, 30, 4):
            t = stats.mcnemar(b, c, 400, 0.95)
            for g in (-0.05, -0.01, 0.0, 0.01, 0.03):
                p = t.gain_p_value(g)
                m = b + c
                pi = (1 + g * 400 / m) / 2 if m else None
                if m and 0 < pi < 1:
                    assert p == pytest.approx(sps.binomtest(c, m, pi, alternative="less").pvalue)
                if g == 0 and m:
                    assert p == pytest.approx(t.p_regression)   # g = 0: no significant regression
                if abs(t.gain_upper_bound() - g) > 1e-9 and abs(p - 0.05) > 1e-9 and m:
                    assert (p <= 0.05) == (g > t.gain_upper_bound())
                    checked += 1
    assert checked > 300


def test_holm_step_down_by_hand():
    h = stats.holm([0.01, 0.04, 0.03, 0.2], 0.05)
    # sorted 0.01 (<= 0.05/4: rejected), 0.03 (> 0.05/3: stop); adjusted max-accumulated k·p
    assert h.rejected.tolist() == [True, False, False, False]
    assert h.adjusted == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert h.levels == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 / 3, 0.05])
    assert stats.holm([0.001, 0.002, 0.003], 0.05).rejected.all()


# ------------------------------------------------------------------ rules on predictions

class Fixed(nn.Module):
    """A 'model' that predicts a fixed class per sample (x holds the sample index)."""

    def __init__(self, preds, num_classes):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.as_tensor(preds), num_classes).float() * 9)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def hand_made_audit(critical=None):
    """300 samples, 3 classes of 100. M1 right on 90 per class; M2 breaks 2, 6, 12 of them
    (classes 0, 1, 2) and fixes 5 of each class's 10 M1 errors."""
    y = np.repeat([0, 1, 2], 100)
    old, new = y.copy(), y.copy()
    for c, broken in ((0, 2), (1, 6), (2, 12)):
        idx = np.flatnonzero(y == c)
        old[idx[:10]] = (c + 1) % 3                          # M1 wrong on 10
        new[idx[:5]] = (c + 1) % 3                           # M2 still wrong on 5 of them, fixes 5
        new[idx[10:10 + broken]] = (c + 2) % 3               # negative flips
    x = torch.arange(300, dtype=torch.float32)[:, None]
    mask = None if critical is None else np.isin(y, critical)
    return flip_audit(Fixed(old, 3), Fixed(new, 3), x, torch.as_tensor(y), class_names=["a", "b", "c"],
                      critical_mask=mask)


def test_rules_on_hand_made_predictions():
    audit = hand_made_audit(critical=[0])
    v = evaluate(audit, GateRules(max_nfr=0.1, max_br=0.05, min_accuracy_gain=0.0, critical_classes=(0,),
                                  max_critical_nfr=0.08, per_class_max_br=0.15, max_rates=(("er_new", 0.2),)))
    by = {r.rule: r for r in v.rules}
    nfr = by["nfr <= 0.1"]
    assert (nfr.count, nfr.denominator) == (20, 300)
    assert nfr.bound == pytest.approx(sps.beta.ppf(0.95, 21, 280)) and nfr.passed
    br = by["br <= 0.05"]
    assert (br.count, br.denominator) == (20, 270) and br.bound > 0.05 and not br.passed
    crit = by["critical_nfr <= 0.08"]
    assert (crit.count, crit.denominator) == (2, 100) and crit.passed
    acc = by["accuracy gain >= 0"]
    assert acc.detail["positive_flips"] == 15 and acc.detail["negative_flips"] == 20
    assert acc.passed and acc.detail["verdict"] == "worse but within noise"
    er = by["er_new <= 0.2"]
    assert (er.count, er.denominator) == (35, 300) and er.passed
    pc = by["per-class br <= 0.15"]
    classes = {c["class"]: c for c in pc.detail["classes"]}
    p = [sps.binomtest(k, 90, 0.15, alternative="less").pvalue for k in (2, 6, 12)]
    h = stats.holm(p, 0.05)
    assert [classes[c]["passed"] for c in range(3)] == h.rejected.tolist() == [True, True, False]
    assert classes[2]["bound"] == pytest.approx(sps.beta.ppf(0.95, 13, 78))      # the last step: level alpha
    assert classes[0]["bound"] == pytest.approx(sps.beta.ppf(1 - 0.05 / 3, 3, 88))
    assert not pc.passed and not v.passed
    doc = v.to_json()
    json.dumps(doc, allow_nan=False)
    assert doc["failed"] == ["br <= 0.05", "per-class br <= 0.15"]
    assert doc["accuracy_change"]["verdict"] == "worse but within noise"
    assert "FAIL  br <= 0.05" in v.summary() and "verdict: FAIL" in v.summary()


def test_rule_checks_before_any_work():
    for rules, text in ((GateRules(), "at least one rule"), (GateRules(max_nfr=1.5), "[0, 1]"),
                        (GateRules(max_rates=(("accuracy", 0.1),)), "no gate rule on metric 'accuracy'"),
                        (GateRules(max_critical_nfr=0.0), "--critical-classes"),
                        (GateRules(max_nfr=0.1, confidence=1.0), "--confidence"),
                        (GateRules(min_accuracy_gain=2.0), "[-1, 1]")):
        with pytest.raises(UsageError, match=None) as e:
            rules.check()
        assert text in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------- the CLI on real models

def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "flipsearch.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """M1 and M2 trained on digits by `flipsearch trial --save-model` (2 epochs)."""
    d = tmp_path_factory.mktemp("gate-models")
    out = cli("trial", "--set", "epochs=2", "--threads", "1", "--save-model", str(d / "m2.pt"), "--json")
    assert out.returncode == 0, out.stderr
    return d, json.loads(out.stdout)


def test_real_gate_on_digits_models(trained):
    d, result = trained
    old, new = str(d / "m2.m1.pt"), str(d / "m2.pt")
    ok = cli("gate", "--old", old, "--new", new, "--dataset", "digits", "--max-nfr", "0.5",
             "--min-accuracy-gain", "-1", "--critical-classes", "0,6", "--max-critical-nfr", "0.5", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    nfr = next(r for r in doc["rules"] if r["rule"] == "nfr <= 0.5")
    # the gate counts what the trial measured on the same test set
    assert nfr["count"] == result["metrics"]["n_negative_flips"] and nfr["denominator"] == result["metrics"]["n"]
    assert nfr["bound"] == pytest.approx(stats.upper_bound(nfr["count"], nfr["denominator"], 0.95))
    assert doc["passed"] and doc["accuracy_change"]["verdict"] in stats.VERDICTS
    bad = cli("gate", "--old", old, "--new", new, "--dataset", "digits", "--min-accuracy-gain", "1")
    assert bad.returncode == 1 and "FAIL  accuracy gain >= 1" in bad.stdout and "verdict: FAIL" in bad.stdout


def _one_line_exit_2(capsys, *argv):
    """Run `flipsearch ARGV` in this process: exit 2 with one error line; returns the line."""
    from flipsearch.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, (e.value.code, err)
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys):
    d, _ = trained
    old, new = str(d / "m2.m1.pt"), str(d / "m2.pt")
    base = ["gate", "--old", old, "--new", new, "--dataset", "digits"]
    assert "no gate rule on metric 'accuracy'" in _one_line_exit_2(capsys, *base, "--max", "accuracy=0.1")
    assert "[0, 1]" in _one_line_exit_2(capsys, *base, "--max-nfr", "1.5")
    assert "[0, 1]" in _one_line_exit_2(capsys, *base, "--per-class-max-br", "-0.1")
    assert "at least one rule" in _one_line_exit_2(capsys, *base)
    assert "does not exist" in _one_line_exit_2(capsys, "gate", "--old", str(tmp_path / "nope.pt"), "--new", new,
                                                "--dataset", "digits", "--max-nfr", "0.1")
    (tmp_path / "notes.txt").write_text("not a model")
    assert "not a torch checkpoint" in _one_line_exit_2(capsys, "gate", "--old", old, "--new",
                                                        str(tmp_path / "notes.txt"), "--dataset", "digits",
                                                        "--max-nfr", "0.1")
    torch.save({"fc.weight": torch.zeros(10, 7)}, tmp_path / "foreign.pt")  # another network
    assert "does not fit model" in _one_line_exit_2(capsys, "gate", "--old", old, "--new",
                                                    str(tmp_path / "foreign.pt"), "--dataset", "digits",
                                                    "--max-nfr", "0.1")
    assert "classes" in _one_line_exit_2(capsys, *base, "--critical-classes", "12", "--max-critical-nfr", "0")
    assert "--trial" in _one_line_exit_2(capsys, "gate", str(tmp_path), "--max-nfr", "0.1")
    assert "not both" in _one_line_exit_2(capsys, "gate", str(tmp_path), "--trial", "x", "--old", old,
                                          "--max-nfr", "0.1")


# ------------------------------------------------------------------- a kept sweep trial

def _sweep_dir_with_one_trial(out, keep: bool):
    """What a sweep leaves for one digits trial: its row, its M1 in OUT/references and (kept)
    its M2 under OUT/models — written by the same functions a sweep trial calls
    (`run_trial`, `encode_row`, `kept_models.save_model`)."""
    from flipsearch import TrialConfig, run_trial
    from flipsearch.kept_models import save_model
    from flipsearch.references import ReferenceStore
    from flipsearch.results import ResultsWriter, encode_row, new_trial_uid
    from flipsearch.storage import Storage

    storage = Storage.open(str(out))
    cfg = TrialConfig(method="bct", hparams={"lambda_c": 0.5}).with_settings({"epochs": 2})
    result = run_trial(cfg, store=ReferenceStore(storage.sub("references")))
    uid = new_trial_uid()
    row = encode_row(result, {"run_id": "r", "study": "digits", "trial_number": 0, "trial_uid": uid})
    ResultsWriter(storage).append(row)
    if keep:
        save_model(storage.uri, uid, result)
    return uid, result


def test_gate_of_a_kept_trial_reads_its_row_metrics_exactly(tmp_path):
    from flipsearch.api import gate_trial

    uid, result = _sweep_dir_with_one_trial(tmp_path / "out", keep=True)
    v = gate_trial(str(tmp_path / "out"), uid[:10], max_nfr=0.5, max_br=0.5, min_accuracy_gain=-1.0)
    by = {r.rule: r for r in v.rules}
    m = result.metrics
    assert by["nfr <= 0.5"].count == m["n_negative_flips"] and by["nfr <= 0.5"].denominator == m["n"]
    assert by["nfr <= 0.5"].estimate == pytest.approx(m["nfr"], abs=0) and by["br <= 0.5"].estimate == m["br"]
    assert v.accuracy.gain == pytest.approx(m["accuracy_gain"], abs=1e-15) and v.passed
    out = cli("gate", str(tmp_path / "out"), "--trial", uid[:10], "--max-nfr", "0.5", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trial_uid"] == uid


def test_gate_of_a_trial_that_kept_no_model_is_one_line(tmp_path, capsys):
    uid, _ = _sweep_dir_with_one_trial(tmp_path / "out", keep=False)
    out = str(tmp_path / "out")
    assert "kept no model" in _one_line_exit_2(capsys, "gate", out, "--trial", uid, "--max-nfr", "0.1")
    assert "no trial 'zzz'" in _one_line_exit_2(capsys, "gate", out, "--trial", "zzz", "--max-nfr", "0.1")
