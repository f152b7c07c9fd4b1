"""Exact re-runs: a loaded dataset does not depend on the thread count, and a sweep row's
reproduce command, run as a user would (a fresh process), gives its M1 bitwise and its
metrics exactly, for `cnn8` on Fashion-MNIST (the real files when installed, else a 28x28
fixture in the same on-disk format)."""

from __future__ import annotations

import gzip
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flipsearch.data import clear_cache
from flipsearch.data.torchvision_sets import DEBIAN_FASHION_MNIST_DIR, _idx_dir_files

REAL = _idx_dir_files(Path(DEBIAN_FASHION_MNIST_DIR)) is not None


def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = (0x08 << 8) | arr.ndim
    return magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """Fashion-MNIST for this test: the Debian package's files, else a fixture of 6,000 / 1,000
    28x28 images written as gzipped idx files (large enough that a float32 reduction over the
    pool is split across threads)."""
    monkeypatch.setenv("FLIPSEARCH_DATA", str(tmp_path / "no-torchvision-root"))
    if not REAL:
        rng = np.random.RandomState(0)
        d = tmp_path / "fashion"
        d.mkdir()
        for name, arr in {"train-images-idx3-ubyte": rng.randint(0, 256, (6000, 28, 28), dtype=np.uint8),
                          "train-labels-idx1-ubyte": (np.arange(6000) % 10).astype(np.uint8),
                          "t10k-images-idx3-ubyte": rng.randint(0, 256, (1000, 28, 28), dtype=np.uint8),
                          "t10k-labels-idx1-ubyte": (np.arange(1000) % 10).astype(np.uint8)}.items():
            (d / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
        monkeypatch.setenv("FLIPSEARCH_FASHION_MNIST_DIR", str(d))
    clear_cache()
    yield
    clear_cache()


_HASH_LOADED = """
import hashlib, sys, torch
from flipsearch.data import clear_cache, load_dataset
for threads in (1, 2):
    torch.set_num_threads(threads)
    clear_cache()  # loaded again, not served from the first load
    for spec in sys.argv[1:]:
        d = load_dataset(spec)
        print(threads, " ".join(hashlib.sha256(t.numpy().tobytes()).hexdigest()
                                for t in (d.x_train, d.y_train, d.x_test, d.y_test)))
"""


def _hashes(*specs: str) -> dict[int, list[str]]:
    """{threads: each dataset's tensors' hashes} for 1 and 2 torch threads, loaded in one fresh
    process (torch's thread count applies from the next operation on)."""
    out = subprocess.run([sys.executable, "-c", _HASH_LOADED, *specs], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found: dict[int, list[str]] = {1: [], 2: []}
    for line in out.stdout.strip().splitlines():
        threads, hashes = line.split(" ", 1)
        found[int(threads)].append(hashes)
    assert [len(v) for v in found.values()] == [len(specs)] * 2
    return found


def test_loading_with_one_or_two_threads_gives_identical_tensors(fashion, tmp_path):
    # Before the fix the pool's float32 mean/std followed the thread count (issue 25).
    rng = np.random.RandomState(1)  # features: standardised per feature (user.features_dataset)
    np.savez(tmp_path / "feat.npz", x_train=rng.normal(size=(20000, 200)) * 7 + 3, y_train=np.arange(20000) % 3,
             x_test=rng.normal(size=(100, 200)), y_test=np.arange(100) % 3)
    found = _hashes("fashion-mnist", f"arrays:{tmp_path / 'feat.npz'}")
    one, two = found[1], found[2]
    assert one[0] == two[0]  # fashion-mnist
    assert one[1] == two[1]  # the features


def test_rerun_differences_say_why_a_rerun_cannot_be_exact():
    from flipsearch.numerics import numerics, rerun_differences

    here = numerics("cpu")
    assert here["threads"] == torch.get_num_threads() and here["precision"] == "float32"
    assert rerun_differences(dict(here, pack_size=1), here) == []
    other = dict(here, torch_version="1.0.0", device_used="cuda:1", device_name="NVIDIA H100", threads=99)
    reasons = rerun_differences(other, here)
    assert reasons == ["torch 1.0.0 in the row, " + torch.__version__ + " here", "device cuda in the row, cpu here",
                       f"threads 99 in the row, {here['threads']} here"]
    assert "older flipsearch" in rerun_differences({"nfr": 0.1}, here)[0]
    assert "pack of 3" in rerun_differences(dict(here, pack_size=3), here)[0]


SPACE = """
name: exact
scenario:
  datasets: [fashion-mnist]
  arrangements: [exclusive-op]
  models: [cnn8]
  seeds: [0]
  scale: 0.02
  test_scale: 0.05
  training: {epochs: 1}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: grid, cpus_per_trial: 1, concurrency: 1}
methods:
  ce: {init: {choice: [old]}}
"""


def _run_command(command: str, save: Path) -> dict:
    """Run a printed `flipsearch trial …` command in a fresh process, saving M2 (and M1 beside it)."""
    argv = shlex.split(command)
    assert argv[:2] == ["flipsearch", "trial"]
    out = subprocess.run([sys.executable, "-m", "flipsearch.cli", *argv[1:], "--save-model", str(save), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.ray
@pytest.mark.slow
def test_cnn8_row_is_reproduced_bitwise_by_its_command(ray_local, fashion, tiny_space, tmp_path):
    from flipsearch.report.recommend import trial_command
    from flipsearch.results import read_results
    from flipsearch.search.space import load_space
    from flipsearch.search.sweep import SweepOptions, run_sweep

    out = tmp_path / "out"
    summary = run_sweep(load_space(tiny_space(SPACE)), SweepOptions(out=str(out), quiet=True))
    assert summary.trials_run == 1
    row = read_results(str(out)).iloc[0]
    assert row["status"] == "ok" and row["model"] == "cnn8"
    # The row records what decides its numerics; the sweep gave the trial one CPU, so one thread.
    assert row["threads"] == 1 and row["torch_version"] == torch.__version__
    assert row["device_used"] == "cpu" and row["precision"] == "float32"

    command, notes = trial_command(row)
    assert notes == [] and command.endswith("--threads 1")
    first = _run_command(command, tmp_path / "a.pt")
    # Numerics as recorded, every metric (validation and test) exactly as recorded.
    assert {k: first["numerics"][k] for k in ("torch_version", "threads", "device_used", "device_name",
                                             "precision")} == {k: row[k] for k in ("torch_version", "threads",
                                                                                   "device_used", "device_name",
                                                                                   "precision")}
    compared = 0
    for name, value in first["metrics"].items():
        recorded = row[name]
        if value is None:
            assert recorded is None or math.isnan(recorded), name
        else:
            assert value == recorded, (name, value, recorded)
            compared += 1
    assert compared > 20
    # M1 bitwise: the sweep's M1 is the reference it published in OUT/references.
    refs = sorted((out / "references").glob("m1-*.pt"))
    assert len(refs) == 1
    sweep_m1 = torch.load(refs[0], map_location="cpu", weights_only=True)["state_dict"]
    assert _same_state(torch.load(tmp_path / "a.m1.pt", weights_only=True), sweep_m1)
    # M2 bitwise: the sweep kept its one trial's M2 (the front under --keep front) in OUT/models.
    from flipsearch.kept_models import read_model

    kept, _ = read_model(str(out), str(row["trial_uid"]))
    assert _same_state(torch.load(tmp_path / "a.pt", weights_only=True), kept["state_dict"])
