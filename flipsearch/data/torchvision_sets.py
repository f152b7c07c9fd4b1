"""Fashion-MNIST, CIFAR-10 and CIFAR-100 through the real torchvision classes.

Each set is read once into uint8 arrays (`.data`, `.targets`) and normalised by
`from_uint8`. Files live under a data root (default `~/.cache/flipsearch/data`, or env
`FLIPSEARCH_DATA`) in torchvision's own layout, so a root shared with other torchvision
code works as is. Fashion-MNIST is also read from the Debian package
`dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`, four idx `.gz` files), parsed
here with gzip + numpy, when torchvision's layout is absent.

Nothing is downloaded unless asked (`download=True`, the CLI's `--download`).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetMissingError, FlipsearchError, UsageError
from ._base import Dataset, from_uint8

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where `apt-get install dataset-fashion-mnist` puts the files; env
`FLIPSEARCH_FASHION_MNIST_DIR` overrides it (tests may also patch this constant)."""

# idx file names per split: (images, labels); torchvision's raw folder holds them unzipped.
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_IMAGES_MAGIC = 0x00000803  # uint8 (0x08), 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # uint8 (0x08), 1 dimension

TORCHVISION_SETS = ("fashion-mnist", "cifar10", "cifar100")


def default_data_root() -> Path:
    """`$FLIPSEARCH_DATA`, else `~/.cache/flipsearch/data`."""
    return Path(os.environ.get("FLIPSEARCH_DATA") or "~/.cache/flipsearch/data").expanduser()


def fashion_mnist_debian_dir() -> Path:
    """`$FLIPSEARCH_FASHION_MNIST_DIR`, else `DEBIAN_FASHION_MNIST_DIR`."""
    return Path(os.environ.get("FLIPSEARCH_FASHION_MNIST_DIR") or DEBIAN_FASHION_MNIST_DIR)


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one idx file (gzip-compressed when the name ends in `.gz`) as a uint8 array.

    Layout (big-endian): a 4-byte magic number 0x0000TTNN (TT = 0x08 for uint8, NN = the
    number of dimensions), NN 4-byte sizes, then the values.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UsageError(f"cannot read {path}: {e}; re-install or re-download it") from e
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() if len(raw) >= 4 else "a truncated header"
        raise UsageError(f"{path} is not an idx file of the expected kind (magic {magic:#010x}, "
                         f"found {found}); re-install or re-download it")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: header says {shape}, holds {len(raw) - header} "
                         "values; re-install or re-download it")
    # A writable copy: torch.from_numpy on a read-only buffer is undefined behaviour.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _idx_dir_files(directory: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four Fashion-MNIST files in `directory` (each plain or `.gz`), or None."""
    found: dict[str, tuple[Path, Path]] = {}
    for split, names in FASHION_FILES.items():
        paths = []
        for name in names:
            plain, zipped = directory / name, directory / f"{name}.gz"
            if plain.is_file():
                paths.append(plain)
            elif zipped.is_file():
                paths.append(zipped)
            else:
                return None
        found[split] = (paths[0], paths[1])
    return found


def _read_fashion_idx(files: dict[str, tuple[Path, Path]]) -> tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "test"):
        images = read_idx(files[split][0], IDX_IMAGES_MAGIC)
        labels = read_idx(files[split][1], IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise UsageError(f"{files[split][0]} holds {images.shape[0]} images but "
                             f"{files[split][1]} {labels.shape[0]} labels")
        out += [images, labels]
    return tuple(out)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _read_torchvision(cls, name: str, root: Path, download: bool):
    """Instantiate a torchvision dataset class for both splits; returns (train, test)."""
    if download:
        root.mkdir(parents=True, exist_ok=True)
        try:
            train = cls(str(root), train=True, download=True)
        except Exception as e:  # network errors come as URLError, RuntimeError, OSError...
            raise FlipsearchError(f"could not download {name} into {root}: {_first_line(e)}; "
                                  "check the network or put the files there by hand") from e
    else:
        try:
            train = cls(str(root), train=True, download=False)
        except RuntimeError as e:  # present (checked by the caller) but failing md5
            raise UsageError(f"{name} files under {root} are corrupted ({_first_line(e)}); "
                             "delete them and run again with --download") from e
    return train, cls(str(root), train=False, download=False)


def _load_fashion_mnist(root: Path, download: bool) -> Dataset:
    from torchvision.datasets import FashionMNIST

    names = tuple(FashionMNIST.classes)
    raw = root / "FashionMNIST" / "raw"
    if all((raw / n).is_file() for pair in FASHION_FILES.values() for n in pair):
        train, test = _read_torchvision(FashionMNIST, "fashion-mnist", root, False)
        arrays = (train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy())
    else:
        debian = fashion_mnist_debian_dir()
        files = _idx_dir_files(raw) or _idx_dir_files(debian)
        if files is not None:
            arrays = _read_fashion_idx(files)
        elif download:
            train, test = _read_torchvision(FashionMNIST, "fashion-mnist", root, True)
            arrays = (train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy())
        else:
            raise DatasetMissingError(
                f"fashion-mnist not found in {raw} nor {debian}; run with --download (saves it "
                f"under {root}) or `apt-get install dataset-fashion-mnist`")
    return from_uint8("fashion-mnist", *arrays, num_classes=10, class_names=names)


def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / cls.base_folder
    wanted = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if not download and not all((folder / f).is_file() for f in wanted):
        raise DatasetMissingError(f"{name} not found in {folder}; run with --download (saves it "
                                  f"under {root}) or point --data-root at a folder holding "
                                  f"{cls.base_folder}/")
    train, test = _read_torchvision(cls, name, root, download)
    classes = tuple(train.classes)
    return from_uint8(name, train.data, np.asarray(train.targets), test.data,
                      np.asarray(test.targets), num_classes=len(classes), class_names=classes,
                      channels_last=True)


def load_torchvision_dataset(name: str, root: Path, download: bool = False) -> Dataset:
    """Load `fashion-mnist`, `cifar10` or `cifar100` from `root` (see the module doc)."""
    if name == "fashion-mnist":
        return _load_fashion_mnist(root, download)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, download)
    raise UsageError(f"unknown torchvision dataset {name!r}; known: {', '.join(TORCHVISION_SETS)}")
