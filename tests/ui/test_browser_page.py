"""A real browser (Chromium) at 1366x768 meets what a newcomer met: the offline zoo message shown
whole (why, then the URL and where to put the file), Compare naming the model that failed, the
result picture whole after Detect, the input cap's label following the model, and Compare's layer
slider and table fitting the two models. The app is served with a zoo entry whose host refuses
connections (this machine "offline"). Screenshots go to test-artifacts/."""
import re

import numpy as np
import pytest
from PIL import Image

from browser_support import ARTIFACTS, BROWSER_MARKS, open_page
from conftest import free_port

from dino_demo.paths import PROJECT_ROOT as ROOT  # noqa: E402
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

IMAGE = ROOT / "examples" / "chelsea.png"
WIDTH, HEIGHT = 1366, 768
pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The app served with a zoo entry whose host refuses every connection; the entry."""
    from dino_demo.sources import zoo
    from dino_demo.ui import build_demo, launch

    closed = free_port()
    entry = zoo.ZooEntry("offline-tiny", "DINO-tiny offline", "dino-tiny", "official", "official",
                         (f"http://127.0.0.1:{closed}/offline-tiny.pth",), 7, 0.0, 1, "test", "tests")
    folder = tmp_path_factory.mktemp("zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, entry))
        patch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, entry.id: entry})
        patch.setattr(zoo, "folder", lambda: folder)
        for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC"):
            patch.delenv(variable, raising=False)
        demo = launch(build_demo(), "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
        yield demo.local_url, entry
        demo.close()


@pytest.fixture
def page(offline):
    with open_page(offline[0], width=WIDTH, height=HEIGHT) as page:
        page.set_input_files("#image-in input[type=file]", str(IMAGE))
        page.wait_for_selector("#image-in img")
        yield page


def _choose(page, dropdown: str, option) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).first.click()


def _detect(page) -> None:
    page.click("#detect-button")
    page.wait_for_function("() => { const e = document.querySelector('#det-image img');"
                           " return e && e.complete && e.naturalWidth > 0; }", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#query-info').innerText.includes('Query slot')")


def _compare(page, model_b) -> None:
    page.get_by_role("tab", name="Diagnose", exact=True).click()
    page.get_by_role("tab", name="Compare", exact=True).click()
    _choose(page, "#compare-b", model_b)
    page.click("#compare-run")


def test_the_offline_zoo_message_shows_its_whole_remedy(page, offline):
    from dino_demo.sources import zoo

    entry = offline[1]
    _choose(page, "#model-choice", re.compile(re.escape(entry.name)))
    page.click("#detect-button")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('unreachable')",
                           timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-offline-zoo-1366x768.png"))
    status = page.locator("#status")
    text = " ".join(status.inner_text().split())
    assert text.startswith(f"⚠ Could not download {entry.name}") and "unreachable" in text
    assert f"download {entry.urls[0]} yourself and put it at {zoo.local_path(entry)}" in text, text
    # Shown whole: nothing cut off to the side, all of it inside the window.
    shown = status.evaluate("e => [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().bottom]")
    assert shown[0] <= shown[1] + 1 and shown[2] <= HEIGHT, shown


def test_compare_names_the_model_that_failed(page, offline):
    entry = offline[1]
    _compare(page, re.compile(re.escape(entry.name)))
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Model B')", timeout=60_000)
    text = " ".join(page.locator("#status").inner_text().split())
    assert text.startswith(f"⚠ Model B ({entry.name}): Could not download {entry.name}") and "unreachable" in text


def test_the_result_picture_shows_whole_after_detect(page):
    """At 1366x768, right after Detect, the Detections picture lies inside the window."""
    _detect(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-after-detect-1366x768.png"))
    box = page.locator("#det-image img").bounding_box()
    natural = page.locator("#det-image img").evaluate("e => [e.naturalWidth, e.naturalHeight]")
    # The drawn picture (centred, never upscaled) inside its box.
    scale = min(box["width"] / natural[0], box["height"] / natural[1], 1.0)
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    assert box["y"] >= 0 and top + natural[1] * scale <= HEIGHT, (box, natural)
    assert natural[1] * scale >= 240  # not shrunk to a thumbnail to fit


def _max_input_label(page) -> str:
    return page.locator("#max-input").inner_text()


def test_the_max_input_label_follows_the_model(page):
    assert "dino-tiny" in _max_input_label(page)
    _choose(page, "#model-choice", re.compile(r"^SenseTime.deformable-detr ·"))
    page.wait_for_function("() => !document.querySelector('#max-input').innerText.includes('dino-tiny')")
    assert "the model's own resize" in _max_input_label(page)
    _choose(page, "#model-choice", re.compile(r"^dino-4scale-r50, untrained"))
    page.wait_for_function("() => document.querySelector('#max-input').innerText.includes('dino-4scale-r50')")
    assert page.locator("#max-input input[type=range]").get_attribute("max") == "1333"


def _a_slots(page) -> list[str]:
    """Model A's slot of each row of the comparison table (rows read as text: "found by", class
    (one word here), A slot, ...; rows of "only B" have none)."""
    rows = page.evaluate("() => [...document.querySelectorAll('#compare-table .virtual-row')].map(r => r.innerText)")
    slots = []
    for row in rows:
        words = row.split()
        if words[:2] == ["only", "A"]:
            slots.append(words[3])
        elif words[:1] == ["both"]:
            slots.append(words[2])
    return slots


def test_compare_sizes_its_layer_slider_and_lists_each_slot_once(page):
    """Two 3-layer models: the slider runs 1-3; a query the official post-processing lists under
    two classes is one row of the table."""
    from dino_demo.runtime import load_detector
    from dino_demo.runtime.detections import detection_view

    model = str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
    view = detection_view(load_detector(model).run(np.asarray(Image.open(IMAGE).convert("RGB"))), 0.3)
    assert len(set(view.query_slots.tolist())) < len(view), "no query listed twice: this test could not fail"
    _compare(page, re.compile(r"^dino-tiny, untrained"))
    page.wait_for_function("() => document.querySelector('#compare-summary')?.innerText.includes('only A')",
                           timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('#compare-table .virtual-row').length > 0")
    assert page.locator("#compare-layer input[type=range]").get_attribute("max") == "3"
    slots = _a_slots(page)
    assert slots and len(slots) == len(set(slots)), slots
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-compare-1366x768.png"), full_page=True)
