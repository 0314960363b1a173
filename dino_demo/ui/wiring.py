"""Which user action calls which handler: the API endpoints first (so that they own their names),
then each part of the page connects its own controls (`wire(page)` of the input column, Detect,
the selected query and every tab), all through one `events.PageEvents`."""
from __future__ import annotations

import gradio as gr

from . import (analysis_tab, compare_tab, denoising_tab, detect, detections_tab, encoder_tab, input_panel, query_tab,
               region_tab, selection, steps_tab, video_tab)
from .api import ApiEndpoints
from .events import PageEvents, api
from .services import Services


def wire(ui, services: Services, concurrency: int) -> PageEvents:
    """Connect every event of the page (`concurrency`: model runs at a time)."""
    page = PageEvents(ui, services, concurrency)
    _api_endpoints(ui, ApiEndpoints(services), page.model_run)
    for part in (input_panel, detect, selection, detections_tab, query_tab, encoder_tab, denoising_tab, steps_tab,
                 region_tab, analysis_tab, compare_tab, video_tab):
        part.wire(page)
    return page


def _api_endpoints(ui, endpoints: ApiEndpoints, model_run: dict) -> None:
    """The API endpoints, triggered by no control (the page's own events draw every view at once);
    an MCP tool is named after its method."""
    raw = {"preprocess": False}
    gr.on([], api(ui, endpoints.detect),
          [ui.session, ui.image_in, ui.model_choice, ui.checkpoint, ui.variant, ui.max_input, ui.threshold,
           ui.max_detections, ui.prompt], [ui.det_image, ui.det_json], api_name="detect", **raw, **model_run)
    by_image = [ui.image_in, ui.model_choice, ui.checkpoint, ui.variant, ui.max_input]  # callers without a session
    gr.on([], api(ui, endpoints.inspect),
          [ui.session, ui.slot, ui.layer, ui.head, ui.level, ui.point_color, *by_image],
          [ui.sampling_image, ui.points_json, ui.mass], api_name="inspect", **raw, **model_run)
    gr.on([], api(ui, endpoints.encoder),
          [ui.session, ui.token_level, ui.token_row, ui.token_col, ui.enc_layer, ui.enc_head, ui.enc_level,
           ui.enc_color, *by_image], [ui.enc_image, ui.enc_points, ui.enc_mass], api_name="encoder", **raw,
          **model_run)
    gr.on([], api(ui, endpoints.internals), [ui.session, *by_image], [ui.download_internals],
          api_name="internals", **raw, **model_run)
