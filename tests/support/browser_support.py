"""What the browser tests share: Debian's Chromium (the module skips without it), its flags, where
screenshots go, and a page on the served app that waits for the page to be ready."""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dino_demo.paths import PROJECT_ROOT

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Gradio's own use of pandas warns under pandas 3; not this project's concern.
BROWSER_MARKS = [pytest.mark.browser, pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")]


@contextlib.contextmanager
def open_page(url: str, *, width: int = 1366, height: int = 768) -> Iterator:
    """A Chromium page on `url` at width x height, once the Detect button is there."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#detect-button")
        try:
            yield page
        finally:
            browser.close()


def click_in_image(page, selector: str, x: float, y: float, width: int | None = None) -> None:
    """Click at pixel (x, y) of a `width` pixels wide image (default: the picture's own width) drawn
    (maybe enlarged) into an <img> that Gradio shows centred and never upscaled."""
    img = page.locator(selector)
    img.scroll_into_view_if_needed()
    page.wait_for_function(f"() => document.querySelector('{selector}')?.naturalWidth > 0")
    natural = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    if width is not None:
        x, y = x * natural[0] / width, y * natural[0] / width
    box = img.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1], 1.0)
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    page.mouse.click(left + x * scale, top + y * scale)
