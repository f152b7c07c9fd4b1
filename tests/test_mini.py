"""The embedded `fashion-mnist-mini`: contents, checksum, and that the build script reproduces
it from Debian's Fashion-MNIST files."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from flipsearch.data import DATASETS, load_dataset
from flipsearch.data.mini import FASHION_MNIST_CLASSES, MINI_PATH, expected_sha256, load_fashion_mnist_mini
from flipsearch.data.torchvision_sets import (FASHION_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
                                              fashion_mnist_debian_dir, read_idx)
from flipsearch.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_fashion_mnist_mini.py"


def _debian_dir() -> Path:
    d = fashion_mnist_debian_dir()
    if not all((d / f"{n}.gz").is_file() for pair in FASHION_FILES.values() for n in pair):
        pytest.fail(f"Debian's Fashion-MNIST files are not in {d} (apt-get install dataset-fashion-mnist; "
                    "scripts/test.sh does)", pytrace=False)
    return d


def _script():
    spec = importlib.util.spec_from_file_location("build_fashion_mnist_mini", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_file_matches_its_recorded_checksum():
    digest = hashlib.sha256(MINI_PATH.read_bytes()).hexdigest()
    assert digest == expected_sha256()
    assert len(digest) == 64
    assert 2e6 < MINI_PATH.stat().st_size < 6e6  # "a few MB"


def test_raw_arrays_sizes_balance_dtype():
    with np.load(MINI_PATH, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == {"x_train", "y_train", "train_index", "x_test", "y_test", "test_index"}
    assert arrays["x_train"].shape == (6000, 28, 28) and arrays["x_test"].shape == (3000, 28, 28)
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_test"].dtype == np.uint8
    assert np.bincount(arrays["y_train"], minlength=10).tolist() == [600] * 10
    assert np.bincount(arrays["y_test"], minlength=10).tolist() == [300] * 10
    for split, n_source in (("train", 60000), ("test", 10000)):
        idx = arrays[f"{split}_index"]
        assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n_source  # distinct, sorted
    assert arrays["x_train"].max() == 255 and arrays["x_train"].min() == 0  # real pixels, not rescaled


def test_loader_gives_a_normalised_dataset_with_class_names():
    ds = load_fashion_mnist_mini()
    assert ds.name == "fashion-mnist-mini" and ds.num_classes == 10
    assert ds.class_names == FASHION_MNIST_CLASSES
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.x_train.shape == (6000, 1, 28, 28) and ds.x_test.shape == (3000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [300] * 10
    # standardised with the training pool's statistics
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3


def test_registered_as_a_builtin_dataset():
    assert "fashion-mnist-mini" in DATASETS and "MIT" in DATASETS["fashion-mnist-mini"]
    ds = load_dataset("fashion-mnist-mini")
    assert ds.name == "fashion-mnist-mini" and len(ds.y_train) == 6000
    assert load_dataset("fashion_mnist_mini") is ds  # cached, spelling-normalised like the others
    from flipsearch.data import canonical_dataset, dataset_defaults

    assert canonical_dataset("Fashion_MNIST_mini") == "fashion-mnist-mini"
    defaults = dataset_defaults("fashion-mnist-mini")
    assert defaults.model == "compact"
    assert (defaults.recipe.epochs, defaults.recipe.batch_size, defaults.recipe.grad_clip) == (3, 64, 2.0)


def test_a_damaged_file_is_refused(tmp_path):
    bad = tmp_path / "mini.npz"
    data = bytearray(MINI_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="fails its checksum"):
        load_fashion_mnist_mini(bad)
    with pytest.raises(UsageError, match="cannot read"):
        load_fashion_mnist_mini(tmp_path / "absent.npz")


def test_images_are_the_debian_rows_they_name():
    d = _debian_dir()
    with np.load(MINI_PATH, allow_pickle=False) as z:
        for split in ("train", "test"):
            images = read_idx(d / f"{FASHION_FILES[split][0]}.gz", IDX_IMAGES_MAGIC)
            labels = read_idx(d / f"{FASHION_FILES[split][1]}.gz", IDX_LABELS_MAGIC)
            idx = z[f"{split}_index"]
            assert np.array_equal(images[idx], z[f"x_{split}"])
            assert np.array_equal(labels[idx], z[f"y_{split}"])


@pytest.mark.slow
def test_build_script_reproduces_the_file(tmp_path):
    d = _debian_dir()
    build = _script()
    out = tmp_path / "rebuilt.npz"
    assert build.main(["--source", str(d), "--out", str(out)]) == 0
    with np.load(MINI_PATH, allow_pickle=False) as shipped, np.load(out, allow_pickle=False) as rebuilt:
        assert shipped.files == rebuilt.files
        for k in shipped.files:
            assert shipped[k].dtype == rebuilt[k].dtype and np.array_equal(shipped[k], rebuilt[k]), k
    # the sidecar it writes names the rebuilt file's digest
    assert out.with_suffix(".sha256").read_text().split()[0] == hashlib.sha256(out.read_bytes()).hexdigest()
    # --check rebuilds in memory and compares arrays with the given file (exit 0 = equal)
    assert build.main(["--source", str(d), "--out", str(MINI_PATH), "--check"]) == 0
