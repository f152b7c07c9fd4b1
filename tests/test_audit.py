"""The flip audit (`flipsearch.audit`, `flipsearch compare`) on two really trained digits models."""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from audit_fixtures import trained_pair
from flipsearch.audit import (FLIP_COLUMNS, Rate, compare, flip_audit, pixel_range, split_tensors, to_pixels,
                              write_audit)
from flipsearch.cli import main
from flipsearch.errors import UsageError
from flipsearch.metrics import compute_metrics
from flipsearch.train import predict_logits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair():
    return trained_pair("exclusive-op")


@pytest.fixture(scope="module")
def audit(pair):
    ds = pair.scenario.dataset
    return flip_audit(pair.old, pair.new, ds.x_test, ds.y_test, class_names=ds.class_names)


def _by_hand(pair, x, y):
    """Predictions and flip masks with plain numpy, independent of flipsearch.audit."""
    lo, ln = predict_logits(pair.old, x).numpy(), predict_logits(pair.new, x).numpy()
    y = y.numpy()
    p1, p2 = lo.argmax(1), ln.argmax(1)
    return SimpleNamespace(y=y, lo=lo, ln=ln, p1=p1, p2=p2, neg=(p1 == y) & (p2 != y), pos=(p1 != y) & (p2 == y))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def test_counts_and_denominators_match_a_hand_computation(pair, audit):
    ds = pair.scenario.dataset
    h = _by_hand(pair, ds.x_test, ds.y_test)
    n, p1_right, p2_wrong = h.y.size, int((h.p1 == h.y).sum()), int((h.p2 != h.y).sum())
    assert h.neg.sum() > 0 and h.pos.sum() > 0  # the models really disagree
    m = audit.metrics
    assert (m["nfr"].count, m["nfr"].denominator) == (h.neg.sum(), n)
    assert (m["br"].count, m["br"].denominator) == (h.neg.sum(), p1_right)
    assert (m["pfr"].count, m["pfr"].denominator) == (h.pos.sum(), n)
    assert (m["btc"].count, m["btc"].denominator) == (((h.p1 == h.y) & (h.p2 == h.y)).sum(), p1_right)
    assert (m["bec"].count, m["bec"].denominator) == (((h.p1 != h.y) & (h.p2 != h.y)).sum(), p2_wrong)
    assert m["n_negative_flips"] == h.neg.sum() and m["n"] == n
    assert m["nfr"].value == h.neg.sum() / n
    assert m["nfr"].to_json() == {"value": h.neg.sum() / n, "count": int(h.neg.sum()), "denominator": n}

    expected = compute_metrics(h.y, h.p1, h.p2)
    got = audit.metric_values()
    assert list(got) == list(expected)
    assert all(_same(got[k], expected[k]) for k in expected), {k: (got[k], expected[k]) for k in expected}


def test_flip_matrix_per_class_and_flips_table(pair, audit):
    ds = pair.scenario.dataset
    h = _by_hand(pair, ds.x_test, ds.y_test)
    fm = np.zeros((10, 10), dtype=int)
    for i in np.flatnonzero(h.neg):
        fm[h.y[i], h.p2[i]] += 1
    assert (audit.flip_matrix == fm).all() and audit.flip_matrix.sum() == h.neg.sum()
    assert (audit.per_class["n_negative_flips"].to_numpy() == np.bincount(h.y[h.neg], minlength=10)).all()
    right = np.bincount(h.y[h.p1 == h.y], minlength=10)
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.allclose(audit.per_class["br"], np.bincount(h.y[h.neg], minlength=10) / right, equal_nan=True)
    assert audit.top_cells(1)[0][2] == fm.max()

    f = audit.flips
    assert list(f.columns) == list(FLIP_COLUMNS)
    assert len(f) == h.neg.sum() + h.pos.sum()
    neg = f[f["kind"] == "negative"]
    assert sorted(neg["sample_index"]) == list(np.flatnonzero(h.neg))
    assert sorted(f.loc[f["kind"] == "positive", "sample_index"]) == list(np.flatnonzero(h.pos))
    idx = f["sample_index"].to_numpy()
    assert (f["label"].to_numpy() == h.y[idx]).all() and (f["new_pred"].to_numpy() == h.p2[idx]).all()
    assert (f["label_name"] == [ds.class_names[c] for c in h.y[idx]]).all()
    po, pn = _softmax(h.lo), _softmax(h.ln)
    assert np.allclose(f["old_p_pred"], po[idx, h.p1[idx]], atol=1e-5)
    assert np.allclose(f["new_p_true"], pn[idx, h.y[idx]], atol=1e-5)
    assert (neg["old_pred"] == neg["label"]).all() and (neg["new_pred"] != neg["label"]).all()


