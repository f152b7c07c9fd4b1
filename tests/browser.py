"""Headless-Chromium checks of generated HTML pages, shared by the browser tests.

    with open_page(path, width=1280) as (page, console_errors):
        assert no_horizontal_overflow(page, 1280)
        assert region_not_blank(page, "#gallery")

Uses Playwright with Debian's /usr/bin/chromium (Playwright's own browser downloads are not
available here); `require()` fails the calling test, naming the install, when either is missing
(scripts/test.sh installs both: a browser test never skips).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import Iterator

CHROMIUM = os.environ.get("FLIPSEARCH_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


def missing() -> str | None:
    """What a browser test lacks here (None when it can run)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    return None


def require() -> None:
    """Fail the calling test if the browser cannot run: run scripts/test.sh, which installs it."""
    import pytest

    lacking = missing()
    if lacking is not None:
        pytest.fail(f"{lacking}; scripts/test.sh installs it", pytrace=False)


@contextlib.contextmanager
def open_page(path: str | os.PathLike, width: int = 1280, height: int = 900) -> Iterator[tuple]:
    """Open the file `path` in headless Chromium at `width` x `height`; yields (page,
    errors), `errors` collecting console errors and uncaught page exceptions. The page is
    loaded ('load' event: every non-lazy image fetched) before it is yielded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            yield page, errors
        finally:
            browser.close()


def scroll_width(page) -> int:
    return int(page.evaluate("document.scrollingElement.scrollWidth"))


def no_horizontal_overflow(page, width: int = 1280) -> bool:
    """True when the document is no wider than `width` (nothing forces a horizontal scroll)."""
    return scroll_width(page) <= width


def load_lazy_images(page, selector: str = "img", timeout_ms: int = 15_000) -> list[int]:
    """Open every `<details>` holding an image matching `selector`, scroll through the page
    half a viewport per frame (so `loading=lazy` images start loading), wait until each is
    decoded, scroll back to the top and return their naturalWidth values (0: not decoded)."""
    page.set_default_timeout(timeout_ms)
    return page.evaluate("""async (sel) => {
        const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        for (const d of document.querySelectorAll('details')) if (d.querySelector(sel)) d.open = true;
        const imgs = [...document.querySelectorAll(sel)];
        for (let y = 0; y < document.scrollingElement.scrollHeight; y += innerHeight / 2) {
            window.scrollTo(0, y);
            await frame();
        }
        await Promise.all(imgs.map(i => i.decode().catch(() => {})));
        window.scrollTo(0, 0);
        await frame();
        return imgs.map(i => i.naturalWidth);
    }""", selector)


def screenshot(page, selector: str, path: str | os.PathLike | None = None) -> bytes:
    """PNG of the element `selector` (scrolled into view); also saved to `path` when given."""
    el = page.locator(selector).first
    el.scroll_into_view_if_needed()
    return el.screenshot(path=str(path) if path else None)


def pixel_variance(png: bytes) -> float:
    """Variance of the grey levels of a PNG: 0 for a blank (single-colour) region."""
    import numpy as np
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64).var())


def region_not_blank(page, selector: str, path: str | os.PathLike | None = None) -> bool:
    """True when a screenshot of `selector` has more than one colour."""
    return pixel_variance(screenshot(page, selector, path)) > 0
