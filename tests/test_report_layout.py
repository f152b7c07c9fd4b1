"""The report's page at a 1280 px window: the side-by-side flip matrices fit their cards,
even with Fashion-MNIST's long class names (headless Chromium, real flip re-runs on digits)."""

from __future__ import annotations

import dataclasses

import pytest

import browser
from flipsearch.report.build import build_report
from test_report import row, sweep_dir

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser.skip_reason() is not None,
                                                   reason=str(browser.skip_reason()))]

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def test_flip_matrices_fit_their_cards_at_1280_px(tmp_path):
    quick = {"m1_epochs": 2, "update_epochs": 2, "epochs": 2}
    out = sweep_dir(tmp_path, [dict(row("ce", 0.90, 0.02, trial=0), **quick),
                               dict(row("bct", 0.92, 0.01, trial=1, lambda_c=1.0), **quick)])
    rep = build_report(out, flips=True)
    flips = rep.scenarios[0].flips
    assert flips is not None and flips.ce is not None                     # both matrices are drawn
    for side in (flips.rec, flips.ce):                                    # ten long names, as Fashion-MNIST's
        side.audit = dataclasses.replace(side.audit, class_names=FASHION)
    rep.write(str(tmp_path / "report"))
    with browser.open_page(tmp_path / "report" / "index.html", width=1280) as (page, errors):
        boxes = page.evaluate("""() => [...document.querySelectorAll('.flipcol .scroll')].map(s =>
            ({scroll: s.scrollWidth, client: s.clientWidth, heads: s.querySelectorAll('thead th').length}))""")
        assert errors == []
        assert browser.no_horizontal_overflow(page, 1280)
    assert len(boxes) == 2 and all(b["heads"] == len(FASHION) + 2 for b in boxes)   # corner, 10 classes, Σ
    assert all(b["scroll"] <= b["client"] for b in boxes), boxes                     # nothing cut off
