"""`fashion-mnist-mini`: an embedded stratified subset of the real Fashion-MNIST.

9,000 real 28x28 grey images shipped inside the package (`fashion_mnist_mini.npz`, 3.95 MB):
a training pool of 6,000 (600 per class) and a test set of 3,000 (300 per class), drawn with
a fixed seed from Zalando Research's Fashion-MNIST (MIT licence) as packaged by Debian.
`scripts/build_fashion_mnist_mini.py` builds it and documents the selection; the file's
SHA-256 (`fashion_mnist_mini.sha256`, next to it) is checked on every load, so a truncated or
altered file is refused instead of silently training on other data.

Needs no download and no data root. Unlike the digits, every method has flips to win back
on it and the test set is large enough to count them (0.1 % NFR = 3 samples).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ._base import Dataset, from_uint8

MINI_PATH = Path(__file__).with_name("fashion_mnist_mini.npz")
MINI_SHA256_PATH = MINI_PATH.with_suffix(".sha256")

# Fashion-MNIST's label names, ids 0..9 (the same as torchvision's `FashionMNIST.classes`).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def expected_sha256() -> str:
    """The digest recorded by the build script (first field of the sidecar file)."""
    try:
        return MINI_SHA256_PATH.read_text().split()[0]
    except (OSError, IndexError) as e:
        raise UsageError(f"cannot read {MINI_SHA256_PATH} ({e}); the flipsearch installation is "
                         "incomplete, reinstall it") from None


def load_fashion_mnist_mini(path: str | Path = MINI_PATH, sha256: str | None = None) -> Dataset:
    """The embedded Fashion-MNIST subset as a `Dataset` (10 classes, [N, 1, 28, 28] float32,
    normalised with the training pool's statistics). The file must match `sha256` (default:
    the recorded digest)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the embedded dataset {path}: {e.strerror}; reinstall "
                         "flipsearch or rebuild it with scripts/build_fashion_mnist_mini.py") from None
    want = sha256 or expected_sha256()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise UsageError(f"{path} fails its checksum (sha256 {got[:16]}..., expected {want[:16]}...); "
                         "reinstall flipsearch or rebuild it with scripts/build_fashion_mnist_mini.py")
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        x_train, y_train, x_test, y_test = (z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    return from_uint8("fashion-mnist-mini", x_train, y_train.astype(np.int64), x_test,
                      y_test.astype(np.int64), num_classes=len(FASHION_MNIST_CLASSES),
                      class_names=FASHION_MNIST_CLASSES)
