"""A user's own data: image-folder trees and array files.

- `imagefolder:PATH` — torchvision's `ImageFolder` layout, either `PATH/train/<class>/*` +
  `PATH/test/<class>/*`, or one `PATH/<class>/*` tree from which a fixed stratified 20 %
  test split is carved (seed 0). Images are decoded with PIL, converted to RGB (or L when
  every image is grey), resized to `size` x `size` (default 32; `imagefolder:PATH?size=28`).
- `arrays:PATH` — an `.npz` holding `x_train, y_train, x_test, y_test`, or a Parquet file
  with columns `label`, `split` (`train`/`test`) and either `image` (encoded PNG/JPEG bytes)
  or numeric feature columns.

Images may be uint8 (NHW, NHWC or NCHW) or floats in [0, 1] (scaled to uint8 by
round(255 · x)). 2-D arrays `[N, D]` are feature vectors: they become `[N, 1, 1, D]`
float32, standardised per feature with the training pool's mean and std.
Labels are integer class ids, or strings (class names, ids in sorted order).

The same readers load the three explicit parts of `flipsearch.arrangements.explicit_scenario`
(`load_explicit`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import torch

from ..errors import UsageError
from ._base import Dataset, from_uint8
from .embedded import stratified_holdout

DEFAULT_IMAGE_SIZE = 32
IMAGEFOLDER_TEST_FRACTION = 0.2
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
# PIL modes holding one channel; anything else is converted to RGB.
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


# ----------------------------------------------------------------------------- spec parsing

def parse_path_spec(text: str, allowed: tuple[str, ...] = ("size",)) -> tuple[Path, dict[str, str]]:
    """`PATH?key=value&...` -> (expanded path, options); unknown options are a UsageError."""
    path, options = text, {}
    if "?" in text:
        head, _, query = text.rpartition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        if pairs and "=" in query:
            path, options = head, dict(pairs)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} in {text!r}; allowed: {', '.join(allowed)}")
    if not path:
        raise UsageError(f"no path in {text!r}; write e.g. imagefolder:/data/pets")
    return Path(path).expanduser(), options


def image_size_option(options: dict[str, str], default: int | None) -> int | None:
    """The `size=N` option of a user dataset (1..4096 pixels), or `default` when not given."""
    if "size" not in options:
        return default
    try:
        size = int(options["size"])
    except ValueError:
        size = 0
    if not 1 <= size <= 4096:
        raise UsageError(f"size={options['size']!r} must be an integer pixel count in 1..4096")
    return size


# ----------------------------------------------------------------------------- one split

@dataclass
class Part:
    """One labelled split as loaded from disk, before normalisation.

    `x` is uint8 images (NHW, NHWC or NCHW) when `kind == "image"`, or float64 `[N, D]`
    when `kind == "feature"`; `y` is int64 class ids, or strings (class names).
    """

    x: np.ndarray
    y: np.ndarray
    kind: str
    source: str


def _images_to_uint8(x: np.ndarray, source: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise UsageError(f"float images in {source} must lie in [0, 1] (found {lo:g}..{hi:g}); "
                             "rescale them or save them as uint8")
        return np.rint(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise UsageError(f"integer images in {source} must lie in 0..255 (found {lo}..{hi})")
        return x.astype(np.uint8)
    raise UsageError(f"images in {source} have dtype {x.dtype}; use uint8 or floats in [0, 1]")


def make_part(x, y, source: str) -> Part:
    """Validate arrays into a `Part`: 2-D -> features, 3-D/4-D -> images."""
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1:
        raise UsageError(f"labels in {source} must be 1-D, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise UsageError(f"{source} holds {x.shape[0]} samples but {y.shape[0]} labels")
    if y.dtype.kind in "US":
        y = y.astype(str)
    elif y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        y = y.astype(np.int64)
        if y.size and y.min() < 0:
            raise UsageError(f"labels in {source} must be class ids >= 0 (found {y.min()})")
    else:
        raise UsageError(f"labels in {source} have dtype {y.dtype}; use integer ids or strings")
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.number):
            raise UsageError(f"features in {source} have dtype {x.dtype}; use numbers")
        xf = x.astype(np.float64)
        if not np.isfinite(xf).all():
            raise UsageError(f"features in {source} contain NaN or infinity")
        return Part(xf, y, "feature", source)
    if x.ndim in (3, 4):
        return Part(_images_to_uint8(x, source), y, "image", source)
    raise UsageError(f"x in {source} has shape {x.shape}; use images (NHW, NHWC, NCHW) or "
                     "features [N, D]")


def encode_labels(parts: list[Part]) -> tuple[list[np.ndarray], tuple[str, ...], int]:
    """Integer ids for every part, the class names and the class count.

    String labels take their ids from their order of first appearance part by part, each
    part's new names sorted: with one part it is plain sorted order (as ImageFolder does);
    with (train, update, test) the classes M1 saw come first, so old classes are a prefix.
    """
    kinds = {p.y.dtype.kind == "U" for p in parts}
    if len(kinds) > 1:
        raise UsageError("labels mix strings and integer ids across "
                         + ", ".join(p.source for p in parts) + "; use one kind")
    if kinds == {True}:
        names: list[str] = []
        for p in parts:
            seen = set(names)
            names += sorted(set(np.unique(p.y).tolist()) - seen)
        if len(names) < 2:
            raise UsageError(f"labels in {', '.join(p.source for p in parts)} hold {len(names)} class; "
                             "an update needs at least two classes")
        index = {n: i for i, n in enumerate(names)}
        ids = []
        for p in parts:
            uniq, inverse = np.unique(p.y, return_inverse=True)
            ids.append(np.array([index[u] for u in uniq], dtype=np.int64)[inverse.reshape(-1)])
        return ids, tuple(names), len(names)
    ids = np.unique(np.concatenate([p.y for p in parts])) if parts else np.zeros(0, np.int64)
    sources = ", ".join(p.source for p in parts)
    if ids.size and (ids[0] != 0 or ids[-1] != ids.size - 1):
        shown = ", ".join(map(str, ids[:4].tolist())) + (", ..." if ids.size > 4 else "")
        raise UsageError(f"integer labels in {sources} must be the class ids 0..C-1 with none skipped; found "
                         f"{ids.size} distinct ids ({shown}; largest {int(ids[-1])}): renumber them 0..{ids.size - 1}, "
                         "or store them as strings (class names)")
    num = int(ids.size)
    if num < 2:
        raise UsageError(f"labels in {sources} hold {num} class; an update needs at least two classes")
    return [p.y for p in parts], tuple(str(i) for i in range(num)), num


def features_dataset(name: str, x_train: np.ndarray, y_train, x_test: np.ndarray, y_test,
                     num_classes: int, class_names: tuple[str, ...]) -> Dataset:
    """Feature vectors [N, D] -> `Dataset` of [N, 1, 1, D], each feature standardised with
    the training pool's mean and std (std of a constant feature taken as 1)."""
    xtr = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    xte = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    mean = xtr.mean(dim=0, keepdim=True)
    std = xtr.std(dim=0, keepdim=True) if xtr.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    shape = lambda t: ((t - mean) / std).reshape(t.shape[0], 1, 1, t.shape[1])  # noqa: E731
    return Dataset(name, shape(xtr), torch.as_tensor(np.asarray(y_train), dtype=torch.int64),
                   shape(xte), torch.as_tensor(np.asarray(y_test), dtype=torch.int64),
                   num_classes, class_names)


