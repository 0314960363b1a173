"""A real browser (Chromium driven by Playwright) uses the app: upload, detect, click a box,
switch head and level, and the sampling-point overlay changes. Screenshots go to test-artifacts/.
Every wait is for a condition on the page (a new image loaded, a value shown), never a fixed sleep."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from browser_support import ARTIFACTS, BROWSER_MARKS, click_in_image, open_page

from gradio_client import Client, handle_file  # noqa: E402

from dino_demo.explore.draw.data import DetectionView, detection_at  # noqa: E402
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from dino_demo.paths import PROJECT_ROOT as ROOT  # noqa: E402

IMAGE = ROOT / "examples" / "shapes-90210-9.png"
MODEL = "shipped" if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
MAX_DETECTIONS = 20
pytestmark = BROWSER_MARKS


@pytest.fixture
def page(url):
    with open_page(url) as page:
        yield page


def _element_pixels(page, selector: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB"), dtype=np.int16)


def _wait_for_new_src(page, selector: str, old: str | None) -> str:
    """Wait until the <img> at `selector` shows a source other than `old`, fully loaded."""
    page.wait_for_function(
        """([selector, old]) => { const e = document.querySelector(selector);
            return e && e.getAttribute('src') && e.getAttribute('src') !== old && e.complete && e.naturalWidth > 0; }""",
        arg=[selector, old], timeout=30_000)
    return page.locator(selector).get_attribute("src")


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_upload_detect_click_and_inspect(page, url):
    ARTIFACTS.mkdir(exist_ok=True)
    # What the page will show, from the API (same model, same image: same result). The threshold
    # is 0.3, or lower when the model scores nothing that high (the untrained one).
    client = Client(url, verbose=False)
    _, best = client.predict(handle_file(str(IMAGE)), MODEL, "", "auto", 1333, 0.0, 1, api_name="/detect")
    threshold = min(0.3, float(np.floor(best["images"][0]["detections"][0]["score"] * 100) / 100))
    _, expected = client.predict(
        handle_file(str(IMAGE)), MODEL, "", "auto", 1333, threshold, MAX_DETECTIONS, api_name="/detect")
    expected = expected["images"][0]
    detections = expected["detections"]
    assert detections

    page.set_input_files("#image-in input[type=file]", str(IMAGE))
    page.wait_for_selector("#image-in img")
    _set_number(page, "threshold", threshold)
    _set_number(page, "max-detections", MAX_DETECTIONS)
    page.click("#detect-button")
    page.wait_for_function("() => document.querySelector('#slot input').value !== ''")
    first_src = _wait_for_new_src(page, "#det-image img", None)  # drawn once, first query highlighted

    # Click inside the last listed detection: the app selects the smallest box containing the click.
    x0, y0, x1, y1 = detections[-1]["box_xyxy"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    view = DetectionView(
        boxes=np.array([d["box_xyxy"] for d in detections]), scores=np.array([d["score"] for d in detections]),
        labels=np.zeros(len(detections), int), categories=np.zeros(len(detections), int),
        query_slots=np.array([d["query_slot"] for d in detections]), names=tuple(d["label"] for d in detections))
    want = int(view.query_slots[detection_at(view, cx, cy)])
    click_in_image(page, "#det-image img", cx, cy, expected["width"])
    page.wait_for_function(f"() => document.querySelector('#slot input').value === '{want}'")
    _wait_for_new_src(page, "#det-image img", first_src)  # re-drawn with the selection highlighted
    page.screenshot(path=str(ARTIFACTS / "browser-detections.png"), full_page=True)

    open_tab(page, "Query", "Sampling points")
    src = _wait_for_new_src(page, "#sampling-image img", None)
    all_heads = _element_pixels(page, "#sampling-image img")

    page.locator("#head label").filter(has_text=re.compile(r"^\s*2\s*$")).click()
    src = _wait_for_new_src(page, "#sampling-image img", src)
    head_2 = _element_pixels(page, "#sampling-image img")

    page.locator("#level label").filter(has_text=re.compile(r"^\s*3\s*$")).click()
    _wait_for_new_src(page, "#sampling-image img", src)
    head_2_level_3 = _element_pixels(page, "#sampling-image img")
    page.screenshot(path=str(ARTIFACTS / "browser-sampling.png"), full_page=True)
    Image.fromarray(head_2_level_3.astype(np.uint8)).save(ARTIFACTS / "browser-sampling-head2-level3.png")

    def changed(a, b):
        return a.shape != b.shape or (np.abs(a - b).max(-1) > 40).mean() > 0.0005

    assert changed(all_heads, head_2), "switching to head 2 did not change the overlay"
    assert changed(head_2, head_2_level_3), "switching to level 3 did not change the overlay"
    # Fewer points are drawn for one head than for all eight.
    assert (np.abs(head_2 - all_heads).max(-1) > 40).mean() > 0.001

    page.get_by_role("tab", name="Runtime").click()
    assert "backbone" in page.locator("#runtime").inner_text()


def test_a_zoo_model_downloads_with_progress_then_detects(local_zoo, page):
    """The model list offers the zoo; choosing an entry and pressing Detect shows the download's
    progress, then the detections (the file comes from a local server, slowly)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_input_files("#image-in input[type=file]", str(IMAGE))
    page.wait_for_selector("#image-in img")
    page.locator("#model-choice input").click()
    page.get_by_role("option", name=re.compile(re.escape(local_zoo.name))).click()
    page.click("#detect-button")
    page.get_by_text(re.compile("Downloading " + re.escape(local_zoo.name))).first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "browser-zoo-download.png"), full_page=True)
    _wait_for_new_src(page, "#det-image img", None)
    page.wait_for_function("() => document.querySelector('#slot input').value !== ''")
    page.screenshot(path=str(ARTIFACTS / "browser-zoo-detections.png"), full_page=True)
    page.get_by_role("tab", name="Runtime").click()
    assert local_zoo.name in page.locator("#runtime").inner_text()