def test_write_audit_files_duckdb_and_offline_page(pair, audit, tmp_path):
    import duckdb

    ds = pair.scenario.dataset
    paths = write_audit(audit, tmp_path, ds.x_test, value_range=pixel_range(ds.x_train), gallery_limit=5)
    assert set(paths) == {"index.html", "audit.json", "flips.parquet"}
    pq = paths["flips.parquet"]
    n_flips = len(audit.flips)
    assert duckdb.sql(f"select count(*) from '{pq}'").fetchall()[0][0] == n_flips
    labels = pd.DataFrame({"sample_index": np.arange(audit.n), "y": ds.y_test.numpy()})  # noqa: F841 - used in SQL
    joined = duckdb.sql(f"select count(*) from '{pq}' f join labels l using (sample_index) where f.label = l.y "
                        "and (f.kind = 'negative') = (f.old_pred = l.y and f.new_pred <> l.y)").fetchall()[0][0]
    assert joined == n_flips
    assert duckdb.sql(f"select count(*) from '{pq}' where kind = 'negative'").fetchall()[0][0] \
        == audit.metrics["n_negative_flips"]

    doc = json.loads(Path(paths["audit.json"]).read_text(),
                     parse_constant=lambda c: pytest.fail(f"audit.json holds {c}"))
    assert doc["metrics"]["nfr"] == audit.metrics["nfr"].to_json()
    assert doc["metrics"]["br"]["denominator"] == int((audit.old.pred == audit.y).sum())
    assert np.array(doc["flip_matrix"]["counts"]).sum() == audit.metrics["n_negative_flips"]

    page = Path(paths["index.html"]).read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    n_neg, n_pos = audit.metrics["n_negative_flips"], audit.metrics["n_positive_flips"]
    assert page.count("data:image/png;base64,") == min(n_neg, 5) + min(n_pos, 5)
    assert page.count('loading="lazy"') == min(n_neg, 5) + min(n_pos, 5)
    assert f"{n_pos - 5} more not shown" in page and "<details>" in page
    assert f"Negative flips ({n_neg})" in page


def test_to_pixels_inverts_the_normalisation_exactly(pair):
    """Digits pixels 0..16 became uint8 0..255, then were standardised: min/max of the
    training pool map them back to the very uint8 values."""
    from sklearn.datasets import load_digits

    from flipsearch.data import stratified_holdout

    ds = pair.scenario.dataset
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    _, test = stratified_holdout(bunch.target, 0.3)
    px = to_pixels(ds.x_test, pixel_range(ds.x_train))
    assert px.shape == (len(test), 8, 8, 1) and px.dtype == np.uint8
    assert (px[..., 0] == images[test]).all()


def test_class_incremental_old_model_with_five_outputs(tmp_path):
    pair = trained_pair("class-incremental")
    ds = pair.scenario.dataset
    audit = compare(pair.old_path, pair.new_path, "digits", out=tmp_path)
    assert audit.old.num_outputs == 5 and audit.new.num_outputs == 10 and audit.old_num_classes == 5
    h = _by_hand(pair, ds.x_test, ds.y_test)
    expected = compute_metrics(h.y, h.p1, h.p2, old_class_mask=h.y < 5)
    got = audit.metric_values()
    assert list(got) == list(expected) and "nfr_old_classes" in got
    assert all(_same(got[k], expected[k]) for k in expected)
    assert audit.metrics["nfr_old_classes"].denominator == int((h.y < 5).sum())
    assert audit.metrics["n_negative_flips_old_classes"] == audit.metrics["n_negative_flips"] > 0
    f = audit.flips
    assert (f.loc[f["kind"] == "negative", "label"] < 5).all()
    new_cls = f[f["label"] >= 5]
    assert len(new_cls) > 0 and (new_cls["old_p_true"] == 0).all()  # M1 has no output for those classes
    assert "old classes (0..4" in audit.summary()
    assert (tmp_path / "index.html").read_text().count("old classes 0..4") == 1


