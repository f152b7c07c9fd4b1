"""Every bad input gets exit status 2 (usage) or 1 (runtime), one line on stderr naming the
problem, no traceback, and nothing written."""

from __future__ import annotations

import os
import pickle

import numpy as np
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

# What `flipsearch trial` refuses, `flipsearch sweep` refuses too, before Ray starts: each runs
# with an unreachable --address, so a refusal after the driver tried Ray would read
# "cannot reach a Ray cluster" (exit 1) instead. %(name)s are files made by `_inputs`.
E1 = "training: {epochs: 1}"
PREFLIGHT_CASES = [
    ("factory-does-not-import", "scenario: {models: ['no_such_module_xyz:build'], %s}\nmethods: {ce: {}}\n" % E1,
     [], 2, "cannot import model module 'no_such_module_xyz'"),
    ("factory-raises-typeerror", "scenario: {models: ['user_models:buggy'], %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "model factory 'user_models:buggy' raised TypeError: ReLU.__init__() got an unexpected keyword argument"),
    ("critical-classes-out-of-range", "scenario: {critical_classes: [42], %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "critical classes [42] do not exist"),
    ("missing-old-model", "scenario: {old_model: /no/such/m1.pt, %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "cannot read old model '/no/such/m1.pt'"),
    ("pickle-old-model", "scenario: {old_model: '%%(pickle)s', %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "as a state_dict (weights_only)"),
    ("missing-critical-mask", "scenario: {critical_mask: /no/such/mask.npy, %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "cannot read critical mask '/no/such/mask.npy'"),
    ("critical-mask-wrong-length", "scenario: {critical_mask: '%%(mask3)s', %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "critical mask has 3 entries but the test set has"),
    ("neurecover-one-epoch", "scenario: {%s}\nmethods: {neurecover: {}}\n" % E1, [], 2,
     "neurecover needs the weights of the CE update's last two epochs"),
    ("scenario-is-a-list", "scenario: [digits]\nmethods: {ce: {}}\n", [], 2, "'scenario' must be a mapping"),
    ("duplicate-yaml-key", "methods: {ce: {}}\nscenario: {%s}\nmethods: {bct: {}}\n" % E1, [], 2,
     "duplicate key 'methods'"),
    ("duplicate-nested-key", "scenario: {training: {epochs: 1, lr: 0.1, lr: 0.5}}\nmethods: {ce: {}}\n", [], 2,
     "duplicate key 'lr'"),
    ("epochs-not-integer", "scenario: {training: {epochs: 2.7}}\nmethods: {ce: {}}\n", [], 2,
     "epochs=2.7 is not an integer"),
    ("epochs-boolean", "scenario: {training: {epochs: true}}\nmethods: {ce: {}}\n", [], 2,
     "epochs=True is not an integer"),
    ("update-batch-size-boolean", "scenario: {%s, update_training: {batch_size: true}}\nmethods: {ce: {}}\n" % E1,
     [], 2, "batch_size=True is not an integer"),
    ("m1-lr-boolean", "scenario: {%s, m1_training: {lr: true}}\nmethods: {ce: {}}\n" % E1, [], 2,
     "lr=True is not a number"),
    ("labels-huge-id", "scenario: {datasets: ['arrays:%%(huge)s'], %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "largest 1000000000"),
    ("labels-with-gaps", "scenario: {datasets: ['arrays:%%(gaps)s'], %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "must be the class ids 0..C-1 with none skipped"),
    ("labels-one-class", "scenario: {datasets: ['arrays:%%(one)s'], %s}\nmethods: {ce: {}}\n" % E1, [], 2,
     "an update needs at least two classes"),
    ("scale-leaves-d-train-empty", GOOD, ["--scale", "0.001"], 2, "D_train is empty"),
    ("scale-leaves-no-repair-split", "scenario: {arrangements: [exclusive-dev], training: {epochs: 2}}\n"
     "methods: {neurecover: {}}\n", ["--scale", "0.01"], 2, "neurecover repairs on a 0.2 share of D_update"),
]

TRIAL_CASES = [
    ("trial-device-quantum", ["--device", "quantum"], 2, "--device 'quantum': choose auto, cpu, cuda or cuda:N"),
    ("trial-save-model-missing-dir", ["--save-model", "/no/such/dir/m2.pt"], 2,
     "directory '/no/such/dir' does not exist"),
    ("trial-epochs-not-integer", ["--set", "epochs=2.7"], 2, "epochs=2.7 is not an integer"),
    ("trial-epochs-boolean", ["--set", "epochs=true"], 2, "epochs=True is not an integer"),
    ("trial-update-batch-size-boolean", ["--set", "update.batch_size=true"], 2, "batch_size=True is not an integer"),
    ("trial-m1-lr-boolean", ["--set", "m1.lr=true"], 2, "lr=True is not a number"),
    ("trial-factory-does-not-import", ["--model", "no_such_module_xyz:build"], 2,
     "cannot import model module 'no_such_module_xyz'"),
    ("trial-factory-raises-typeerror", ["--model", "user_models:buggy"], 2,
     "model factory 'user_models:buggy' raised TypeError: ReLU.__init__() got an unexpected keyword argument"),
    ("trial-pickle-old-model", ["--old-model", "%(pickle)s"], 2, "as a state_dict (weights_only)"),
    ("trial-critical-mask-wrong-length", ["--critical-mask", "%(mask3)s"], 2,
     "critical mask has 3 entries but the test set has"),
    ("trial-neurecover-one-epoch", ["--method", "neurecover", "--set", "epochs=1"], 2,
     "neurecover needs the weights of the CE update's last two epochs"),
    ("trial-labels-huge-id", ["--dataset", "arrays:%(huge)s"], 2, "largest 1000000000"),
    ("trial-labels-with-gaps", ["--dataset", "arrays:%(gaps)s"], 2, "must be the class ids 0..C-1 with none skipped"),
    ("trial-labels-one-class", ["--dataset", "arrays:%(one)s"], 2, "an update needs at least two classes"),
    ("trial-scale-leaves-d-train-empty", ["--scale", "0.001"], 2, "D_train is empty"),
    ("trial-unknown-method", ["--method", "magic"], 2, "unknown method 'magic'"),
    ("trial-bad-set", ["--set", "lambda_c"], 2, "--set expects KEY=VALUE"),
    ("trial-unknown-set-key", ["--set", "warp=9"], 2, "no hyperparameter 'warp'"),
    ("trial-bad-critical", ["--critical-classes", "3,x"], 2, "--critical-classes"),
    ("trial-critical-out-of-range", ["--critical-classes", "42", "--set", "epochs=1"], 2, "critical classes [42]"),
    ("trial-half-explicit", ["--train", "a.npz"], 2, "go together"),
    ("trial-missing-old-model", ["--old-model", "/no/such/m1.pt"], 2, "No such file"),
    ("trial-unknown-arrangement", ["--arrangement", "diagonal", "--set", "epochs=1"], 2, "diagonal"),
]


def _inputs(root) -> dict[str, str]:
    """Bad input files: a pickle that is not plain weights, a 3-entry critical mask, and
    .npz data whose labels are one huge id, ids with gaps, or a single class."""
    root.mkdir(exist_ok=True)
    files = {}
    from fractions import Fraction

    files["pickle"] = str(root / "m1.pt")
    with open(files["pickle"], "wb") as f:
        pickle.dump({"state_dict": Fraction(1, 3)}, f)  # weights_only refuses the class
    files["mask3"] = str(root / "mask3.npy")
    np.save(files["mask3"], np.array([True, False, True]))
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, size=(60, 8, 8)).astype(np.uint8)
    for name, labels in (("huge", np.where(np.arange(60) % 2, 10**9, 0)), ("gaps", np.where(np.arange(60) % 2, 1000, 0)),
                         ("one", np.zeros(60, dtype=np.int64))):
        files[name] = str(root / f"{name}.npz")
        np.savez(files[name], x_train=x[:40], y_train=labels[:40], x_test=x[40:], y_test=labels[40:])
    return files


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


@pytest.mark.timeout(120)  # a label of 10**9 used to build 10**9 classes (a hang)
@pytest.mark.parametrize("case", PREFLIGHT_CASES, ids=[c[0] for c in PREFLIGHT_CASES])
def test_sweep_refuses_what_trial_refuses_before_ray(case, tmp_path, capsys):
    name, text, extra, status, fragment = case
    space = tmp_path / "space.yaml"
    space.write_text(text % _inputs(tmp_path / "inputs") if "%(" in text else text)
    out = tmp_path / "out"
    code, _, err = _run(["sweep", str(space), "--out", str(out), "--quiet", "--address", "127.0.0.1:9", *extra],
                        capsys)
    assert code == status, err
    _assert_one_line(err, fragment)
    assert not out.exists()  # nothing written


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", TRIAL_CASES, ids=[c[0] for c in TRIAL_CASES])
def test_bad_trial_input(case, tmp_path, capsys):
    name, argv, status, fragment = case
    if any("%(" in a for a in argv):
        files = _inputs(tmp_path / "inputs")
        argv = [a % files for a in argv]
    before = sorted(os.listdir(tmp_path))
    code, _, err = _run(["trial", *argv], capsys)
    assert code == status, err
    _assert_one_line(err, fragment)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_search_space_that_is_not_a_text_file(tmp_path, capsys):
    binary = tmp_path / "space.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfd binary")
    code, _, err = _run(["sweep", str(binary), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    _assert_one_line(err, "is not a text file")
    code, _, err = _run(["sweep", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    _assert_one_line(err, "is a directory; give a YAML file")
    assert not (tmp_path / "out").exists()


def test_out_that_is_an_existing_file(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(GOOD)
    out = tmp_path / "results.txt"
    out.write_text("not a directory\n")
    code, _, err = _run(["sweep", str(space), "--out", str(out), "--quiet"], capsys)
    assert code == 2
    _assert_one_line(err, "is an existing file, not a directory")
    assert out.read_text() == "not a directory\n"


def test_factory_taking_only_the_class_count_still_works():
    from flipsearch.models import build_model

    model = build_model("user_models:one_argument", 3, (1, 8, 8))
    import torch

    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


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


def test_refused_pickle_prints_no_torch_warning(tmp_path):
    """In a real process (pytest's own warning capture would hide a warning in-process):
    the refused pickle is one line on stderr, no torch UserWarning before it."""
    import subprocess
    import sys

    files = _inputs(tmp_path / "inputs")
    proc = subprocess.run([sys.executable, "-m", "flipsearch.cli", "trial", "--old-model", files["pickle"],
                           "--set", "epochs=1"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="default"))
    assert proc.returncode == 2, proc.stderr
    _assert_one_line(proc.stderr, "as a state_dict (weights_only)")
    assert "Warning" not in proc.stderr