def open_tab(page, *names: str) -> None:
    """Open a tab, through the tabs that hold it ("Query", "Layers": the Layers tab inside Query)."""
    for name in names:
        page.get_by_role("tab", name=name, exact=True).click()


def _tab(page, *names: str, image: str) -> str:
    open_tab(page, *names)
    return _wait_for_new_src(page, f"{image} img", None)


def test_layers_heatmaps_proposals_and_encoder(page, url):
    """The views that look deeper: every layer at a glance, heatmaps, a proposal followed to its
    detection, and an encoder token picked by a click."""
    from dino_demo.io.internals import read_internals

    ARTIFACTS.mkdir(exist_ok=True)
    client = Client(url, verbose=False)
    client.predict(handle_file(str(IMAGE)), MODEL, "", "auto", 1333, 0.0, 1, api_name="/detect")
    _, arrays = read_internals(client.predict(api_name="/internals"))
    height, width = (int(v) for v in arrays["image_size"])

    page.set_input_files("#image-in input[type=file]", str(IMAGE))
    page.wait_for_selector("#image-in img")
    page.click("#detect-button")
    page.wait_for_function("() => document.querySelector('#query-info').innerText.includes('encoder token')")
    slot = int(page.locator("#slot input").input_value())
    info = page.locator("#query-info").inner_text()
    assert f"Query slot {slot}" in info and "rank" in info and "detection #1" in info  # detection <- proposal

    _tab(page, "Query", "Layers", image="#layer-grid")
    page.screenshot(path=str(ARTIFACTS / "browser-layers.png"), full_page=True)
    natural = page.locator("#layer-grid img").evaluate("e => [e.naturalWidth, e.naturalHeight]")
    assert natural[0] > natural[1]  # panels side by side

    src = _tab(page, "Query", "Heatmaps", image="#heatmap-image")
    page.locator("#heat-source label").filter(has_text="detections above").click()
    _wait_for_new_src(page, "#heatmap-image img", src)
    page.screenshot(path=str(ARTIFACTS / "browser-heatmaps.png"), full_page=True)

    # Proposal -> query: click the centre of the encoder's best proposal.
    scores = 1 / (1 + np.exp(-arrays["encoder_logits"].astype(np.float64).max(-1)))
    top = np.argsort(-scores, kind="stable")[:100]
    cx, cy, w, h = arrays["encoder_boxes"].astype(np.float64)[top].T
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    x, y = (boxes[0, :2] + boxes[0, 2:]) / 2
    inside = np.flatnonzero((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3]))
    areas = (boxes[inside, 2] - boxes[inside, 0]) * (boxes[inside, 3] - boxes[inside, 1])
    want = int(top[inside[np.argmin(areas)]])
    src = _tab(page, "Query", "Proposals", image="#proposal-image")
    click_in_image(page, "#proposal-image img", x, y, width)
    page.wait_for_function(f"() => document.querySelector('#slot input').value === '{want}'")
    page.wait_for_function(f"() => document.querySelector('#query-info').innerText.includes('Query slot {want}')")
    _wait_for_new_src(page, "#proposal-image img", src)
    page.screenshot(path=str(ARTIFACTS / "browser-proposal-to-detection.png"), full_page=True)
    assert re.search(r"detection #\d|no detection|not shown", page.locator("#query-info").inner_text())

    # Encoder: a click picks the level-1 token under the cursor.
    _tab(page, "Encoder", image="#enc-image")
    rows, cols = (int(v) for v in arrays["spatial_shapes"][0])
    (pad_h, pad_w), (in_h, in_w) = arrays["padded_size"], arrays["input_size"]
    x, y = width * 0.3, height * 0.6
    col, row = int(x * in_w / width / pad_w * cols), int(y * in_h / height / pad_h * rows)
    src = page.locator("#enc-image img").get_attribute("src")
    click_in_image(page, "#enc-image img", x, y, width)
    page.wait_for_function("() => document.querySelector('#token-info').innerText.includes('Encoder token')")
    _wait_for_new_src(page, "#enc-image img", src)
    assert page.locator("#token-row input").input_value() == str(row)
    assert page.locator("#token-col input").input_value() == str(col)
    assert f"row {row}, col {col}" in page.locator("#token-info").inner_text()
    page.wait_for_function("() => { const e = document.querySelector('#enc-heatmap img'); return e && e.complete; }")
    page.screenshot(path=str(ARTIFACTS / "browser-encoder.png"), full_page=True)


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_the_shipped_models_note_and_the_examples_are_above_the_fold(url, width, height):
    """A newcomer sees, without scrolling, what the shipped model knows and the examples to try."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open_page(url, width=width, height=height) as page:
        page.wait_for_selector("#examples .gallery-item img")
        page.wait_for_function("() => [...document.querySelectorAll('#examples .gallery-item img')]"
                               ".every(e => e.complete && e.naturalWidth > 0)")
        page.screenshot(path=str(ARTIFACTS / f"browser-first-view-{width}x{height}.png"))
        for selector in ["#detect-button", "#model-choice", "#examples .gallery-item"] + (
                ["#shipped-note"] if DEFAULT_CHECKPOINT.is_file() else []):
            box = page.locator(selector).last.bounding_box()  # the last example too
            assert box is not None and box["y"] + box["height"] <= height, f"{selector} is below the fold"


TAB_BARS = {"tabs": ["Detections", "Query", "Encoder", "DINO's ideas", "Diagnose", "Video", "Runtime"],
            "query-tabs": ["Proposals", "Sampling points", "Layers", "Heatmaps", "Refinement"],
            "ideas-tabs": ["Denoising", "Forward pass"],
            "diagnose-tabs": ["Why?", "Data set", "Compare"]}


def test_every_tab_shows_once_at_1366x768(page):
    """The selected query's views, DINO's ideas and the diagnosis views each sit under one tab, so that at
    1366x768 every tab bar shows all its tabs, each once, and no "more tabs" menu."""
    ARTIFACTS.mkdir(exist_ok=True)
    for bar, names in TAB_BARS.items():
        holder = {"query-tabs": ["Query"], "ideas-tabs": ["DINO's ideas"], "diagnose-tabs": ["Diagnose"]}
        open_tab(page, *holder.get(bar, []))
        page.wait_for_function("([bar, n]) => [...document.querySelectorAll(`#${bar} [role=tab]`)]"
                               ".filter(b => b.offsetParent !== null).length >= n", arg=[bar, len(names)])
        shown = page.evaluate("""(bar) => {
            const own = (e) => e.closest('#tabs, #query-tabs, #ideas-tabs, #diagnose-tabs').id === bar;
            const tabs = [...document.querySelectorAll(`#${bar} [role=tab]`)].filter(own);
            const menu = [...document.querySelectorAll(`#${bar} .overflow-menu`)].filter(own);
            return {names: tabs.filter(b => b.offsetParent !== null).map(b => b.innerText.trim()),
                    right: Math.max(...tabs.map(b => b.getBoundingClientRect().right)),
                    menu: menu.some(m => m.offsetParent !== null)};
        }""", bar)
        assert shown["names"] == names, shown
        assert shown["right"] <= 1366 and not shown["menu"], shown
        page.screenshot(path=str(ARTIFACTS / f"browser-tabs-{bar}-1366x768.png"))


def test_a_failed_detect_keeps_the_views_and_says_why_once(page):
    """After a good Detect, a Detect that fails (a checkpoint the app may not open) leaves the
    drawn views as they were, with no error badges, and says what failed on the status line."""
    page.set_input_files("#image-in input[type=file]", str(IMAGE))
    page.wait_for_selector("#image-in img")
    page.click("#detect-button")
    src = _wait_for_new_src(page, "#det-image img", None)
    page.locator("#model-choice input").click()
    page.get_by_role("option", name=re.compile("checkpoint path or URL")).click()
    page.locator("#checkpoint textarea").fill("/nonexistent/checkpoint.pth")
    page.click("#detect-button")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('only from')")
    page.screenshot(path=str(ARTIFACTS / "browser-failed-detect.png"), full_page=True)
    assert page.locator("#det-image img").get_attribute("src") == src
    assert page.get_by_text("Error", exact=True).count() == 0  # no badge over the views
    assert page.locator("#query-info").inner_text().startswith("Query slot")
    assert page.locator("#status").inner_text().count("\n") == 0


def test_an_upload_that_is_not_an_image_is_refused_at_once(page, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("these are notes, not a picture")
    page.set_input_files("#image-in input[type=file]", str(text))
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Cannot use notes.png')")
    page.wait_for_function("() => !document.querySelector('#image-in img')")  # no broken thumbnail left


def test_a_typed_slot_the_model_lacks_goes_back_with_one_message(page):
    page.set_input_files("#image-in input[type=file]", str(IMAGE))
    page.wait_for_selector("#image-in img")
    page.click("#detect-button")
    page.wait_for_function("() => document.querySelector('#query-info').innerText.includes('Query slot')")
    shown = page.locator("#slot input").input_value()
    _set_number(page, "slot", 5000)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Query slot must be')")
    page.wait_for_function(f"() => document.querySelector('#slot input').value === '{shown}'")
    assert page.locator(".toast-body").count() == 0  # said on the status line, not in pop-ups
    page.get_by_role("tab", name="Runtime").click()  # leaving the box: the value shown, nothing new
    assert page.locator("#status").inner_text().count("Query slot must be") == 1
