"""Build `flipsearch/data/fashion_mnist_mini.npz`: a stratified subset of the real Fashion-MNIST.

Why: the embedded 8x8 digits are so easy that a sweep's Pareto front is often one point. A
few thousand real 28x28 Fashion-MNIST images give every method flips to win back and a test
set large enough to count them, while a trial still runs in seconds on 2 CPU cores.

Source: Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`, the four idx
`.gz` files of Zalando Research's Fashion-MNIST, MIT licence), read with flipsearch's own
idx reader (`flipsearch.data.torchvision_sets.read_idx`). Another directory holding the same
four files can be given with `--source`.

Sizes (Fashion-MNIST is exactly balanced, so every class gets the same count):
- training pool: 6,000 images, 600 per class, from the 60,000 training images;
- test set:      3,000 images, 300 per class, from the 10,000 test images.
  (One test sample is 0.033 % of the test set: an NFR difference of 0.2 % is 6 samples.)
- pixels stay uint8 28x28 (no resampling); labels uint8; plus each image's row in its source
  file (`train_index`, `test_index`, int32) for provenance.
- file: about 3.9 MB (`np.savez_compressed`-style deflate, see below); the pixels alone are
  9,000 x 784 B = 7.06 MB raw.

Selection, reproducible from `SEED` = 20251123 alone: for each split and each class c in
0..9, in that order, `rng.permutation(n_c)` over the class's rows (in file order) draws the
order and the first k are taken; the chosen rows are then sorted by their row number in the
source file. One `numpy.random.RandomState(SEED)` serves the whole build, training split
first. The legacy RandomState stream is frozen by NumPy's compatibility policy, so the same
files always give the same arrays.

Writing: the arrays go into a zip exactly as `np.savez_compressed` lays it out (one `.npy`
member per array, deflated) but with a fixed member timestamp and order, so a rebuild with
the same zlib reproduces the file byte for byte (numpy stamps the current time instead).
The file's SHA-256 is written to `fashion_mnist_mini.sha256`, which the loader checks.

    python scripts/build_fashion_mnist_mini.py            # writes both files
    python scripts/build_fashion_mnist_mini.py --check    # rebuild in memory, compare arrays
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from flipsearch.data.torchvision_sets import (DEBIAN_FASHION_MNIST_DIR, FASHION_FILES,  # noqa: E402
                                              IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx)

SEED = 20251123
PER_CLASS = {"train": 600, "test": 300}
NUM_CLASSES = 10
OUT = ROOT / "flipsearch" / "data" / "fashion_mnist_mini.npz"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


def source_files(directory: Path) -> dict[str, tuple[Path, Path]]:
    """The four idx files under `directory` (each `.gz` or plain), or SystemExit."""
    files = {}
    for split, (images, labels) in FASHION_FILES.items():
        pair = []
        for name in (images, labels):
            for candidate in (directory / f"{name}.gz", directory / name):
                if candidate.is_file():
                    pair.append(candidate)
                    break
            else:
                raise SystemExit(f"{directory} has no {name}(.gz); install Debian's "
                                 "dataset-fashion-mnist or pass --source")
        files[split] = (pair[0], pair[1])
    return files


def select(labels: np.ndarray, per_class: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows to keep: per class (0..9 in order), the first `per_class` of a permutation of
    that class's rows; sorted."""
    chosen = []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        if rows.size < per_class:
            raise SystemExit(f"class {c} has only {rows.size} rows, {per_class} wanted")
        chosen.append(rows[rng.permutation(rows.size)[:per_class]])
    return np.sort(np.concatenate(chosen))


def build_arrays(directory: Path) -> dict[str, np.ndarray]:
    """The mini dataset's arrays, in the order they are written."""
    files = source_files(directory)
    rng = np.random.RandomState(SEED)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = read_idx(files[split][0], IDX_IMAGES_MAGIC)
        labels = read_idx(files[split][1], IDX_LABELS_MAGIC)
        rows = select(labels, PER_CLASS[split], rng)
        out[f"x_{split}"] = np.ascontiguousarray(images[rows])  # uint8 [N, 28, 28]
        out[f"y_{split}"] = np.ascontiguousarray(labels[rows])  # uint8 [N]
        out[f"{split}_index"] = rows.astype(np.int32)
    return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deflated .npz (readable by `np.load`) with fixed member timestamps and order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path(DEBIAN_FASHION_MNIST_DIR),
                    help="directory holding the four Fashion-MNIST idx files")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true",
                    help="rebuild in memory and compare with --out instead of writing")
    args = ap.parse_args(argv)
    arrays = build_arrays(args.source)
    data = npz_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        with np.load(args.out, allow_pickle=False) as z:
            same = set(z.files) == {f"{k}.npy"[:-4] for k in arrays} and all(
                z[k].dtype == v.dtype and np.array_equal(z[k], v) for k, v in arrays.items())
        byte_same = args.out.read_bytes() == data
        print(f"arrays {'equal' if same else 'DIFFER'}; file bytes {'equal' if byte_same else 'differ'}")
        return 0 if same else 1
    args.out.write_bytes(data)
    args.out.with_suffix(".sha256").write_text(f"{digest}  {args.out.name}\n")
    sizes = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items())
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB, sha256 {digest}): {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
