"""Every bad input gets exit status 2 (usage) or 1 (runtime), one line on stderr naming the
problem, no traceback, and nothing written."""

from __future__ import annotations

import os

import pytest

from flipsearch.cli import main

GOOD = """
scenario: {datasets: [digits], arrangements: [exclusive-op], training: {epochs: 1}}
methods: {ce: {}}
"""

# (id, space-file text or None, argv after the command, expected exit status, stderr fragment)
SWEEP_CASES = [
    ("malformed-yaml", "methods: {ce: {}\nscenario: [", [], 2, "malformed YAML"),
    ("unknown-top-key", GOOD + "colour: blue\n", [], 2, "unknown top-level key 'colour'"),
    ("unknown-method", "methods: {sgd_magic: {}}\n", [], 2, "unknown method 'sgd_magic'"),
    ("unknown-arrangement", "scenario: {arrangements: [sideways]}\nmethods: {ce: {}}\n", [], 2,
     "unknown arrangement 'sideways'"),
    ("unknown-dataset", "scenario: {datasets: [mnist-ultra]}\nmethods: {ce: {}}\n", [], 2, "unknown dataset 'mnist-ultra'"),
    ("unknown-model", "scenario: {models: [vgg99]}\nmethods: {ce: {}}\n", [], 2, "unknown model 'vgg99'"),
    ("unknown-hparam", "methods: {bct: {lambda_z: 1}}\n", [], 2, "methods.bct.lambda_z: unknown hyperparameter"),
    ("hparam-wrong-type", "methods: {bct: {lambda_c: lots}}\n", [], 2, "lambda_c='lots' is not a number"),
    ("hparam-out-of-range", "methods: {mpt: {k: -1}}\n", [], 2, "k=-1 is outside its legal range"),
    ("negative-epochs", "scenario: {training: {epochs: -3}}\nmethods: {ce: {}}\n", [], 2, "epochs must be >= 1"),
    ("low-above-high", "methods: {fd: {lambda: {uniform: [2.0, 1.0]}}}\n", [], 2, "low 2.0 is greater than high 1.0"),
    ("unknown-distribution", "methods: {fd: {lambda: {gaussian: [0, 1]}}}\n", [], 2, "unknown distribution 'gaussian'"),
    ("unknown-sampler", GOOD + "search: {sampler: annealing}\n", [], 2, "search.sampler='annealing'"),
    ("objective-missing-metric", GOOD, ["--objective", "happiness:max"], 2, "happiness"),
    ("objective-in-file-missing-metric", GOOD + "objectives: [churn:min]\n", [], 2, "churn"),
    ("constraint-unparseable", GOOD, ["--constraint", "nfr is small"], 2, "METRIC"),
    ("critical-without-classes", GOOD, ["--objective", "critical_nfr:min"], 2, "critical_classes"),
    ("path-as-name", "name: ../../etc\n" + GOOD, [], 2, "not a path"),
    ("missing-space-file", None, [], 2, "does not exist"),
    ("missing-dataset", "scenario: {datasets: [fashion-mnist], data_root: %(root)s, training: {epochs: 1}}\n"
                        "methods: {ce: {}}\n", [], 2, "--download"),
    ("data-root-missing", "scenario: {data_root: /no/such/dir}\nmethods: {ce: {}}\n", [], 2, "/no/such/dir"),
    ("unreachable-address", GOOD, ["--address", "127.0.0.1:9"], 1, "cannot reach a Ray cluster"),
]

TRIAL_CASES = [
    ("trial-unknown-method", ["--method", "magic"], 2, "unknown method 'magic'"),
    ("trial-bad-set", ["--set", "lambda_c"], 2, "--set expects KEY=VALUE"),
    ("trial-unknown-set-key", ["--set", "warp=9"], 2, "no hyperparameter 'warp'"),
    ("trial-bad-critical", ["--critical-classes", "3,x"], 2, "--critical-classes"),
    ("trial-critical-out-of-range", ["--critical-classes", "42", "--set", "epochs=1"], 2, "critical classes [42]"),
    ("trial-half-explicit", ["--train", "a.npz"], 2, "go together"),
    ("trial-missing-old-model", ["--old-model", "/no/such/m1.pt"], 2, "No such file"),
    ("trial-unknown-arrangement", ["--arrangement", "diagonal", "--set", "epochs=1"], 2, "diagonal"),
]


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _assert_one_line(err, fragment):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("flipsearch: error:")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_bad_sweep_input(case, tmp_path, capsys, monkeypatch):
    name, text, extra, status, fragment = case
    monkeypatch.setenv("FLIPSEARCH_FASHION_MNIST_DIR", str(tmp_path / "no-debian-copy"))
    empty_root = tmp_path / "empty-root"
    empty_root.mkdir()
    space = tmp_path / "space.yaml"
    if text is not None:
        space.write_text(text % {"root": empty_root} if "%(root)s" in text else text)
    out = tmp_path / "out"
    code, _, err = _run(["sweep", str(space), "--out", str(out), "--quiet", *extra], capsys)
    assert code == status, err
    _assert_one_line(err, fragment)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("case", TRIAL_CASES, ids=[c[0] for c in TRIAL_CASES])
def test_bad_trial_input(case, capsys):
    name, argv, status, fragment = case
    code, _, err = _run(["trial", *argv], capsys)
    assert code == status, err
    _assert_one_line(err, fragment)


def test_report_on_empty_and_non_sweep_dirs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(["report", str(empty)], capsys)
    assert code == 2
    _assert_one_line(err, "holds no sweep results")
    assert os.listdir(empty) == []
    code, _, err = _run(["report", str(tmp_path / "does-not-exist")], capsys)
    assert code == 2
    _assert_one_line(err, "no sweep results")


def test_truncated_parquet_is_a_runtime_error_naming_the_file(tmp_path, capsys):
    parts = tmp_path / "sweep" / "trials"
    parts.mkdir(parents=True)
    (parts / "part-x-000000-deadbeef.parquet").write_bytes(b"PAR1\x00\x01truncated")
    code, _, err = _run(["report", str(tmp_path / "sweep")], capsys)
    assert code == 1
    _assert_one_line(err, "part-x-000000-deadbeef.parquet")


def test_debug_shows_the_traceback(capsys):
    from flipsearch.errors import UsageError

    with pytest.raises(UsageError):
        main(["--debug", "trial", "--method", "magic"])
