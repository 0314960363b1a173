"""A real browser (Chromium driven by Playwright) asks the page why: a box typed and a box drawn
with two clicks on the Why? tab show their nearest queries (the ones the library computes); the
Data set tab loads an analysis.json and opens a miss in the explorer at its box; the Compare tab
shows two models' detections in a slider. Screenshots go to test-artifacts/."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_support import ARTIFACTS, BROWSER_MARKS, click_in_image, open_page

from dino_demo.explore.diagnosis import diagnose_region  # noqa: E402
from dino_demo.runtime.dino import run  # noqa: E402
from dino_demo.explore.models import load  # noqa: E402
from dino_demo.paths import PROJECT_ROOT as ROOT  # noqa: E402
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

IMAGE = ROOT / "examples" / "shapes-90210-9.png"
MODEL = str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
pytestmark = BROWSER_MARKS


@pytest.fixture
def page(url):
    with open_page(url, height=900) as page:
        yield page


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def _first_slot(page) -> int:
    """The query slot in the first row of the nearest-queries table."""
    rows = "Array.from(document.querySelectorAll('#region-queries .virtual-row')).map(r => r.innerText.trim())"
    page.wait_for_function(f"() => {rows}.some(t => /^\\d/.test(t))")
    first = next(t for t in page.evaluate(f"() => {rows}") if re.match(r"\d", t))
    return int(re.match(r"(\d+)", first).group(1))


def open_tab(page, *names: str) -> None:
    """Open a tab, through the tabs that hold it ("Diagnose", "Why?": the Why? tab inside Diagnose)."""
    for name in names:
        page.get_by_role("tab", name=name, exact=True).click()


def _detect(page, image: Path) -> None:
    page.set_input_files("#image-in input[type=file]", str(image))
    page.wait_for_selector("#image-in img")
    page.click("#detect-button")
    page.wait_for_function("() => document.querySelector('#det-image img')?.naturalWidth > 0")


def test_ask_about_a_typed_box_and_a_drawn_box(page):
    ARTIFACTS.mkdir(exist_ok=True)
    detector = load(MODEL)
    model, cfg = detector.model, detector.config
    array = np.asarray(Image.open(IMAGE).convert("RGB"))
    result = run(model, cfg, array)
    height, width = result.size
    # A box a little off the best detection, and one drawn across an empty corner.
    x0, y0, x1, y1 = (float(v) for v in result.detections.boxes[0])
    typed = [x0 + 3, y0 + 2, x1 + 3, y1 - 2]
    expected = diagnose_region(result, typed, None, 0.3)

    _detect(page, IMAGE)
    open_tab(page, "Diagnose", "Why?")
    page.wait_for_function("() => document.querySelector('#region-image img')?.naturalWidth > 0")
    for name, value in zip(("x0", "y0", "x1", "y1"), typed):
        _set_number(page, f"region-{name}", round(value, 1))
    page.click("#region-ask")
    page.wait_for_function("() => document.querySelector('#region-verdict')?.innerText.includes('Verdict')")
    assert _first_slot(page) == expected.nearest.query_slot
    verdict = page.locator("#region-verdict").inner_text()
    assert expected.summary.split(":")[0] in verdict
    page.locator("#region-layers").scroll_into_view_if_needed()  # drawn lazily: in view first
    page.wait_for_function("() => document.querySelector('#region-layers img')?.naturalWidth > 0")
    page.locator("#region-verdict").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-region-typed.png"), full_page=True)

    # Draw: two clicks, opposite corners, around the second detection.
    bx0, by0, bx1, by1 = (float(v) for v in result.detections.boxes[1])
    click_in_image(page, "#region-image img", bx0 + 1, by0 + 1, width)
    page.wait_for_function("() => document.querySelector('#region-verdict')?.innerText.includes('First corner')")
    click_in_image(page, "#region-image img", bx1 - 1, by1 - 1, width)
    page.wait_for_function("() => document.querySelector('#region-verdict')?.innerText.includes('Verdict')")
    drawn = [float(page.locator(f"#region-{n} input").input_value()) for n in ("x0", "y0", "x1", "y1")]
    assert np.allclose(drawn, [bx0 + 1, by0 + 1, bx1 - 1, by1 - 1], atol=3.0), drawn
    expected = diagnose_region(result, drawn, None, 0.3)
    assert _first_slot(page) == expected.nearest.query_slot
    assert "detected" in page.locator("#region-verdict").inner_text()
    page.locator("#region-image").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-region-drawn.png"), full_page=True)


def test_open_a_listed_miss_in_the_explorer(page, tmp_path):
    """analyze on a small synthetic set, loaded with its images: a listed miss opens at its box."""
    from dino_demo.cli import main as cli
    from dino_demo.train.synthetic import SceneSpec, write_dataset

    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path / "set"
    write_dataset(folder, seed=31337, count=6, spec=SceneSpec(size=256))
    assert cli(["analyze", "--images", str(folder), "--annotations", str(folder / "annotations.json"),
                "--checkpoint", MODEL, "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "analysis.json").read_text())
    assert document["summary"]["false_negatives"] > 0
    open_tab(page, "Diagnose", "Data set")
    page.set_input_files("#analysis-files input[type=file]",
                         [str(tmp_path / "analysis.json"), str(folder / "annotations.json"),
                          *[str(p) for p in sorted(folder.glob("*.png"))]])
    page.wait_for_function("() => document.querySelector('#analysis-files').innerText.includes('annotations.json')")
    page.click("#analysis-run")
    page.wait_for_function("() => document.querySelector('#analysis-summary')?.innerText.includes('AP50')")
    page.wait_for_function("() => document.querySelectorAll('#analysis-items .virtual-row').length > 0")
    page.screenshot(path=str(ARTIFACTS / "browser-dataset.png"), full_page=True)

    page.locator("#analysis-items .virtual-row").first.get_by_text(document["images"][0]["file_name"]).click()
    page.wait_for_function("() => document.querySelector('#region-verdict')?.innerText.includes('Verdict')",
                           timeout=120_000)
    miss = document["images"][0]["false_negatives"] or document["images"][0]["false_positives"]
    box = [float(page.locator(f"#region-{n} input").input_value()) for n in ("x0", "y0", "x1", "y1")]
    assert np.allclose(box, miss[0]["box_xyxy"], atol=0.11)
    verdict = page.locator("#region-verdict").inner_text()
    if document["images"][0]["false_negatives"]:
        assert miss[0]["explanation"].split(":")[0] in verdict
    page.screenshot(path=str(ARTIFACTS / "browser-dataset-open.png"), full_page=True)


def test_two_models_side_by_side(page):
    ARTIFACTS.mkdir(exist_ok=True)
    _detect(page, IMAGE)
    from dino_demo.explore.compare import compare_detections
    from dino_demo.runtime.detections import detection_view
    from dino_demo.ui.compare_tab import per_query

    image = np.asarray(Image.open(IMAGE).convert("RGB"))
    a, b = (per_query(detection_view(load(m).run(image), 0.3)) for m in (MODEL, "untrained:dino-tiny"))
    expected = compare_detections(a, b, 0.3)  # each query once, as the tab compares them
    open_tab(page, "Diagnose", "Compare")
    page.locator("#compare-b input").click()
    page.get_by_role("option", name=re.compile(r"^dino-tiny, untrained")).click()
    page.click("#compare-run")
    page.wait_for_function("() => document.querySelector('#compare-summary')?.innerText.includes('only A')",
                           timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('#compare-slider img').length >= 1 && "
                           "document.querySelector('#compare-slider img').naturalWidth > 0")
    page.wait_for_function("() => document.querySelectorAll('#compare-table .virtual-row').length > 0")
    assert (f"both: {len(expected.pairs)}, only A: {len(expected.only_a)}, only B: {len(expected.only_b)}"
            in page.locator("#compare-summary").inner_text())
    page.locator("#compare-summary").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-compare.png"), full_page=True)