def test_critical_mask_and_classes(pair, tmp_path):
    ds = pair.scenario.dataset
    mask = np.zeros(len(ds.y_test), dtype=bool)
    mask[::3] = True
    audit = flip_audit(pair.old, pair.new, ds.x_test, ds.y_test, class_names=ds.class_names, critical_mask=mask)
    h = _by_hand(pair, ds.x_test, ds.y_test)
    expected = compute_metrics(h.y, h.p1, h.p2, critical_mask=mask)
    assert all(_same(audit.metric_values()[k], expected[k]) for k in expected)
    assert audit.metrics["critical_nfr"].count == (h.neg & mask).sum()
    assert audit.metrics["critical_nfr"].denominator == mask.sum()
    assert (audit.flips["critical"].to_numpy() == mask[audit.flips["sample_index"].to_numpy()]).all()

    np.save(tmp_path / "mask.npy", mask)
    via_file = compare(pair.old_path, pair.new_path, "digits", critical_mask=str(tmp_path / "mask.npy"))
    assert via_file.metrics["critical_nfr"] == audit.metrics["critical_nfr"]
    by_class = compare(pair.old_path, pair.new_path, "digits", critical_classes=(3, 8))
    assert by_class.critical_classes == (3, 8)
    assert by_class.metrics["critical_n"] == int(np.isin(h.y, [3, 8]).sum())
    np.save(tmp_path / "short.npy", mask[:10])
    with pytest.raises(UsageError, match="critical mask has 10 entries but the test split has 539"):
        compare(pair.old_path, pair.new_path, "digits", critical_mask=str(tmp_path / "short.npy"))


def test_splits(pair):
    sc = pair.scenario
    update = compare(pair.old_path, pair.new_path, "digits", split="update", arrangement="exclusive-op", seed=0)
    assert update.n == len(sc.y_update) and (update.y == sc.y_update.numpy()).all()
    assert compare(pair.old_path, pair.new_path, "digits", split="train").n == len(sc.y_train)
    x, y = torch.zeros(4, 1, 8, 8), torch.arange(4)
    assert split_tensors(SimpleNamespace(x_val=x, y_val=y), "val") == (x, y)
    with pytest.raises(UsageError, match="split 'val' needs a scenario with a validation set"):
        split_tensors(SimpleNamespace(x_test=x, y_test=y), "val")
    with pytest.raises(UsageError, match="unknown split 'holdout'"):
        split_tensors(sc, "holdout")
    with pytest.raises(UsageError, match="split 'update' needs an arrangement"):
        split_tensors(sc.dataset, "update")


