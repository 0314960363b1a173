"""A real browser (Chromium driven by Playwright) on the Video tab: a clip made here (a synthetic
scene panned frame by frame) uploaded and run with the page's model; the frame's detections in
the table with their track ids; a click on a box follows its track (sampling points, refinement,
score over time); the frame slider moves to another frame, where the track is still followed;
"Open this frame in the views" makes that frame the page's result: the Detections tab lists its
boxes, the followed track's query selected. Screenshots go to test-artifacts/."""
import re

import numpy as np
import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, click_in_image, open_page
from test_video import SIZE, panned_scene, write_clip

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
FRAMES = 3


@pytest.fixture
def page(url):
    with open_page(url, height=1000) as page:
        yield page


def _table_rows(page, table: str = "video-table") -> list[list[str]]:
    """The rows of table `table` (its element id) that hold a detection (a number in the slot column)."""
    rows = (f"Array.from(document.querySelectorAll('#{table} [role=row].virtual-row'))"
            ".sort((a, b) => a.getAttribute('aria-rowindex') - b.getAttribute('aria-rowindex'))"
            ".map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))")
    page.wait_for_function(f"() => {rows}.some(r => /^\\d+$/.test(r[3] || ''))")
    return [r for r in page.evaluate(f"() => {rows}") if r and len(r) > 3 and re.match(r"^\d+$", r[3])]


def _boxes_by_slot(rows: list[list[str]]) -> dict[str, np.ndarray]:
    """{query slot: its box x0, y0, x1, y1} of a table's rows (columns 3 and 4-7; a slot's first row)."""
    boxes: dict[str, np.ndarray] = {}
    for row in rows:
        boxes.setdefault(row[3], np.array(row[4:8], dtype=float))
    return boxes


def test_run_a_clip_follow_a_track_and_open_a_frame_in_the_views(page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    clip = write_clip(tmp_path / "pan.mkv", panned_scene()[0][:FRAMES])
    page.get_by_role("tab", name="Video", exact=True).click()
    page.set_input_files("#video-clip input[type=file]", str(clip))
    page.wait_for_function("() => document.querySelector('#video-clip').innerText.includes('pan.mkv')")
    page.click("#video-run")
    page.wait_for_function("() => document.querySelector('#video-info')?.innerText.includes('tracks in the clip')",
                           timeout=300_000)
    assert f"Frame 0 of {FRAMES}" in page.locator("#video-info").inner_text()
    rows = [row for row in _table_rows(page) if row[0]]
    assert len(rows) >= 2, rows  # the scene's shapes, each with a track id

    # Click the middle of the second row's box: its track is followed.
    track = rows[1][0]
    x0, y0, x1, y1 = (float(v) for v in rows[1][4:8])
    click_in_image(page, "#video-image img", (x0 + x1) / 2, (y0 + y1) / 2, SIZE)
    page.wait_for_function("(t) => document.querySelector('#video-info').innerText.includes(`Track #${t}`)",
                           arg=track)
    for view in ("video-sampling", "video-refinement"):
        page.wait_for_function(f"() => document.querySelector('#{view} img')?.naturalWidth > 0")
    page.wait_for_function("() => document.querySelector('#video-scores canvas, #video-scores svg') !== null")

    # Another frame: the slider's box, committed with Enter.
    box = page.locator("#video-frame input[type=number]")
    box.fill(str(FRAMES - 1))
    box.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#video-info').innerText.includes('Frame {FRAMES - 1} of')")
    assert f"Track #{track}" in page.locator("#video-info").inner_text()
    page.wait_for_function("() => document.querySelector('#video-sampling img')?.naturalWidth > 0")
    page.locator("#video-info").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-video.png"), full_page=True)

    # That frame in the other views: the Detections tab opens on its boxes, the track's query selected.
    frame_rows = _table_rows(page)
    slot = next(row[3] for row in frame_rows if row[0] == track)
    assert not page.evaluate("() => document.querySelectorAll('#det-table [role=row].virtual-row').length")
    page.click("#video-open")
    page.wait_for_function("() => document.querySelector('#det-image img')?.naturalWidth > 0", timeout=120_000)
    assert page.get_by_role("tab", name="Detections", exact=True).get_attribute("aria-selected") == "true"
    shown, frame_boxes = _boxes_by_slot(_table_rows(page, "det-table")), _boxes_by_slot(frame_rows)
    assert shown.keys() == frame_boxes.keys()
    for s in shown:   # the same boxes, each table rounding to 0.1 px its own way
        np.testing.assert_allclose(shown[s], frame_boxes[s], atol=0.11)
    assert page.locator("#slot input").input_value() == slot
    page.wait_for_selector("#image-in img")   # the frame is the page's image now
    page.screenshot(path=str(ARTIFACTS / "browser-video-opened.png"), full_page=True)
