"""A real browser uses the Denoising tab: detect, take the detections as ground truth, run the
contrastive denoising with a seed, switch the group. The page's table is checked against the
library's run for the same model, boxes and seed; screenshots go to test-artifacts/."""

import numpy as np
import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, click_in_image, open_page

from dino_demo.explore.denoising import denoising_rows, run_denoising  # noqa: E402
from dino_demo.explore.models import load  # noqa: E402
from dino_demo.io.boxes import read_boxes_text  # noqa: E402
from dino_demo.io.images import load_image  # noqa: E402
from dino_demo.io.labels import category_ids, class_names  # noqa: E402
from dino_demo.paths import PROJECT_ROOT as ROOT  # noqa: E402
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

IMAGE = ROOT / "examples" / "shapes-90210-9.png"
SEED = 5
pytestmark = BROWSER_MARKS


@pytest.fixture
def page(url):
    with open_page(url, height=900) as page:
        yield page


def _new_src(page, selector: str, old: str | None) -> str:
    page.wait_for_function(
        """([selector, old]) => { const e = document.querySelector(selector);
            return e && e.getAttribute('src') && e.getAttribute('src') !== old && e.complete && e.naturalWidth > 0; }""",
        arg=[selector, old], timeout=60_000)
    return page.locator(selector).get_attribute("src")


# The data rows of the Denoising table as Gradio's virtual grid shows them (the rows in view; blank
# placeholder rows before the data arrives are left out).
ROWS_JS = """Array.from(document.querySelectorAll('#dn-table [role=row].virtual-row'))
    .sort((a, b) => a.getAttribute('aria-rowindex') - b.getAttribute('aria-rowindex'))
    .map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))
    .filter(cells => cells.length && cells[0] !== '')"""


def _open_tab(page, name: str, tabs: str = "#tabs") -> None:
    """Click the tab `name` of the tab row `tabs`, from its "More tabs" menu when the row has no room for it."""
    tab = page.locator(tabs).get_by_role("tab", name=name, exact=True)
    if not tab.count():
        page.locator(f"{tabs} .overflow-menu button[aria-label='More tabs']").first.click()
        tab = page.locator(f"{tabs} .overflow-dropdown button").filter(has_text=name)
    tab.first.click()


def _open_ideas_tab(page, name: str) -> None:
    """A nested tab of "DINO's ideas" (Denoising, Forward pass)."""
    _open_tab(page, "DINO's ideas")
    _open_tab(page, name, "#ideas-tabs")


def _detect(page) -> None:
    """Upload the test image, press Detect and wait for the detections image (artifacts folder made)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_input_files("#image-in input[type=file]", str(IMAGE))
    page.wait_for_selector("#image-in img")
    page.click("#detect-button")
    _new_src(page, "#det-image img", None)


def _table(page) -> list[list[str]]:
    return page.evaluate(f"() => {ROWS_JS}")


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="needs the shipped model (weights/dino-tiny.pth)")
def test_denoising_tab_runs_the_official_queries_and_draws_them(page):
    _detect(page)

    _open_ideas_tab(page, "Denoising")
    page.click("#dn-take")
    page.wait_for_function("() => document.querySelector('#dn-boxes textarea').value.trim() !== ''")
    taken = page.locator("#dn-boxes textarea").input_value()
    # Draw one more box: two clicks on the picture (its pixels: 3x the 256-pixel image).
    page.click("#dn-draw")
    _new_src(page, "#dn-image img", None)
    click_in_image(page, "#dn-image img", 3 * 20, 3 * 30)
    page.wait_for_function("() => document.querySelector('#dn-info').innerText.includes('First corner')")
    click_in_image(page, "#dn-image img", 3 * 60, 3 * 90)
    page.wait_for_function(f"() => document.querySelector('#dn-boxes textarea').value.trim().split('\\n').length"
                           f" === {len(taken.strip().splitlines()) + 1}")
    boxes = page.locator("#dn-boxes textarea").input_value()
    x, y, w, h, category = (float(v) for v in boxes.strip().splitlines()[-1].split())
    np.testing.assert_allclose([x, y, w, h, category], [20, 30, 40, 60, 1], atol=1.0)
    box = page.locator("#dn-seed input[type=number]")
    box.fill(str(SEED))
    box.press("Enter")
    page.click("#dn-run")
    first = _new_src(page, "#dn-image img", None)
    _new_src(page, "#dn-mask img", None)
    page.wait_for_function(f"() => {ROWS_JS}.length > 0")
    assert "groups" in page.locator("#dn-info").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser-denoising.png"), full_page=True)

    # The same run in the library: the page's group 1 is its group 1, slot for slot.
    detector = load(str(DEFAULT_CHECKPOINT))
    model, cfg = detector.model, detector.config
    image = load_image(IMAGE).array
    truth = read_boxes_text(boxes, image.shape[:2], category_ids(cfg))
    run = run_denoising(model, cfg, image, truth, SEED, class_names=class_names(cfg))
    expected = denoising_rows(run, 0)
    shown = _table(page)
    assert 2 <= len(shown) <= len(expected)   # the rows in view of the virtual grid, in order
    assert [(int(r[0]), r[1], r[3], r[5]) for r in shown] == [
        (r.slot, r.kind, r.input_label, r.denoised_label) for r in expected[:len(shown)]]
    assert {r[1] for r in shown} == {"positive", "negative"}
    assert np.isclose(float(shown[0][7]), round(expected[0].loss_class, 4), atol=1e-4)

    # Another group: another picture and other slots.
    if run.num_groups > 1:
        slider = page.locator("#dn-group input[type=number]")
        slider.fill("2")
        slider.press("Enter")
        _new_src(page, "#dn-image img", first)
        page.wait_for_function(f"() => ({ROWS_JS})[0]?.[0] === '{2 * run.max_targets}'")
    page.locator("#dn-mask img").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-denoising-group2.png"), full_page=True)


def test_query_selection_look_forward_twice_and_forward_pass(page):
    _detect(page)

    _open_tab(page, "Query")
    _open_tab(page, "Proposals", "#query-tabs")
    _new_src(page, "#sel-maps img", None)
    step = _new_src(page, "#sel-step img", None)
    page.wait_for_function("() => document.querySelector('#sel-info').innerText.includes('tgt_embed')")
    slot = page.locator("#slot input").input_value()
    assert f"Query slot {slot}" in page.locator("#sel-info").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser-query-selection.png"), full_page=True)
    # another query: the selection step follows it (the score maps are the same for every query)
    other = "1" if slot != "1" else "2"
    box = page.locator("#slot input")
    box.fill(other)
    box.press("Enter")
    _new_src(page, "#sel-step img", step)
    page.wait_for_function(f"() => document.querySelector('#sel-info').innerText.includes('Query slot {other}')")

    _open_tab(page, "Query")
    _open_tab(page, "Refinement", "#query-tabs")
    _new_src(page, "#twice-image img", None)
    page.locator("#twice-image img").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-look-forward-twice.png"), full_page=True)

    _open_ideas_tab(page, "Forward pass")
    page.click("#trace-run")
    page.wait_for_function("""() => Array.from(document.querySelectorAll('#trace-table [role=gridcell]'))
                                  .some(c => c.innerText.trim() === 'level_start_index')""")
    page.screenshot(path=str(ARTIFACTS / "browser-forward-pass.png"), full_page=True)
