"""The flip audit's index.html in a real headless Chromium: renders offline, no console
errors, no horizontal overflow at 1280 px, gallery images decoded, plots not blank."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import browser
from audit_fixtures import trained_pair
from flipsearch.audit import flip_audit, pixel_range, write_audit

pytestmark = pytest.mark.slow

# Long class names (Fashion-MNIST's) on the digits labels: the layout must hold them at 1280 px.
LONG_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SHOTS = Path(os.environ.get("FLIPSEARCH_SHOTS", "/tmp/flipsearch-browser-shots"))


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    browser.require()
    pair = trained_pair("exclusive-op")
    ds = pair.scenario.dataset
    mask = (ds.y_test == 3) | (ds.y_test == 8)
    audit = flip_audit(pair.old, pair.new, ds.x_test, ds.y_test, class_names=LONG_NAMES, critical_mask=mask)
    assert audit.metrics["n_negative_flips"] > 0
    audit.meta["title"] = "m1.pt → m2.pt on digits test (Fashion-MNIST class names)"
    out = tmp_path_factory.mktemp("audit-page")
    write_audit(audit, out, ds.x_test, value_range=pixel_range(ds.x_train), gallery_limit=40)
    return out / "index.html", audit


def test_audit_page_in_chromium(page_path):
    path, audit = page_path
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser.open_page(path, width=1280) as (page, errors):
        assert browser.no_horizontal_overflow(page, 1280), f"scrollWidth {browser.scroll_width(page)} > 1280"
        widths = browser.load_lazy_images(page, "#gallery img, #positive img")
        shown = min(audit.metrics["n_negative_flips"], 40) + min(audit.metrics["n_positive_flips"], 40)
        assert len(widths) == shown and min(widths) > 0, widths
        assert browser.region_not_blank(page, "#gallery .grid", SHOTS / "gallery.png")
        assert browser.region_not_blank(page, "#flip-matrix-table", SHOTS / "flip-matrix.png")
        assert browser.region_not_blank(page, "#per-class-table", SHOTS / "per-class.png")
        assert browser.no_horizontal_overflow(page, 1280)  # still, with <details> open
        page.screenshot(path=str(SHOTS / "page.png"), full_page=True)
        assert errors == []


def test_pixel_variance_tells_blank_from_drawn():
    import io

    from PIL import Image, ImageDraw

    blank = Image.new("RGB", (40, 20), "white")
    buf = io.BytesIO()
    blank.save(buf, format="PNG")
    assert browser.pixel_variance(buf.getvalue()) == 0
    ImageDraw.Draw(blank).line((0, 0, 39, 19), fill="black")
    buf = io.BytesIO()
    blank.save(buf, format="PNG")
    assert browser.pixel_variance(buf.getvalue()) > 0
