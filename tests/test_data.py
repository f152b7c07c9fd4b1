"""Datasets: the embedded digits, torchvision's sets read from tiny files written here in
their real on-disk formats, the Debian Fashion-MNIST package, and a user's own files."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from flipsearch.data import DATASETS, Dataset, clear_cache, load_dataset, stratified_holdout
from flipsearch.data import torchvision_sets
from flipsearch.errors import DatasetMissingError, FlipsearchError, UsageError


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    # Every test sees its own files: no dataset cached by an earlier test, and no user
    # environment pointing at real data.
    monkeypatch.delenv("FLIPSEARCH_DATA", raising=False)
    monkeypatch.delenv("FLIPSEARCH_FASHION_MNIST_DIR", raising=False)
    clear_cache()
    yield
    clear_cache()


def expected_normalised(x_train_u8: np.ndarray, x_u8: np.ndarray) -> torch.Tensor:
    """(x/255 − μ_c)/σ_c with per-channel μ, σ of the training pool; both NCHW uint8."""
    pool = torch.from_numpy(x_train_u8).double() / 255
    mean = pool.mean(dim=(0, 2, 3), keepdim=True)
    std = pool.std(dim=(0, 2, 3), keepdim=True)
    return ((torch.from_numpy(x_u8).double() / 255 - mean) / std).float()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_split_and_normalisation():
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    assert isinstance(d, Dataset)
    assert d.x_train.shape == (1258, 1, 8, 8) and d.x_test.shape == (539, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.num_classes == 10 and d.class_names == tuple("0123456789")
    # normalised with the pool's statistics
    assert abs(float(d.x_train.mean())) < 1e-5 and abs(float(d.x_train.std()) - 1) < 1e-3
    # stratified 30 %: each class's test count is within one of 30 % of its size
    total = torch.bincount(torch.cat([d.y_train, d.y_test]), minlength=10).double()
    assert torch.all((torch.bincount(d.y_test, minlength=10) - 0.3 * total).abs() < 1)
    # the pool is sklearn's images (0..16 scaled to 0..255) at the seed-0 hold-out's rows
    src = load_digits()
    u8 = np.rint(src.images * 255 / 16).astype(np.uint8)[:, None]
    train, test = stratified_holdout(src.target, 0.3, seed=0)
    assert d.y_train.tolist() == src.target[train].tolist()
    assert torch.allclose(d.x_train, expected_normalised(u8[train], u8[train]), atol=1e-5)
    assert torch.allclose(d.x_test, expected_normalised(u8[train], u8[test]), atol=1e-5)


def test_digits_load_without_importing_scikit_learn():
    """Every trial actor loads digits in a fresh process: it reads scikit-learn's file, not
    the package (whose import would cost each actor about a second)."""
    import subprocess
    import sys

    code = ("import sys; from flipsearch.data import load_dataset; d = load_dataset('digits'); "
            "print(len(d.y_train), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1258", "False"]


def test_digits_test_set_is_fixed_and_cached():
    a = load_dataset("digits")
    assert load_dataset("digits") is a  # in-process cache
    clear_cache()
    b = load_dataset("digits")
    assert b is not a
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert torch.equal(a.y_train, b.y_train)


def test_unknown_spec_lists_known_ones():
    with pytest.raises(UsageError) as e:
        load_dataset("mnist-but-wrong")
    msg = one_line(e)
    for name in ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "arrays:PATH"):
        assert name in msg and name in DATASETS


def test_explicit_data_root_must_exist(tmp_path):
    with pytest.raises(UsageError) as e:
        load_dataset("cifar10", data_root=tmp_path / "nope")
    assert "nope" in one_line(e)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError):
        load_dataset("fashion-mnist", data_root=tmp_path / "afile")


# ----------------------------------------------------------------------------- CIFAR

def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_images(rng: np.random.RandomState, n: int) -> np.ndarray:
    """n images in CIFAR's stored order: rows of 3072 = R plane, G plane, B plane (32x32)."""
    return rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """CIFAR-10 in torchvision's layout: five 4-image train batches, a 6-image test batch.

    torchvision checks each file's md5 against the real archive's; these files are tiny
    stand-ins, so the class's md5 lists are patched (for this test only) to the md5s of the
    files written here. Everything else — paths, pickle format, HWC conversion — is real.
    """
    from torchvision.datasets import CIFAR10

    rng = np.random.RandomState(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_rows, train_labels = [], []
    for i in range(1, 6):
        data, labels = _cifar_images(rng, 4), [(4 * i + k) % 10 for k in range(4)]
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"batch {i}", "data": data,
                                              "labels": labels})
        train_rows.append(data)
        train_labels += labels
    test_data, test_labels = _cifar_images(rng, 6), [9, 8, 7, 0, 1, 2]
    _pickle(folder / "test_batch", {"batch_label": "test", "data": test_data, "labels": test_labels})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")]
                                                for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": _md5(folder / "batches.meta")})
    return tmp_path, np.concatenate(train_rows), np.array(train_labels), test_data, \
        np.array(test_labels), names