def test_rate_zero_denominator_is_nan_and_json_null():
    r = Rate(0, 0)
    assert math.isnan(r.value) and r.to_json() == {"value": None, "count": 0, "denominator": 0}


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_end_to_end(pair, tmp_path, capsys, monkeypatch):
    out = tmp_path / "audit"
    code, stdout, err = _run(["compare", "--old", pair.old_path, "--new", pair.new_path, "--dataset", "digits",
                              "--critical-classes", "3,8", "--out", str(out)], capsys)
    assert code == 0, err
    assert all((out / name).is_file() for name in ("index.html", "audit.json", "flips.parquet"))
    assert "NFR" in stdout and "critical (" in stdout and "top negative flips" in stdout
    nfr = json.loads((out / "audit.json").read_text())["metrics"]["nfr"]
    assert f"NFR {nfr['value'] * 100:.2f} % ({nfr['count']} / {nfr['denominator']})" in stdout

    monkeypatch.chdir(tmp_path)
    code, stdout, err = _run(["compare", "--old", pair.old_path, "--new", pair.new_path, "--dataset", "digits",
                              "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["metrics"]["nfr"] == nfr and doc["split"] == "test" and doc["model"] == "small"
    assert Path(doc["files"]["index.html"]).is_file()
    assert (tmp_path / "compare-m1-m2" / "flips.parquet").is_file()


def _bad_files(tmp_path, pair):
    torch.save(torch.nn.Linear(2, 3), tmp_path / "whole-module.pt")  # a pickled module, not a state_dict
    with open(tmp_path / "object.pkl", "wb") as fh:
        pickle.dump({"weights": SimpleNamespace(a=1)}, fh, protocol=4)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "truncated.pt").write_bytes(Path(pair.old_path).read_bytes()[:200])
    np.save(tmp_path / "mask.npy", np.ones(3, dtype=bool))


BAD = [
    ("missing-file", ["--old", "{tmp}/nope.pt"], "old checkpoint '{tmp}/nope.pt' does not exist"),
    ("whole-module", ["--old", "{tmp}/whole-module.pt"], "torch.load(weights_only=True) refuses it"),
    ("protocol-4-pickle", ["--new", "{tmp}/object.pkl"], "refuses it: not a plain state_dict"),
    ("junk", ["--old", "{tmp}/junk.pt"], "not a torch checkpoint (neither torch.save's zip archive nor a pickle)"),
    ("truncated", ["--new", "{tmp}/truncated.pt"], "cannot load new checkpoint '{tmp}/truncated.pt': cannot read it"),
    ("shape-mismatch", ["--model", "cnn8"], "does not fit model 'cnn8' with 10 outputs for 1x8x8 inputs"),
    ("unknown-split", ["--split", "holdout"], "unknown split 'holdout'"),
    ("unknown-arrangement", ["--split", "update", "--arrangement", "sideways"], "unknown arrangement 'sideways'"),
    ("critical-out-of-range", ["--critical-classes", "42"], "critical classes [42] do not exist"),
    ("critical-syntax", ["--critical-classes", "3,x"], "--critical-classes expects"),
    ("mask-length", ["--critical-mask", "{tmp}/mask.npy"], "critical mask has 3 entries"),
    ("mask-and-classes", ["--critical-mask", "{tmp}/mask.npy", "--critical-classes", "3"], "not both"),
    ("unknown-dataset", ["--dataset", "mnist-ultra"], "unknown dataset 'mnist-ultra'"),
]


@pytest.mark.parametrize("case,extra,fragment", BAD, ids=[b[0] for b in BAD])
def test_cli_bad_input_is_one_line_exit_2(pair, tmp_path, capsys, case, extra, fragment):
    _bad_files(tmp_path, pair)
    sub = lambda s: s.replace("{tmp}", str(tmp_path))  # noqa: E731
    args = {"--old": pair.old_path, "--new": pair.new_path, "--dataset": "digits", "--out": str(tmp_path / "out")}
    extra = [sub(a) for a in extra]
    for flag in ("--old", "--new", "--dataset"):
        if flag in extra:
            args.pop(flag)
    argv = ["compare"] + [t for kv in args.items() for t in kv] + extra
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = _run(argv, capsys)
    assert code == 2, (err, stdout)
    assert err.count("\n") == 1 and err.startswith("flipsearch: error: ") and sub(fragment) in err, err
    assert not (tmp_path / "out").exists()
    assert not [w for w in caught if issubclass(w.category, UserWarning) and "pickle" in str(w.message)]


def test_thumbnails_grey_and_rgb_are_upscaled_pngs():
    import io

    from PIL import Image

    from flipsearch.audit import thumbnail_png

    grey = Image.open(io.BytesIO(thumbnail_png(np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 4)))
    assert grey.mode == "L" and grey.size == (64, 64)
    assert np.asarray(grey)[0, :8].tolist() == [0] * 8  # nearest neighbour: 8x8 blocks of one pixel
    rgb = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    img = Image.open(io.BytesIO(thumbnail_png(rgb)))
    assert img.mode == "RGB" and img.size == (64, 64) and (np.asarray(img)[::2, ::2] == rgb).all()
    assert (to_pixels(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())[0] == rgb).all()  # uint8 as is


def test_many_classes_matrix_shows_only_classes_in_a_flip():
    """With more than 24 classes the page's matrix keeps the rows and columns that hold a flip."""
    from flipsearch.audit import render_html

    torch.manual_seed(0)
    x, y = torch.randn(400, 1, 1, 16), torch.randint(0, 30, (400,))
    old = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 30))
    new = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 30))
    audit = flip_audit(old, new, x, y, class_names=[f"class-{c}" for c in range(30)])
    fm = audit.flip_matrix
    assert fm.sum() == audit.metrics["n_negative_flips"] > 0
    page = render_html(audit, {})
    rows, cols = int((fm.sum(1) > 0).sum()), int((fm.sum(0) > 0).sum())
    assert f"Only the {rows} true and {cols} predicted classes that take part in a negative flip" in page
    table = page[page.index('id="flip-matrix-table"'):page.index("</table>", page.index('id="flip-matrix-table"'))]
    assert table.count("<tr>") == 1 + rows + 1  # header, one per row class, totals
