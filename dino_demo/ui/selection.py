"""The selected query: the controls above the tabs that pick it (the query list, the slot box,
the boxes under the cursor) with its card, and every view of it (`select_query`, `query_views`:
the highlighted box and row, its proposal, and the Query tab's pictures). The Detections and
Query tabs select through `select_query`; their own controls are theirs.

`build(ui, config)` makes the components, `wire(page)` connects them; handlers are plain
functions of `(event, stored)`.
"""
from __future__ import annotations

import gradio as gr

from ..explore import panels
from ..runtime.result import InferenceResult
from ..explore.options import SELECTED_QUERY, DetectionOptions, SamplingOptions
from ..explore.stored import StoredResult
from ..runtime.detections import DetectionView, detection_view
from . import families_ui, inputs
from .events import PageEvent, Views
from .inputs import ControlError, PageControls


def build(ui, config) -> None:
    """The query list and slot box with the query's card beside them (one row, so that the pictures
    below start high: at 1366x768 the Detections picture shows whole), then the boxes under the
    cursor."""
    with gr.Row(equal_height=False, elem_id="selection"):
        with gr.Column(scale=2, min_width=320):
            with gr.Row():
                ui["query"] = gr.Dropdown([], label="Query to inspect (or click a box)", scale=3, elem_id="query")
                ui["slot"] = gr.Number(value=None, label="Slot (Enter)", precision=0, scale=1, elem_id="slot",
                                       minimum=0, maximum=config.num_queries - 1, min_width=90)
        with gr.Column(scale=3):
            ui["query_info"] = gr.Markdown("", elem_id="query-info")
    ui["candidates"] = gr.Radio([], label="Boxes under the cursor", visible=False, elem_id="candidates")


def wire(page) -> None:
    ui = page.ui
    page.when([ui.query.input], choose_query)
    page.when([ui.slot.submit, ui.slot.blur], type_slot)
    page.when([ui.candidates.input], select_candidate)


# -- handlers --------------------------------------------------------------------------------------

def choose_query(event: PageEvent, stored: StoredResult) -> Views:
    """A query picked in the list."""
    return select_query(event, stored, event.controls.query)


def type_slot(event: PageEvent, stored: StoredResult) -> Views:
    """A slot number typed (Enter, or leaving the box): select it, unless it is the query already
    shown (Enter and then a click elsewhere would otherwise draw every view twice). A slot the
    model does not have is refused once: the box goes back to the query shown."""
    controls = event.controls
    if controls.slot is None or controls.slot == controls.query:
        return {}
    try:
        return select_query(event, stored, controls.slot)
    except ValueError as err:
        raise ControlError("slot", str(err)) from None


def select_candidate(event: PageEvent, stored: StoredResult) -> Views:
    """One of the boxes under the cursor chosen: select it, keeping the list of candidates."""
    views = select_query(event, stored, event.controls.candidate)
    views.pop("candidates")
    return views


def select_query(event: PageEvent, stored: StoredResult, slot) -> Views:
    """Query `slot` picked (in the list, typed, in the table, among the boxes under the cursor):
    highlight it everywhere and show its attention, layers and refinement."""
    controls, result = event.controls, stored.result
    slot = inputs.query_slot(slot, result.num_queries)
    view = detections(stored, controls)
    heat = heatmap(controls, result)
    if heat.source != SELECTED_QUERY:
        heat = None  # the heatmap of every shown detection: the selection does not change it
    return {"query": gr.Dropdown(choices=panels.query_choices(result, view, slot), value=slot), "slot": slot,
            "det_image": panels.detections_image(stored, view, slot), "table": panels.detection_table(view, slot),
            "proposal_image": panels.proposals_image(stored, view, controls.proposals, slot),
            "candidates": gr.Radio(visible=False),
            **query_views(stored, view, slot, sampling_options(controls, result), heat, controls.detection)}


def candidates(listed: list[tuple[str, int]], label: str):
    """The list of boxes under the cursor: shown only when there is a choice."""
    return gr.Radio(choices=listed, value=listed[0][1] if listed else None, label=label, visible=len(listed) > 1)


# -- views -----------------------------------------------------------------------------------------

def query_views(stored: StoredResult, view: DetectionView, slot: int | None, sampling: SamplingOptions,
                heat, options: DetectionOptions) -> Views:
    """The views of query `slot`; the heatmaps too unless `heat` is None (they cannot change)."""
    views = {} if heat is None else {"heatmap_image": panels.decoder_heatmaps(stored, view, slot, heat)}
    if slot is None:
        return views
    refine_image, refine_table = panels.refinement_panels(stored, slot)
    twice_image, twice_table = panels.look_forward_panels(stored, slot)
    sel_step, sel_info = panels.selection_panels(stored, slot)
    return {**views, **sampling_views(stored, slot, sampling),
            "query_info": panels.lineage_markdown(stored, slot, view, options.threshold),
            "token_scores": families_ui.token_scores_markdown(stored.result, slot),
            "layer_grid": panels.layer_grid_image(stored, slot),
            "refine_image": refine_image, "refine_table": refine_table, "twice_image": twice_image,
            "twice_table": twice_table, "sel_step": sel_step, "sel_info": sel_info}


def sampling_views(stored: StoredResult, slot: int, options: SamplingOptions) -> Views:
    overlay, points, mass = panels.sampling_image(stored, slot, options)
    return {"sampling_image": overlay, "points_json": points, "mass": mass}


def detections(stored: StoredResult, controls: PageControls) -> DetectionView:
    """The detections the controls show (threshold, max detections)."""
    return detection_view(stored.result, controls.detection.threshold, controls.detection.max_detections)


def shown_slot(controls: PageControls, result: InferenceResult) -> int | None:
    """The slot the page shows, checked against the model's queries (None before a selection)."""
    return None if controls.slot is None else inputs.query_slot(controls.slot, result.num_queries)


def sampling_options(controls: PageControls, result: InferenceResult) -> SamplingOptions:
    m, l, _ = result.attention_shape
    return controls.sampling.options(layers=result.num_layers, heads=m, levels=l, layer_name="Decoder layer")


def heatmap(controls: PageControls, result: InferenceResult):
    return controls.heatmap(layers=result.num_layers, heads=result.attention_shape[0])