def assemble(name: str, train: Part, test: Part, ids: list[np.ndarray],
             class_names: tuple[str, ...], num_classes: int) -> Dataset:
    """Normalise a (training pool, test) pair of parts into a `Dataset`."""
    if train.kind != test.kind:
        raise UsageError(f"{train.source} holds {train.kind}s but {test.source} {test.kind}s")
    if train.x.shape[1:] != test.x.shape[1:]:
        raise UsageError(f"sample shapes differ: {train.source} {train.x.shape[1:]}, "
                         f"{test.source} {test.x.shape[1:]}")
    if train.x.shape[0] == 0 or test.x.shape[0] == 0:
        empty = train.source if train.x.shape[0] == 0 else test.source
        raise UsageError(f"{empty} holds no samples")
    if train.kind == "feature":
        return features_dataset(name, train.x, ids[0], test.x, ids[1], num_classes, class_names)
    return from_uint8(name, train.x, ids[0], test.x, ids[1], num_classes=num_classes,
                      class_names=class_names)


# ----------------------------------------------------------------------------- images

def decode_images(sources: list, size: int | None, where: str) -> np.ndarray:
    """Decode images (file paths or encoded bytes) into one uint8 array.

    All grey -> `[N, H, W]` in mode L, else `[N, H, W, 3]` RGB. With `size`, every image is
    resized (bilinear) to size x size; without it, all must already share one size.
    Decoding is per file by nature; this runs once per load.
    """
    from PIL import Image, UnidentifiedImageError

    def open_(src):
        return Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)

    def name(i: int) -> str:
        src = sources[i]
        return str(src) if isinstance(src, (str, os.PathLike)) else f"image {i} of {where}"

    modes, sizes = [], set()
    for i, src in enumerate(sources):  # headers only: PIL opens lazily
        try:
            with open_(src) as im:
                modes.append(im.mode)
                sizes.add(im.size)
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"cannot decode {name(i)}: {e}") from e
    if size is None and len(sizes) > 1:
        raise UsageError(f"images in {where} have different sizes ({len(sizes)} kinds); add "
                         "?size=N to the spec to resize them all to N x N")
    mode = "L" if all(m in _GREY_MODES for m in modes) else "RGB"
    out = []
    for i, src in enumerate(sources):
        try:
            with open_(src) as im:
                im = im.convert(mode)
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                out.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"cannot decode {name(i)}: {e}") from e
    if not out:
        return np.zeros((0, size or 1, size or 1), dtype=np.uint8)
    return np.stack(out)