def test_cifar10_reads_real_format(tiny_cifar10):
    root, tr, ytr, te, yte, names = tiny_cifar10
    d = load_dataset("cifar10", data_root=root)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
    assert d.num_classes == 10 and d.class_names == tuple(names)
    assert d.y_train.tolist() == ytr.tolist() and d.y_test.tolist() == yte.tolist()
    # stored rows are CHW planes: reshape gives NCHW directly
    tr_nchw, te_nchw = tr.reshape(-1, 3, 32, 32), te.reshape(-1, 3, 32, 32)
    assert torch.allclose(d.x_train, expected_normalised(tr_nchw, tr_nchw), atol=1e-5)
    assert torch.allclose(d.x_test, expected_normalised(tr_nchw, te_nchw), atol=1e-5)
    assert load_dataset("cifar10", data_root=root) is d


def test_cifar_md5_mismatch_is_reported_as_corrupt(tiny_cifar10, monkeypatch):
    from torchvision.datasets import CIFAR10

    root = tiny_cifar10[0]
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", "0" * 32]])
    with pytest.raises(UsageError) as e:
        load_dataset("cifar10", data_root=root)
    assert "corrupted" in one_line(e) and "--download" in str(e.value)


def test_cifar100_reads_real_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    rng = np.random.RandomState(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    tr, te = _cifar_images(rng, 7), _cifar_images(rng, 3)
    ytr, yte = [0, 99, 5, 50, 49, 1, 98], [99, 0, 42]
    _pickle(folder / "train", {"filenames": ["a"] * 7, "batch_label": "train", "fine_labels": ytr,
                               "coarse_labels": [y // 5 for y in ytr], "data": tr})
    _pickle(folder / "test", {"filenames": ["b"] * 3, "batch_label": "test", "fine_labels": yte,
                              "coarse_labels": [y // 5 for y in yte], "data": te})
    fine = [f"class{i:02d}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": [str(i) for i in range(20)]})
    # md5 lists patched to these tiny files (see tiny_cifar10)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names",
                                           "md5": _md5(folder / "meta")})
    d = load_dataset("cifar100", data_root=tmp_path)
    assert d.x_train.shape == (7, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    assert d.num_classes == 100 and d.class_names[99] == "class99"
    assert d.y_train.tolist() == ytr and d.y_test.tolist() == yte  # fine labels
    tr_nchw = tr.reshape(-1, 3, 32, 32)
    assert torch.allclose(d.x_train, expected_normalised(tr_nchw, tr_nchw), atol=1e-5)


def test_cifar_missing_says_download(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        load_dataset("cifar100", data_root=tmp_path)
    msg = one_line(e)
    assert "--download" in msg and "cifar-100-python" in msg


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    # A closed local port: the download fails at once, as it would without internet.
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(FlipsearchError) as e:
        load_dataset("cifar10", data_root=tmp_path, download=True)
    assert not isinstance(e.value, UsageError)
    assert "could not download cifar10" in one_line(e)


# ----------------------------------------------------------------------------- Fashion-MNIST

def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = (0x08 << 8) | arr.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fashion(directory: Path, gz: bool, n_train: int = 12, n_test: int = 5):
    rng = np.random.RandomState(2)
    arrays = {"train-images-idx3-ubyte": rng.randint(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.randint(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10}
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = _idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return {k: v.astype(np.uint8) for k, v in arrays.items()}


def _check_fashion(d: Dataset, arrays: dict) -> None:
    tr, te = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    assert d.x_train.shape == (tr.shape[0], 1, 28, 28) and d.x_test.shape == (te.shape[0], 1, 28, 28)
    assert d.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert d.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert d.num_classes == 10 and d.class_names[0] == "T-shirt/top"
    assert torch.allclose(d.x_train, expected_normalised(tr[:, None], tr[:, None]), atol=1e-5)
    assert torch.allclose(d.x_test, expected_normalised(tr[:, None], te[:, None]), atol=1e-5)


def test_fashion_mnist_from_debian_style_directory(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    arrays = _write_fashion(debian, gz=True)
    monkeypatch.setattr(torchvision_sets, "DEBIAN_FASHION_MNIST_DIR", str(debian))
    root = tmp_path / "root"
    root.mkdir()
    _check_fashion(load_dataset("fashion-mnist", data_root=root), arrays)
    # the environment variable overrides the module constant
    clear_cache()
    other = tmp_path / "other"
    arrays2 = _write_fashion(other, gz=True, n_train=20, n_test=3)
    monkeypatch.setenv("FLIPSEARCH_FASHION_MNIST_DIR", str(other))
    _check_fashion(load_dataset("fashion-mnist", data_root=root), arrays2)


def test_fashion_mnist_from_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_sets, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    arrays = _write_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)  # as torchvision extracts
    _check_fashion(load_dataset("fashion-mnist", data_root=tmp_path), arrays)
    # the torchvision layout wins over the Debian directory
    clear_cache()
    _write_fashion(tmp_path / "debian", gz=True, n_train=30)
    monkeypatch.setattr(torchvision_sets, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    assert load_dataset("fashion-mnist", data_root=tmp_path).x_train.shape[0] == 12


def test_fashion_mnist_gz_files_in_torchvision_raw_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_sets, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    arrays = _write_fashion(tmp_path / "FashionMNIST" / "raw", gz=True)
    _check_fashion(load_dataset("fashion-mnist", data_root=tmp_path), arrays)


def test_fashion_mnist_bad_magic(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    _write_fashion(debian, gz=True)
    labels = _idx_bytes(np.zeros(12, dtype=np.uint8))
    (debian / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + labels[4:]))
    monkeypatch.setenv("FLIPSEARCH_FASHION_MNIST_DIR", str(debian))
    with pytest.raises(UsageError) as e:
        load_dataset("fashion-mnist", data_root=tmp_path)
    assert "train-labels-idx1-ubyte.gz" in one_line(e)


def test_fashion_mnist_missing_is_one_line_with_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIPSEARCH_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DatasetMissingError) as e:
        load_dataset("fashion-mnist", data_root=tmp_path)
    msg = one_line(e)
    assert "--download" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "absent") in msg and str(tmp_path) in msg


def test_fashion_mnist_download_failure_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    monkeypatch.setenv("FLIPSEARCH_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(FlipsearchError) as e:
        load_dataset("fashion-mnist", data_root=tmp_path, download=True)
    assert "could not download fashion-mnist" in one_line(e)


def test_real_debian_fashion_mnist(tmp_path):
    debian = Path(torchvision_sets.DEBIAN_FASHION_MNIST_DIR)
    if not (debian / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{debian} absent (apt-get install dataset-fashion-mnist; scripts/test.sh does)", pytrace=False)
    d = load_dataset("fashion-mnist", data_root=tmp_path)  # empty root: the Debian files
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-3


# ----------------------------------------------------------------------------- imagefolder

def _png(path: Path, value: int, mode: str = "L", size=(10, 12)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, colour).save(path)


def test_imagefolder_single_tree_carves_stratified_test(tmp_path):
    for c, cls in enumerate(["cat", "ant", "bee"]):
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", 40 * c + i)
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert d.class_names == ("ant", "bee", "cat")  # sorted, as ImageFolder does
    assert d.x_train.shape == (12, 1, 32, 32) and d.x_test.shape == (3, 1, 32, 32)  # grey -> L
    assert torch.bincount(d.y_test, minlength=3).tolist() == [1, 1, 1]
    again = load_dataset(f"imagefolder:{tmp_path}")
    assert torch.equal(again.y_test, d.y_test) and torch.equal(again.x_test, d.x_test)  # seed 0
    small = load_dataset(f"imagefolder:{tmp_path}?size=8")
    assert small.x_train.shape == (12, 1, 8, 8)
    # constant images keep their grey level through the resize, so classes stay apart:
    pix = d.x_train[:, 0, 0, 0]
    # ant (id 0) was written at grey 40..44, cat (id 2) at 0..4
    assert torch.all(pix[d.y_train == 0] > pix[d.y_train == 2].max())


def test_imagefolder_train_test_layout_and_rgb(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", 100, mode="RGB" if cls == "b" else "L")
    d = load_dataset(f"imagefolder:{tmp_path}?size=16")
    assert d.x_train.shape == (6, 3, 16, 16) and d.x_test.shape == (4, 3, 16, 16)  # one RGB -> all RGB
    assert d.y_test.tolist() == [0, 0, 1, 1] and d.class_names == ("a", "b")


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UsageError):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError) as e:
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    one_line(e)
    _png(tmp_path / "t" / "train" / "a" / "0.png", 1)
    _png(tmp_path / "t" / "test" / "z" / "0.png", 1)
    with pytest.raises(UsageError) as e:
        load_dataset(f"imagefolder:{tmp_path / 't'}")
    assert "z" in one_line(e)
    with pytest.raises(UsageError) as e:
        load_dataset(f"imagefolder:{tmp_path / 't'}?colour=1")
    assert "colour" in one_line(e)


# ----------------------------------------------------------------------------- arrays

def test_arrays_npz_uint8_nhwc(tmp_path):
    rng = np.random.RandomState(3)
    xtr, xte = rng.randint(0, 256, (6, 5, 5, 3)).astype(np.uint8), rng.randint(0, 256, (2, 5, 5, 3)).astype(np.uint8)
    np.savez(tmp_path / "a.npz", x_train=xtr, y_train=np.array([0, 1, 2, 0, 1, 2]),
             x_test=xte, y_test=np.array([2, 0]))
    d = load_dataset(f"arrays:{tmp_path / 'a.npz'}")
    assert d.x_train.shape == (6, 3, 5, 5) and d.num_classes == 3
    tr = xtr.transpose(0, 3, 1, 2)
    assert torch.allclose(d.x_test, expected_normalised(tr, xte.transpose(0, 3, 1, 2)), atol=1e-5)


def test_arrays_npz_float_images_and_string_labels(tmp_path):
    x = np.linspace(0, 1, 4 * 6 * 6).reshape(4, 6, 6)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.array(["dog", "cat", "dog", "cat"]),
             x_test=x[:2], y_test=np.array(["cat", "dog"]))
    d = load_dataset(f"arrays:{tmp_path / 'f.npz'}")
    assert d.x_train.shape == (4, 1, 6, 6) and d.class_names == ("cat", "dog")
    assert d.y_train.tolist() == [1, 0, 1, 0] and d.y_test.tolist() == [0, 1]
    u8 = np.rint(x * 255).astype(np.uint8)[:, None]
    assert torch.allclose(d.x_train, expected_normalised(u8, u8), atol=1e-5)
    np.savez(tmp_path / "bad.npz", x_train=x * 2, y_train=np.zeros(4), x_test=x, y_test=np.zeros(4))
    with pytest.raises(UsageError) as e:
        load_dataset(f"arrays:{tmp_path / 'bad.npz'}")
    assert "[0, 1]" in one_line(e)


def test_arrays_npz_features_normalised_per_feature(tmp_path):
    rng = np.random.RandomState(4)
    xtr = rng.normal(size=(20, 3)) * [1, 10, 100] + [0, 5, -50]
    xte = rng.normal(size=(5, 3))
    np.savez(tmp_path / "feat.npz", x_train=xtr, y_train=np.arange(20) % 2, x_test=xte,
             y_test=np.arange(5) % 2)
    d = load_dataset(f"arrays:{tmp_path / 'feat.npz'}")
    assert d.x_train.shape == (20, 1, 1, 3) and d.x_test.shape == (5, 1, 1, 3)
    flat = d.x_train.reshape(20, 3)
    assert torch.allclose(flat.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.std(0), torch.ones(3), atol=1e-4)
    mean, std = xtr.mean(0), xtr.std(0, ddof=1)
    assert np.allclose(d.x_test.reshape(5, 3).numpy(), (xte - mean) / std, atol=1e-4)


def test_arrays_npz_missing_key(tmp_path):
    np.savez(tmp_path / "m.npz", x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2))
    with pytest.raises(UsageError) as e:
        load_dataset(f"arrays:{tmp_path / 'm.npz'}")
    assert "'x_test'" in one_line(e)
    with pytest.raises(UsageError):
        load_dataset(f"arrays:{tmp_path / 'nothing.npz'}")


def _png_bytes(value: int, size=(6, 6)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def test_arrays_parquet_images_and_features(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"label": [0, 1, 0, 1, 1], "split": ["train", "train", "train", "test", "TEST"],
                          "image": [_png_bytes(v) for v in (0, 200, 10, 210, 220)]})
    frame.to_parquet(tmp_path / "img.parquet")
    d = load_dataset(f"arrays:{tmp_path / 'img.parquet'}")
    assert d.x_train.shape == (3, 1, 6, 6) and d.x_test.shape == (2, 1, 6, 6)
    assert d.y_train.tolist() == [0, 1, 0] and d.y_test.tolist() == [1, 1]
    u8 = np.array([0, 200, 10], np.uint8)[:, None, None, None].repeat(6, 2).repeat(6, 3)
    assert torch.allclose(d.x_train, expected_normalised(u8, u8), atol=1e-5)

    feats = pd.DataFrame({"label": ["b", "a", "b", "a"], "split": ["train", "train", "test", "test"],
                          "f1": [1.0, 2.0, 3.0, 4.0], "f2": [0.0, 10.0, 5.0, 5.0]})
    feats.to_parquet(tmp_path / "feat.parquet")
    f = load_dataset(f"arrays:{tmp_path / 'feat.parquet'}")
    assert f.x_train.shape == (2, 1, 1, 2) and f.class_names == ("a", "b")
    assert f.y_train.tolist() == [1, 0]

    feats.drop(columns="split").to_parquet(tmp_path / "nosplit.parquet")
    with pytest.raises(UsageError) as e:
        load_dataset(f"arrays:{tmp_path / 'nosplit.parquet'}")
    assert "'split'" in one_line(e)
