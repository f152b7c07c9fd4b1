"""Bring your own model and data: an ImageFolder tree and an .npz written here, a user model
factory from a test module, and a user's trained M1 go through trial, sweep and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from flipsearch.cli import cli
from flipsearch.data import load_dataset
from flipsearch.results import read_results
from flipsearch.search.space import load_space
from flipsearch.search.sweep import SweepOptions, run_sweep
from flipsearch.train import TrainRecipe, fit

pytestmark = pytest.mark.slow

FACTORY = "user_models:tiny_mlp"


def _images(n_per_class: int, n_classes: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: class c is a bright bar at a class-specific position, plus noise."""
    rng = np.random.RandomState(seed)
    xs, ys = [], []
    for c in range(n_classes):
        base = np.zeros((size, size), np.float32)
        base[:, (c * 2) % size] = 1.0
        base[(c * 3) % size, :] = 0.7
        noise = rng.rand(n_per_class, size, size).astype(np.float32) * 0.6
        xs.append(np.clip(base[None] + noise, 0, 1))
        ys.append(np.full(n_per_class, c))
    return (np.concatenate(xs) * 255).astype(np.uint8), np.concatenate(ys)


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    x, y = _images(30, 4, seed=0)
    xt, yt = _images(12, 4, seed=1)
    npz = root / "data.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)
    folder = root / "images"
    for split, (xs, ys) in (("train", (x, y)), ("test", (xt, yt))):
        for i, (img, label) in enumerate(zip(xs, ys)):
            d = folder / split / f"class_{label}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(d / f"{i}.png")
    # The user's own trained M1: their architecture, trained on their data (all 4 classes).
    ds = load_dataset(f"arrays:{npz}")
    torch.manual_seed(0)
    from user_models import tiny_mlp

    m1 = tiny_mlp(4, ds.input_shape)
    fit(m1, ds.x_train[:40], ds.y_train[:40], TrainRecipe(epochs=3, batch_size=16, lr=0.05), seed=0)
    ckpt = root / "m1.pt"
    torch.save(m1.state_dict(), ckpt)
    return {"npz": str(npz), "folder": str(folder), "ckpt": str(ckpt), "root": root}


@pytest.mark.parametrize("method", ["ce", "bct", "neurecover"])
def test_trial_on_imagefolder_with_user_model_and_user_m1(user_data, method):
    runner = CliRunner()
    res = runner.invoke(cli, ["trial", "--dataset", f"imagefolder:{user_data['folder']}?size=8",
                              "--model", FACTORY, "--old-model", user_data["ckpt"], "--method", method,
                              "--set", "epochs=4", "--critical-classes", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["status"] == "ok" and out["references"]["m1"] == "user"
    assert "training recipe is unknown" in out["info"]["m1_source"]
    m = out["metrics"]
    assert m["accuracy_new"] > 0.5  # 4 classes: chance is 0.25
    assert m["critical_n"] == 12 and 0 <= m["critical_nfr"] <= 1
    if method == "neurecover":
        assert "only its last nn.Linear" in out["info"]["note"]  # a plain nn.Sequential, not a FlipNet


def test_explicit_train_update_test_files(user_data, tmp_path):
    x, y = _images(20, 3, seed=3)
    for name, sl in (("train", slice(0, 30)), ("update", slice(30, 60))):
        np.savez(tmp_path / f"{name}.npz", x=x[np.r_[0:10, 20:30, 40:50]] if name == "train" else x[np.r_[10:20, 30:40, 50:60]],
                 y=y[np.r_[0:10, 20:30, 40:50]] if name == "train" else y[np.r_[10:20, 30:40, 50:60]])
    xt, yt = _images(6, 3, seed=4)
    np.savez(tmp_path / "test.npz", x=xt, y=yt)
    res = CliRunner().invoke(cli, ["trial", "--train", str(tmp_path / "train.npz"), "--update", str(tmp_path / "update.npz"),
                                   "--test", str(tmp_path / "test.npz"), "--model", FACTORY, "--set", "epochs=5", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["scenario"]["arrangement"] == "explicit"
    # the validation split (10 % of D_update) is carved from D_update
    assert out["scenario"]["sizes"]["train"] == 30 and out["scenario"]["sizes"]["update"] == 27
    assert out["scenario"]["sizes"]["val"] == 3


def test_sweep_and_report_over_user_model_and_data(ray_local, user_data, tiny_space, tmp_path):
    path = tiny_space(f"""
name: byo
scenario:
  datasets: ["arrays:{user_data['npz']}"]
  arrangements: [exclusive-op]
  models: ["{FACTORY}"]
  old_model: {user_data['ckpt']}
  critical_classes: [1, 2]
  training: {{epochs: 3, batch_size: 16}}
objectives: [accuracy_new:max, critical_nfr:min]
search: {{trials_per_scenario: 4, concurrency: 1}}
methods:
  ce: {{}}
  fd: {{lambda: {{loguniform: [0.1, 5]}}}}
""")
    out = tmp_path / "out"
    run_sweep(load_space(path), SweepOptions(out=str(out), quiet=True))
    rows = read_results(str(out))
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    assert set(rows["ref_m1"]) == {"user"} and rows["critical_nfr"].notna().all()
    res = CliRunner().invoke(cli, ["report", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    # The report is about the user's scenario, on the user's objectives ...
    assert report["objectives"] == ["accuracy_new:max", "critical_nfr:min"]
    (scen,) = report["scenarios"]
    assert scen["scenario"] == rows["study"].iloc[0] and scen["dataset"] == f"arrays:{user_data['npz']}"
    # ... its front is made of the sweep's rows and shows their test critical NFR ...
    by_uid = rows.set_index("trial_uid")
    assert scen["front"] and {f["trial_uid"] for f in scen["front"]} <= set(by_uid.index)
    for point in scen["front"]:
        assert point["test"]["critical_nfr"]["value"] == pytest.approx(by_uid.loc[point["trial_uid"], "critical_nfr"])
    # ... and its command reproduces a trial with the user's model, M1 and critical classes.
    command = scen["recommendation"]["command"]
    assert FACTORY in command and user_data["ckpt"] in command and "--critical-classes 1,2" in command


def test_critical_class_constraint_changes_the_recommendation(tmp_path):
    """A more accurate update that flips critical samples loses to one that flips none once
    'no flip on a critical sample' is required."""
    from test_report import row, sweep_dir

    # (reports choose on validation: each row carries its validation critical_nfr too)
    risky = dict(row("bct", 0.95, 0.010, lambda_c=0.1), critical_classes="3,5", critical_nfr=0.04, critical_n=100.0,
                 val_critical_nfr=0.04, val_critical_n=20.0)
    safe = dict(row("bct", 0.91, 0.012, lambda_c=2.0), critical_classes="3,5", critical_nfr=0.0, critical_n=100.0,
                val_critical_nfr=0.0, val_critical_n=20.0)
    out = sweep_dir(tmp_path, [dict(risky, trial_number=0), dict(safe, trial_number=1)])

    def pick(*extra):
        res = CliRunner().invoke(cli, ["report", out, "--format", "json", "--out", str(tmp_path / "r"), *extra])
        assert res.exit_code == 0, res.output
        (scenario,) = json.loads(res.output)["scenarios"]
        return scenario["recommendation"]

    assert "lambda_c=0.1" in pick()["command"]
    constrained = pick("--constraint", "critical_nfr<=0")
    assert constrained["feasible"] and "lambda_c=2.0" in constrained["command"]
