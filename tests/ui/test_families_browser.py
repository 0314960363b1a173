"""The app opens a local transformers model folder of every family (the checkpoint box), runs it
(Grounding DINO with a prompt) and draws its sampling points; views that do not apply say why.
Screenshots go to test-artifacts/families-<name>.png."""
from __future__ import annotations

import os
import re

import pytest
from family_models import FAMILY_NAMES, TEXT_PROMPTED, save_tiny
from conftest import free_port
from browser_support import ARTIFACTS, BROWSER_MARKS, open_page
from test_browser import IMAGE, _element_pixels, _set_number

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]


def _wait_for_new_src(page, selector: str, old: str | None) -> str:
    """Wait until the <img> at `selector` shows a source other than `old`, fully loaded (loading a
    model folder and running it can take a while on a busy machine)."""
    page.wait_for_function(
        """([selector, old]) => { const e = document.querySelector(selector);
            return e && e.getAttribute('src') && e.getAttribute('src') !== old && e.complete && e.naturalWidth > 0; }""",
        arg=[selector, old], timeout=90_000)
    return page.locator(selector).get_attribute("src")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-folders")
    # a seed per family: two families of equal structure (Grounding DINO, MM) would draw the same picture
    folders = {name: save_tiny(name, root / name, seed=i) for i, name in enumerate(FAMILY_NAMES)}
    previous = os.environ.get("DINO_DEMO_CHECKPOINT_DIRS")
    os.environ["DINO_DEMO_CHECKPOINT_DIRS"] = str(root)
    from dino_demo.ui import build_demo, launch

    demo = launch(build_demo(), "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield demo.local_url, folders
    demo.close()
    if previous is None:
        os.environ.pop("DINO_DEMO_CHECKPOINT_DIRS", None)
    else:
        os.environ["DINO_DEMO_CHECKPOINT_DIRS"] = previous


def test_every_family_folder_opens_and_draws_sampling_points(app):
    url, folders = app
    ARTIFACTS.mkdir(exist_ok=True)
    with open_page(url, height=900) as page:
        page.set_default_timeout(120_000)
        page.set_input_files("#image-in input[type=file]", str(IMAGE))
        page.wait_for_selector("#image-in img")
        _set_number(page, "threshold", 0)  # every model draws boxes: each run's picture differs
        page.locator("#model-choice input").click()
        page.get_by_role("option", name=re.compile(r"checkpoint path or URL")).click()
        box = page.get_by_role("textbox", name="Checkpoint path or URL")
        box.wait_for()
        detections, sampling = None, None
        for name, folder in folders.items():
            box.fill(str(folder))
            page.locator("#prompt textarea, #prompt input").first.fill("cat . remote control ." if
                                                                       name in TEXT_PROMPTED else "")
            page.get_by_role("tab", name="Detections").click()
            page.click("#detect-button")
            try:
                detections = _wait_for_new_src(page, "#det-image img", detections)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / f"families-{name}-failed.png"), full_page=True)
                raise
            page.get_by_role("tab", name="Query", exact=True).click()
            page.get_by_role("tab", name="Sampling points").click()
            sampling = _wait_for_new_src(page, "#sampling-image img", sampling)
            pixels = _element_pixels(page, "#sampling-image img")
            coloured = (pixels.max(-1) - pixels.min(-1) > 80).mean()
            assert coloured > 0.0005, f"{name}: no sampling points drawn"
            notes = page.locator("#token-scores").inner_text()
            if name in TEXT_PROMPTED:
                assert "Prompt tokens matched" in notes
            else:
                assert "token scores" in notes
            if name.startswith(("rt-detr", "d-fine", "lw-detr", "rf-detr")):
                assert "encoder" in notes
            page.screenshot(path=str(ARTIFACTS / f"families-{name}.png"), full_page=True)
