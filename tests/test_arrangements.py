"""Arrangements: exact sizes, disjointness / inclusion, stratification, determinism, the
class-incremental layout, `describe`, and explicit scenarios from three user files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flipsearch.arrangements import ARRANGEMENTS, Scenario, describe, explicit_scenario, make_scenario
from flipsearch.data import Dataset, class_quotas, round_half_up
from flipsearch.errors import UsageError

# Uneven class sizes, so rounding remainders must be distributed to hit exact totals.
CLASS_SIZES = [13, 7, 22, 9, 31, 5, 17, 11, 8, 26]
RATIOS = {"exclusive-op": (1 / 5, True), "exclusive-dev": (4 / 5, True),
          "inclusive-1-5": (1 / 5, False), "inclusive-4-5": (4 / 5, False)}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(10), CLASS_SIZES)
    rng.shuffle(y)
    y_test = np.arange(40) % 10
    x = torch.randn(y.size, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x_test = torch.randn(40, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return Dataset("toy", x, torch.from_numpy(y), x_test, torch.from_numpy(y_test), 10)


def _set(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


@pytest.mark.parametrize("arrangement", list(RATIOS))
def test_sizes_relation_and_index_format(dataset, arrangement):
    share, disjoint = RATIOS[arrangement]
    n = dataset.y_train.numel()
    s = make_scenario(dataset, arrangement, seed=7, val_fraction=0)
    assert isinstance(s, Scenario) and s.arrangement == arrangement and s.seed == 7
    for idx in (s.train_idx, s.update_idx):
        assert idx.dtype == torch.int64 and torch.equal(idx, idx.sort().values)
        assert idx.unique().numel() == idx.numel()
    assert s.train_idx.numel() == round_half_up(share * n)  # 149 samples: 30 and 119
    pool = set(range(n))
    if disjoint:
        assert s.update_idx.numel() == n - s.train_idx.numel()
        assert not _set(s.train_idx) & _set(s.update_idx)
        assert _set(s.train_idx) | _set(s.update_idx) == pool
    else:
        assert _set(s.update_idx) == pool and _set(s.train_idx) < pool
        assert s.x_update is dataset.x_train  # the whole pool is not copied
    assert s.num_old_classes == s.num_classes == 10
    assert bool(s.old_class_test_mask.all())
    assert torch.equal(s.x_train, dataset.x_train[s.train_idx])
    assert torch.equal(s.y_update, dataset.y_train[s.update_idx])


@pytest.mark.parametrize("arrangement", list(RATIOS))
def test_stratified_by_class(dataset, arrangement):
    share, _ = RATIOS[arrangement]
    s = make_scenario(dataset, arrangement, seed=3, val_fraction=0)
    per_class = torch.bincount(s.y_train, minlength=10).numpy()
    ideal = share * np.array(CLASS_SIZES)
    # each class gives floor or ceil of its exact share, and the total is exact
    assert np.all((per_class == np.floor(ideal)) | (per_class == np.ceil(ideal)))
    assert per_class.sum() == round_half_up(share * sum(CLASS_SIZES))


def test_deterministic_per_seed_and_different_across_seeds(dataset):
    for arrangement in RATIOS:
        a, b = make_scenario(dataset, arrangement, 11), make_scenario(dataset, arrangement, 11)
        assert torch.equal(a.train_idx, b.train_idx) and torch.equal(a.update_idx, b.update_idx)
        c = make_scenario(dataset, arrangement, 12)
        assert not torch.equal(a.train_idx, c.train_idx)
    # the global RNGs are neither used nor disturbed
    torch.manual_seed(0)
    np.random.seed(0)
    before = (torch.rand(1), np.random.rand())
    torch.manual_seed(0)
    np.random.seed(0)
    make_scenario(dataset, "exclusive-op", 5)
    assert (torch.rand(1), np.random.rand()) == before


def test_test_set_untouched(dataset):
    for arrangement in ARRANGEMENTS:
        s = make_scenario(dataset, arrangement, 1)
        assert s.x_test is dataset.x_test and s.y_test is dataset.y_test
        n = dataset.y_train.numel()
        assert int(s.train_idx.max()) < n and int(s.update_idx.max()) < n


def test_class_incremental_layout(dataset):
    s = make_scenario(dataset, "class-incremental", 0, val_fraction=0)
    assert s.num_old_classes == 5 and s.num_classes == 10
    old_pool = torch.nonzero(dataset.y_train < 5).flatten()
    assert torch.equal(s.train_idx, old_pool)  # every pool sample of classes 0..4
    assert s.y_train.max() < 5 and s.update_idx.numel() == dataset.y_train.numel()
    assert torch.equal(s.old_class_test_mask, dataset.y_test < 5)
    assert int(s.old_class_test_mask.sum()) == 20
    assert make_scenario(dataset, "class-incremental", 0, old_fraction=0.3).num_old_classes == 3
    assert make_scenario(dataset, "class-incremental", 0, old_fraction=0.85).num_old_classes == 9


def test_bad_inputs(dataset):
    with pytest.raises(UsageError) as e:
        make_scenario(dataset, "exclusive", 0)
    assert "exclusive-op" in str(e.value) and "class-incremental" in str(e.value)
    for frac in (0.0, 1.0, -0.2, 1.5, 0.01):  # 0.01 of 10 classes rounds to no old class
        with pytest.raises(UsageError):
            make_scenario(dataset, "class-incremental", 0, old_fraction=frac)
    for seed in (-1, 2**32, 1.5):
        with pytest.raises(UsageError):
            make_scenario(dataset, "exclusive-op", seed)


@pytest.mark.parametrize("arrangement", list(ARRANGEMENTS))
def test_validation_split_is_held_out_stratified_and_seeded(dataset, arrangement):
    n = dataset.y_train.numel()
    s = make_scenario(dataset, arrangement, seed=5, val_fraction=0.2)
    val, train, update = _set(s.val_idx), _set(s.train_idx), _set(s.update_idx)
    assert val and not val & train and not val & update          # no model ever trains on it
    assert val | train | update == set(range(n))
    share = RATIOS[arrangement][0] if arrangement in RATIOS else None
    update_share = 1 - share if arrangement in RATIOS and RATIOS[arrangement][1] else 1.0
    assert len(val) == round_half_up(0.2 * update_share * n)
    if arrangement in RATIOS:                                      # the ratio holds exactly on the rest
        assert len(train) == round_half_up(share * (n - len(val)))
    per_class = torch.bincount(s.y_val, minlength=10).numpy()      # stratified: every class, old and new
    ideal = len(val) * np.array(CLASS_SIZES) / n
    assert np.all(np.abs(per_class - ideal) < 1)
    assert torch.equal(make_scenario(dataset, arrangement, 5, val_fraction=0.2).val_idx, s.val_idx)
    assert not torch.equal(make_scenario(dataset, arrangement, 6, val_fraction=0.2).val_idx, s.val_idx)
    assert s.x_test is dataset.x_test and torch.equal(s.x_val, dataset.x_train[s.val_idx])


def test_class_quotas_exact_and_fair():
    counts = np.array(CLASS_SIZES)
    for n in (0, 1, 30, 75, 149):
        q = class_quotas(counts, n)
        assert q.sum() == n and np.all(np.abs(q - n * counts / counts.sum()) < 1)
        assert np.all(q <= counts)
    # equal remainders: ties go to the lower class id
    assert class_quotas(np.array([5, 5, 5]), 1).tolist() == [1, 0, 0]


def test_describe_is_json_and_consistent(dataset):
    s = make_scenario(dataset, "inclusive-1-5", 2, val_fraction=0)
    d = json.loads(json.dumps(describe(s)))
    assert d["sizes"] == {"pool": 149, "train": 30, "update": 149, "val": 0, "test": 40,
                          "train_and_update": 30, "test_old_classes": 40}
    assert d["nominal_ratio"] == "1:5" and d["ratio"] == pytest.approx(30 / 149, abs=1e-6)
    assert d["per_class"]["update"] == CLASS_SIZES and d["per_class"]["test"] == [4] * 10
    assert sum(d["per_class"]["train"]) == 30 and d["num_old_classes"] == d["num_classes"] == 10
    ci = describe(make_scenario(dataset, "class-incremental", 2))
    assert ci["num_old_classes"] == 5 and ci["per_class"]["train"][5:] == [0] * 5
    assert describe(make_scenario(dataset, "exclusive-dev", 2))["sizes"]["train_and_update"] == 0


def test_to_device_keeps_the_split(dataset):
    s = make_scenario(dataset, "exclusive-op", 4).to("cpu")
    assert isinstance(s, Scenario) and s.arrangement == "exclusive-op"
    assert torch.equal(s.y_train, dataset.y_train[s.train_idx])


def test_on_the_embedded_digits():
    from flipsearch.data import load_dataset

    d = load_dataset("digits")
    s = make_scenario(d, "exclusive-op", 0, val_fraction=0)
    assert (s.train_idx.numel(), s.update_idx.numel(), s.y_test.numel()) == (252, 1006, 539)
    s = make_scenario(d, "exclusive-op", 0)  # 10 % of D_update's 1006 set aside first: 101
    assert (s.train_idx.numel(), s.update_idx.numel(), s.val_idx.numel()) == (231, 926, 101)


# ----------------------------------------------------------------------------- explicit

def test_explicit_scenario_from_npz(tmp_path):
    rng = np.random.RandomState(0)
    parts = {}
    for name, n, classes in (("train", 6, 2), ("update", 9, 3), ("test", 4, 3)):
        x = rng.randint(0, 256, (n, 5, 5)).astype(np.uint8)
        y = np.arange(n) % classes
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
        parts[name] = (x, y)
    carved = explicit_scenario(str(tmp_path / "train.npz"), f"arrays:{tmp_path / 'update.npz'}",
                               str(tmp_path / "test.npz"))  # validation carved from D_update: 1 of 9
    assert carved.val_idx.numel() == 1 and carved.update_idx.numel() == 8
    assert not set(carved.val_idx.tolist()) & set(carved.update_idx.tolist()) and carved.val_idx.min() >= 6
    with_val = explicit_scenario(str(tmp_path / "train.npz"), str(tmp_path / "update.npz"),
                                 str(tmp_path / "test.npz"), val_path=str(tmp_path / "test.npz"))
    assert with_val.val_idx.tolist() == list(range(15, 19)) and with_val.y_val.tolist() == parts["test"][1].tolist()
    s = explicit_scenario(str(tmp_path / "train.npz"), f"arrays:{tmp_path / 'update.npz'}",
                          str(tmp_path / "test.npz"), val_fraction=0)
    assert s.arrangement == "explicit" and s.num_classes == 3
    assert s.num_old_classes == 2  # D_train holds classes 0 and 1 only
    assert s.train_idx.tolist() == list(range(6)) and s.update_idx.tolist() == list(range(6, 15))
    assert s.y_train.tolist() == parts["train"][1].tolist()
    assert s.y_update.tolist() == parts["update"][1].tolist()
    assert s.y_test.tolist() == parts["test"][1].tolist()
    # normalised with the statistics of the pool D_train + D_update
    pool = np.concatenate([parts["train"][0], parts["update"][0]]).astype(np.float64) / 255
    mean, std = pool.mean(), pool.std(ddof=1)
    expect = (parts["test"][0] / 255 - mean) / std
    assert np.allclose(s.x_test[:, 0].numpy(), expect, atol=1e-5)
    assert abs(float(s.dataset.x_train.mean())) < 1e-5


def test_explicit_scenario_from_image_folders(tmp_path):
    from PIL import Image

    def tree(root: Path, classes: list[str], n: int):
        for cls in classes:
            (root / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (9, 9), (i * 20, 0, 0)).save(root / cls / f"{i}.png")

    tree(tmp_path / "tr", ["zebra", "cat"], 2)
    tree(tmp_path / "up", ["ant", "cat", "zebra"], 3)
    tree(tmp_path / "te", ["ant", "cat", "zebra"], 1)
    s = explicit_scenario(str(tmp_path / "tr"), f"imagefolder:{tmp_path / 'up'}?size=8",
                          str(tmp_path / "te"), val_fraction=0)
    # D_train's classes first (sorted), then the new one: old classes are a prefix
    assert s.dataset.class_names == ("cat", "zebra", "ant") and s.num_old_classes == 2
    assert s.x_train.shape == (4, 3, 8, 8)  # one ?size applies to all three trees
    assert s.y_train.tolist() == [0, 0, 1, 1] and sorted(s.y_update.tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    assert s.old_class_test_mask.tolist() == (s.y_test < 2).tolist()
    assert int(s.old_class_test_mask.sum()) == 2


def test_explicit_scenario_errors(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(3))
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 6, 6), np.uint8), y=np.zeros(3))
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(UsageError) as e:
        explicit_scenario(str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), str(tmp_path / "a.npz"))
    assert "do not match" in str(e.value)
    with pytest.raises(UsageError) as e:
        explicit_scenario(str(tmp_path / "a.npz"), str(tmp_path / "noy.npz"), str(tmp_path / "a.npz"))
    assert "'y'" in str(e.value)
    with pytest.raises(UsageError):
        explicit_scenario(str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), str(tmp_path / "none.npz"))
