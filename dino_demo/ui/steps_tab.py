"""DINO's ideas step by step on the page: the query-selection section of the Proposals tab and
the look-forward-twice panels of the Refinement tab (their values come from `explore.panels`,
re-drawn with every query selection by the page's own events), and the Forward pass tab (every
stage's tensors for the page's image, named as in the official code). Components are made by the
`build_*` functions inside the page's tabs; the Forward pass's event is connected by `wire`."""
from __future__ import annotations

import json
import logging

import gradio as gr
import pandas as pd

from ..explore.panels import LOOK_FORWARD_COLUMNS
from ..explore.trace import trace_document, traced_run
from ..io.images import MAX_SIDE, load_image
from . import families_ui, gpu
from .events import PageEvent, Views
from .inputs import ControlError, detect_request

log = logging.getLogger("dino_explorer")

TRACE_HEADERS = ["stage", "name", "shape", "dtype", "meaning", "preview"]


class TraceTab:
    """The Forward pass tab's handler over the app's services."""

    def __init__(self, services):
        self.services = services
        self._traced = gpu.gpu_function(traced_run)

    def walk(self, event: PageEvent, progress=None) -> Views:
        """Run the page's image through the page's model with the forward pass traced: the table
        and trace.json."""
        request = detect_request(event.detect_values)
        try:
            loaded = load_image(request.path, max_side=MAX_SIDE)
        except ValueError as err:
            raise ControlError("image_in", f"Cannot use this image: {err}.") from None
        detector = self.services.models.load(request.model)
        families_ui.require_dino(detector, request.model.model_id, "The forward pass")
        try:
            with self.services.models.slot:
                result, stages = self._traced(detector.model, detector.config, loaded.array, max_size=request.max_input,
                                              precision=request.precision, model_id=request.model.model_id,
                                              source_size=loaded.file_size)
        except RuntimeError as err:
            log.exception("traced run failed")
            raise ValueError(f"The traced run failed: {err}") from None
        document = trace_document(result, stages, source=request.file_name)
        session = self.services.sessions.session(event.session, event.request)
        out = session.downloads() / "trace.json"
        out.write_text(json.dumps(document, indent=1))
        rows = [[s.stage, s.name, "×".join(str(v) for v in s.shape) or "scalar", s.dtype, s.meaning,
                 json.dumps(s.preview)] for s in stages]
        return {"session": session, "trace_table": pd.DataFrame(rows, columns=TRACE_HEADERS),
                "trace_json": document, "trace_download": str(out)}


# -- layout ------------------------------------------------------------------------------------------

def build_selection_section(ui) -> None:
    """Query selection step by step, under the Proposals tab's picture."""
    with gr.Accordion("Query selection, step by step", open=True, elem_id="sel-section"):
        ui["sel_info"] = gr.Markdown("", elem_id="sel-info")
        gr.Markdown("The encoder scores every token (best class probability, a map per level); the top-k become "
                    "the decoder's queries (pink).", elem_classes=["caption"])
        ui["sel_maps"] = gr.Image(interactive=False, show_label=False, elem_id="sel-maps", format="png",
                                  elem_classes=["view-image"], buttons=["download", "fullscreen"])
        gr.Markdown("Its token's cell, the fixed proposal made of it and the box the encoder head made of that.",
                    elem_classes=["caption"])
        ui["sel_step"] = gr.Image(interactive=False, show_label=False, elem_id="sel-step", format="png",
                                  elem_classes=["view-image"], buttons=["download", "fullscreen"])


def build_refinement_extra(ui) -> None:
    """Look forward twice, under the Refinement tab's picture."""
    gr.Markdown("Look forward twice: per layer, the reference it starts from, the box the loss sees and the "
                "next layer's (detached) reference.", elem_classes=["caption"])
    ui["twice_image"] = gr.Image(interactive=False, show_label=False, elem_id="twice-image", format="png",
                                 buttons=["download", "fullscreen"])
    ui["twice_table"] = gr.Dataframe(headers=LOOK_FORWARD_COLUMNS, interactive=False, elem_id="twice-table")


def build_trace_tab(ui) -> None:
    with gr.Tab("Forward pass", id="trace"):
        gr.Markdown("Every stage of DINO's forward pass for this image, with its real shape and first values, "
                    "named as in the official code (`models/dino/dino.py`, `deformable_transformer.py`).",
                    elem_classes=["caption"])
        with gr.Row():
            ui["trace_run"] = gr.Button("Walk the forward pass", variant="primary", elem_id="trace-run", scale=0)
            ui["trace_download"] = gr.DownloadButton("trace.json", size="sm", elem_id="trace-download", scale=0)
        ui["trace_table"] = gr.Dataframe(headers=TRACE_HEADERS, interactive=False, wrap=True, max_height=640,
                                          elem_id="trace-table")
        with gr.Accordion("trace.json", open=False):
            ui["trace_json"] = gr.JSON(label="Trace")


def wire(page) -> None:
    """Connect the Forward pass button through the page's events (see `denoising_tab.wire`)."""
    tab = TraceTab(page.services)
    page.when([page.ui.trace_run.click], tab.walk, redraw=False, show_progress="full", **page.model_run)
