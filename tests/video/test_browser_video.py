"""A real browser (Chromium driven by Playwright) on the Video tab: a clip made here (a synthetic
scene panned frame by frame) uploaded and run with the page's model; the frame's detections in
the table with their track ids; a click on a box follows its track (sampling points, refinement,
score over time); the frame slider moves to another frame, where the track is still followed.
A screenshot goes to test-artifacts/."""
import re

import pytest

from browser_support import ARTIFACTS, BROWSER_MARKS, click_in_image, open_page
from test_video import SIZE, panned_scene, write_clip

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
FRAMES = 3


@pytest.fixture
def page(url):
    with open_page(url, height=1000) as page:
        yield page


def _table_rows(page) -> list[list[str]]:
    rows = ("Array.from(document.querySelectorAll('#video-table [role=row].virtual-row'))"
            ".sort((a, b) => a.getAttribute('aria-rowindex') - b.getAttribute('aria-rowindex'))"
            ".map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))")
    page.wait_for_function(f"() => {rows}.some(r => /^\\d+$/.test(r[0] || ''))")
    return [r for r in page.evaluate(f"() => {rows}") if r and re.match(r"^\d+$", r[0])]


def test_run_a_clip_and_follow_a_track(page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    clip = write_clip(tmp_path / "pan.mkv", panned_scene()[0][:FRAMES])
    page.get_by_role("tab", name="Video", exact=True).click()
    page.set_input_files("#video-clip input[type=file]", str(clip))
    page.wait_for_function("() => document.querySelector('#video-clip').innerText.includes('pan.mkv')")
    page.click("#video-run")
    page.wait_for_function("() => document.querySelector('#video-info')?.innerText.includes('tracks in the clip')",
                           timeout=300_000)
    assert f"Frame 0 of {FRAMES}" in page.locator("#video-info").inner_text()
    rows = _table_rows(page)
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
    page.locator("#video-info").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-video.png"), full_page=True)
