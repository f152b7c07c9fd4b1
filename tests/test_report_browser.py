"""The sweep report's index.html in a real headless Chromium: no console errors, no
horizontal overflow at 1280 or 1400 px (the method × arrangement table fits and wraps its
hyperparameters), the plotly plots render, the flip gallery's images decode, and the
all-trials table sorts on a header click."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import browser
from flipsearch.report.build import build_report
from test_report import baseline_replicate, replicate, row, sweep_dir

pytestmark = pytest.mark.slow

SHOTS = Path(os.environ.get("FLIPSEARCH_SHOTS", "/tmp/flipsearch-browser-shots"))


def _short(r: dict) -> dict:
    """Two-epoch recipes, so the report's flip re-runs take seconds."""
    return dict(r, m1_epochs=2, update_epochs=2, epochs=1 if r["status"] == "stopped" else 2)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    browser.require()
    tmp = tmp_path_factory.mktemp("report-page")
    op = [row("ce", 0.90, 0.020, trial=0), row("bct", 0.92, 0.010, trial=1, lambda_c=1.0),
          row("bct", 0.92, 0.010, trial=2, lambda_c=1.3, variant="strict-imitation", dissonance_scale="batch"),
          row("bct", 0.95, 0.030, trial=3, lambda_c=0.2), row("bct", status="stopped", trial=4, lambda_c=3.0),
          row("bct", status="failed", trial=5, lambda_c=0.5)]
    ci = [row("bct", 0.96, 0.010, trial=0, arrangement="class-incremental", lambda_c=1.0),
          row("bct", 0.97, 0.020, trial=1, arrangement="class-incremental", lambda_c=0.4),
          row("ce", 0.95, 0.030, trial=2, arrangement="class-incremental")]
    for r in ci:
        r.update(accuracy_old=0.49, val_accuracy_old=0.49)           # M1 knows half the classes
    rows = [dict(_short(r), trial_uid=f"op{r['trial_number']}") for r in op] + \
           [dict(_short(r), trial_uid=f"ci{r['trial_number']}") for r in ci]
    rows += [_short(replicate(rows[3], 0, 0.94, 0.024)), _short(replicate(rows[3], 1, 0.95, 0.028)),
             _short(baseline_replicate("exclusive-op", 0, 0.91, 0.024)),
             _short(baseline_replicate("exclusive-op", 1, 0.89, 0.018))]
    out = sweep_dir(tmp, rows, constraints=["accuracy_new>=0.85"])
    steps = []
    rep = build_report(out, flips=True, progress=lambda step, done, total: steps.append((step, done, total)))
    rep.write(str(tmp / "report"))
    # the progress tells each flip re-run and its expected cost
    assert [s for s, _, _ in steps
            if s.startswith("flips digits__exclusive-op__small: re-running the recommendation and the ce baseline")]
    assert all(" s)" in s for s, _, _ in steps if s.startswith("flips ")) and steps[-1][1] == steps[-1][2]
    return tmp / "report" / "index.html", rep


def _sorted_column(page, table: str, col: int) -> list:
    return page.evaluate("""([sel, col]) => [...document.querySelector(sel).tBodies[0].rows].map(r => {
        const v = r.cells[col].getAttribute('data-v'); return v === null || v === '' ? null : parseFloat(v); })""",
                         [table, col])


def test_report_page_in_chromium(report_page):
    path, rep = report_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    flips = [s.flips for s in rep.scenarios]
    assert all(f is not None and f.error is None for f in flips), [f.error for f in flips]
    n_shown = sum(min(len(part), 60) for f in flips for part in ((f.both, f.only_rec, f.only_ce) if f.ce else
                                                                  (f.rec.negatives,)))
    for width in (1280, 1400):
        with browser.open_page(path, width=width) as (page, errors):
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
            assert browser.no_horizontal_overflow(page, width), f"scrollWidth {browser.scroll_width(page)} > {width}"
            fits = page.evaluate("""() => { const t = document.querySelector('#paper1-table');
                return [t.scrollWidth, t.parentElement.clientWidth,
                        [...t.querySelectorAll('td.hp')].every(c => c.scrollWidth <= c.clientWidth + 1)]; }""")
            assert fits[0] <= fits[1] and fits[2], f"method x arrangement table {fits} at {width} px"
            plots = page.locator(".js-plotly-plot")
            assert plots.count() == len(rep.scenarios) + 1              # a front per scenario + convergence
            for i in range(plots.count()):
                assert browser.region_not_blank(page, f"#{plots.nth(i).get_attribute('id')}",
                                                SHOTS / f"report-plot-{i}-{width}.png")
            widths = browser.load_lazy_images(page, ".flipsets img, .flipset img")
            assert len(widths) == n_shown and all(w > 0 for w in widths), widths
            assert page.locator("#flip-matrix-table").count() >= 1 or page.locator("table.heat").count() >= 1
            page.screenshot(path=str(SHOTS / f"report-page-{width}.png"), full_page=True)
            assert errors == []


def test_all_trials_table_sorts_on_a_header_click(report_page):
    path, rep = report_page
    table = "#trials-table-digits__exclusive-op__small"
    with browser.open_page(path, width=1280) as (page, errors):
        heads = page.evaluate(f"[...document.querySelector('{table}').tHead.rows[0].cells].map(c => c.textContent)")
        col = heads.index("NFR % test")
        before = _sorted_column(page, table, col)
        assert len(before) == 10                                         # 6 search rows, 2 + 2 replicates
        header = page.locator(f"{table} th").nth(col)
        header.click()
        up = _sorted_column(page, table, col)
        numbers = [v for v in up if v is not None]
        assert numbers == sorted(numbers) and up[len(numbers):] == [None] * (len(up) - len(numbers))
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        down = [v for v in _sorted_column(page, table, col) if v is not None]
        assert down == sorted(numbers, reverse=True) and header.get_attribute("aria-sort") == "descending"
        status = heads.index("status")
        page.locator(f"{table} th").nth(status).click()                  # a text column sorts too
        texts = page.evaluate(f"[...document.querySelector('{table}').tBodies[0].rows].map(r => r.cells[{status}]"
                              ".textContent)")
        assert texts == sorted(texts)
        browser.screenshot(page, table, SHOTS / "report-trials-sorted.png")
        assert errors == []


def test_page_json_and_files_agree(report_page):
    path, rep = report_page
    doc = json.loads(json.dumps(rep.to_json(), allow_nan=False))
    assert {s["scenario"] for s in doc["scenarios"]} == {s.key for s in rep.scenarios}
    html = path.read_text()
    for s in doc["scenarios"]:
        f = s["flips"]
        assert f["recommendation"]["metrics"]["nfr"]["count"] == len(f["recommendation"]["negative_flips"])
        assert f'id="flips-{s["scenario"]}-only-ce"' in html or f["same_configuration"]
