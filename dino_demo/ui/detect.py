"""The Detect button (and an example picked): the model runs once (`Results.compute`, through the
app's model cache), then every view is drawn once, each tab's by its own module: the Detections
tab, the selected query's views (the first detection's query selected), the Query tab's
proposals and controls, the Encoder tab (waiting for a click) and the Runtime panel
(`result_views`: every view of a new current result; the Video tab's opened frame is one too).
"""
from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from ..explore import panels
from ..explore.stored import StoredResult
from ..runtime.detections import detection_view
from ..io.internals import write_internals
from . import detections_tab, encoder_tab, inputs, query_tab, selection
from .events import PageEvent, Views
from .inputs import PageControls
from .results import example_files, no_progress
from .services import Services
from .session import Session


class Detect:
    """The Detect handler over the app's services."""

    def __init__(self, services: Services):
        self.services = services

    def detect(self, event: PageEvent, progress: Callable = no_progress) -> Views:
        """Run the model, then draw every view once."""
        request = inputs.detect_request(event.detect_values)
        session = self.services.sessions.session(event.session, event.request)
        stored = self.services.results.compute(request, session, progress)
        progress(0.95, desc="Drawing")
        return result_views(stored, session, event.controls.for_new_result())


def result_views(stored: StoredResult, session: Session, controls: PageControls, slot: int | None = None) -> Views:
    """Every view of the session's new current result `stored` (`controls` as a new result leaves
    them, `PageControls.for_new_result`), query `slot` selected (None: the first one listed), and
    its internals file written to the session's folder."""
    result = stored.result
    view = detection_view(result, controls.detection.threshold, controls.detection.max_detections)
    slot = panels.listed_slot(result, view, slot)
    internals = write_internals(result, session.downloads() / "internals.npz", source=stored.file_name)
    return {
        "session": session,
        **detections_tab.detection_views(stored, view, slot, session, controls.detection),
        **selection.query_views(stored, view, slot, selection.sampling_options(controls, result),
                                selection.heatmap(controls, result), controls.detection),
        **query_tab.new_result_views(stored, view, slot, controls),
        **encoder_tab.new_result_views(stored),
        "runtime": panels.runtime_markdown(stored, session.reused),
        "download_internals": str(internals),
    }


def wire(page) -> None:
    """The Detect button and the examples (a picked example detects at once)."""
    ui = page.ui
    event = {"fn": page.handler(Detect(page.services).detect, redraw=False), **page.on, "show_progress": "full",
             **page.model_run}
    ui.detect.click(**event)
    with ui.examples_slot:
        examples = gr.Examples([[str(p)] for p in example_files()], inputs=[ui.image_in],
                               label="Examples (photos and synthetic scenes)", examples_per_page=12,
                               cache_examples=False)
    examples.load_input_event.then(**event)