def scan_tree(directory: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(file paths, integer targets, class names) of one `<class>/*` tree, via torchvision's
    `ImageFolder` discovery (class folders sorted by name, its image extensions)."""
    from torchvision.datasets import ImageFolder

    if not directory.is_dir():
        raise UsageError(f"image folder {directory} does not exist or is not a directory")
    try:
        folder = ImageFolder(str(directory))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"{directory} is not an image-folder tree ({str(e).splitlines()[0]}); "
                         "expected <class>/<image> files") from e
    paths = [p for p, _ in folder.samples]
    targets = np.fromiter((t for _, t in folder.samples), dtype=np.int64, count=len(paths))
    return paths, targets, list(folder.classes)


def load_imagefolder(spec_path: str) -> Dataset:
    """Load `imagefolder:PATH[?size=N]` (see the module doc)."""
    root, options = parse_path_spec(spec_path)
    size = image_size_option(options, DEFAULT_IMAGE_SIZE)
    if not root.is_dir():
        raise UsageError(f"image folder {root} does not exist or is not a directory")
    name = f"imagefolder:{root}"
    if (root / "train").is_dir() and (root / "test").is_dir():
        tr_paths, tr_t, tr_cls = scan_tree(root / "train")
        te_paths, te_t, te_cls = scan_tree(root / "test")
        unknown = sorted(set(te_cls) - set(tr_cls))
        if unknown:
            raise UsageError(f"{root / 'test'} has classes missing from {root / 'train'}: "
                             + ", ".join(unknown[:5]))
        index = {c: i for i, c in enumerate(tr_cls)}
        te_t = np.array([index[c] for c in te_cls], dtype=np.int64)[te_t]
        images = decode_images(tr_paths + te_paths, size, str(root))
        n = len(tr_paths)
        x_tr, x_te, y_tr, y_te, classes = images[:n], images[n:], tr_t, te_t, tr_cls
    else:
        paths, targets, classes = scan_tree(root)
        train, test = stratified_holdout(targets, IMAGEFOLDER_TEST_FRACTION)
        images = decode_images(paths, size, str(root))
        x_tr, x_te, y_tr, y_te = images[train], images[test], targets[train], targets[test]
    if len(y_tr) == 0 or len(y_te) == 0:
        raise UsageError(f"{root} has too few images for a train and a test split")
    return from_uint8(name, x_tr, y_tr, x_te, y_te, num_classes=len(classes),
                      class_names=tuple(classes))


# ----------------------------------------------------------------------------- arrays

def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise UsageError(f"{path} has no {missing[0]!r} array (found: "
                                 f"{', '.join(z.files) or 'none'}); it needs {', '.join(keys)}")
            return {k: z[k] for k in keys}
    except UsageError:
        raise
    except (OSError, ValueError) as e:  # not a zip, or object arrays needing pickle
        raise UsageError(f"cannot read {path} as an .npz of plain arrays: "
                         f"{str(e).splitlines()[0]}") from e


def _read_parquet_parts(path: Path, size: int | None, need_split: bool) -> dict[str, Part]:
    """Parquet rows -> one `Part` per split value (or one part `all` when not `need_split`)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError on a bad file
        raise UsageError(f"cannot read {path} as Parquet: {str(e).splitlines()[0]}") from e
    cols = table.column_names
    required = ["label"] + (["split"] if need_split else [])
    for col in required:
        if col not in cols:
            raise UsageError(f"{path} has no {col!r} column (found: {', '.join(cols)}); it needs "
                             + ", ".join(required) + " and an 'image' column or feature columns")
    labels = table.column("label").to_numpy(zero_copy_only=False)
    if labels.dtype == object:
        labels = labels.astype(str)
    if need_split:
        split = np.char.lower(np.char.strip(table.column("split").to_numpy(zero_copy_only=False)
                                            .astype(str)))
        bad = sorted(set(np.unique(split).tolist()) - {"train", "test"})
        if bad:
            raise UsageError(f"{path}: 'split' must be 'train' or 'test' (found {bad[0]!r})")
        groups = {s: np.flatnonzero(split == s) for s in ("train", "test")}
    else:
        groups = {"all": np.arange(len(labels))}
    if "image" in cols:
        cells = table.column("image").to_pylist()
        # Hugging Face stores images as {"bytes": ..., "path": ...} structs.
        blobs = [c["bytes"] if isinstance(c, dict) else c for c in cells]
        if any(not isinstance(b, (bytes, bytearray)) for b in blobs):
            raise UsageError(f"{path}: the 'image' column must hold encoded image bytes (PNG/JPEG)")
        x = decode_images(blobs, size, str(path))
    else:
        feats = [c for c in cols if c not in ("label", "split")]
        if not feats:
            raise UsageError(f"{path} has neither an 'image' column nor feature columns")
        try:
            x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                 for c in feats])
        except (ValueError, TypeError) as e:
            raise UsageError(f"{path}: feature columns must be numeric ({e})") from e
    return {s: make_part(x[rows], labels[rows], f"{path} ({s})") for s, rows in groups.items()}


def load_arrays(spec_path: str) -> Dataset:
    """Load `arrays:PATH[?size=N]`: an `.npz` or a Parquet file (see the module doc)."""
    path, options = parse_path_spec(spec_path)
    size = image_size_option(options, None)
    if not path.is_file():
        raise UsageError(f"array file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        parts = _read_parquet_parts(path, size, need_split=True)
        train, test = parts["train"], parts["test"]
    else:
        arrays = _read_npz(path, ARRAY_KEYS)
        train = make_part(arrays["x_train"], arrays["y_train"], f"{path} (x_train)")
        test = make_part(arrays["x_test"], arrays["y_test"], f"{path} (x_test)")
    ids, names, num = encode_labels([train, test])
    return assemble(f"arrays:{path}", train, test, ids, names, num)


# ----------------------------------------------------------------------------- explicit

def _strip_prefix(text: str) -> str:
    for prefix in ("arrays:", "imagefolder:"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def load_part(text: str) -> Part:
    """One explicit split: an `.npz` with `x` and `y`, a Parquet file with `label` (+ image
    or feature columns), or a `<class>/*` image tree; `arrays:`/`imagefolder:` prefixes and
    a `?size=N` option are accepted."""
    path, options = parse_path_spec(_strip_prefix(text))
    if path.is_dir():
        paths, targets, classes = scan_tree(path)
        size = image_size_option(options, DEFAULT_IMAGE_SIZE)
        x = decode_images(paths, size, str(path))
        return make_part(x, np.asarray(classes)[targets], str(path))
    if not path.is_file():
        raise UsageError(f"{path} does not exist (expected an .npz, a .parquet or an image folder)")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet_parts(path, image_size_option(options, None), need_split=False)["all"]
    arrays = _read_npz(path, ("x", "y"))
    return make_part(arrays["x"], arrays["y"], str(path))


def load_explicit(train_path: str, update_path: str, test_path: str, val_path: str | None = None
                  ) -> tuple[Dataset, int, int, int, int]:
    """Load three (or, with a validation split, four) explicit splits; returns
    (dataset, n_train, n_update, n_val, num_old_classes).

    The dataset's pool is D_train, then D_update, then the validation split (if given),
    normalised with the pool's
    statistics. When all three are image trees they are decoded together so they share
    one colour mode and size (a `?size=N` on any of them applies to all). num_old_classes is the number of classes D_train covers as a
    prefix: len(D_train's class names) for named classes (listed first), else max id + 1.
    """
    texts = (train_path, update_path, test_path) + ((val_path,) if val_path else ())
    dirs = [parse_path_spec(_strip_prefix(t)) for t in texts]
    if all(p.is_dir() for p, _ in dirs):
        sizes = {image_size_option(opts, DEFAULT_IMAGE_SIZE) for _, opts in dirs if "size" in opts}
        if len(sizes) > 1:
            raise UsageError(f"the explicit image folders ask for different sizes {sorted(sizes)}; "
                             "give one ?size=N")
        size = sizes.pop() if sizes else DEFAULT_IMAGE_SIZE
        scans = [scan_tree(p) for p, _ in dirs]
        images = decode_images([f for s in scans for f in s[0]], size, "the explicit image folders")
        bounds = np.cumsum([0] + [len(s[0]) for s in scans])
        parts = [make_part(images[bounds[i]:bounds[i + 1]], np.asarray(s[2])[s[1]], str(dirs[i][0]))
                 for i, s in enumerate(scans)]
    else:
        parts = [load_part(t) for t in texts]
    train, update, test = parts[:3]
    val = parts[3] if len(parts) > 3 else None
    if train.kind != update.kind or train.x.shape[1:] != update.x.shape[1:]:
        raise UsageError(f"D_train ({train.source}: {train.kind}s {train.x.shape[1:]}) and D_update "
                         f"({update.source}: {update.kind}s {update.x.shape[1:]}) do not match")
    if train.x.shape[0] == 0 or update.x.shape[0] == 0:
        raise UsageError(f"{train.source if train.x.shape[0] == 0 else update.source} holds no samples")
    if val is not None and (val.kind != train.kind or val.x.shape[1:] != train.x.shape[1:] or val.x.shape[0] == 0):
        raise UsageError(f"the validation split {val.source} does not match D_train or holds no samples")
    ids, names, num = encode_labels(parts)
    members = [train, update] + ([val] if val is not None else [])
    pool = Part(np.concatenate([m.x for m in members]), np.concatenate([m.y for m in members]),
                train.kind, " + ".join(m.source for m in members))
    pool_ids = np.concatenate([ids[0], ids[1]] + ([ids[3]] if val is not None else []))
    dataset = assemble("explicit", pool, test, [pool_ids, ids[2]], names, num)
    if train.y.dtype.kind == "U":
        num_old = len(np.unique(train.y))
    else:
        num_old = int(ids[0].max()) + 1
    return dataset, train.x.shape[0], update.x.shape[0], 0 if val is None else val.x.shape[0], num_old
