"""The Query tab: the selected query's views (Proposals, Sampling points, Layers, Heatmaps,
Refinement; drawn by `selection`, which every query selection goes through) and the handlers of
the tab's own controls: the proposals' top-N and colouring, a click on a proposal, the sampling
points' layer, head, level, colour and extras, and the heatmaps' source, layer and head.

`build(ui, config)` makes the components, `wire(page)` connects them; handlers are plain
functions of `(event, stored)`.
"""
from __future__ import annotations

import gradio as gr

from ..explore import panels
from ..explore.options import HEATMAP_SOURCES, PROPOSAL_COLORS
from ..explore.stored import StoredResult
from ..runtime.detections import DetectionView
from . import families_ui, inputs, selection, steps_tab
from .events import PageEvent, Views
from .inputs import PageControls
from .widgets import attention_controls, caption, indices, picture, picture_and_controls, slider


def build(ui, config) -> None:
    """The tab and its tabs, sized for `config` (layers, heads, levels, queries) until a Detect."""
    with gr.Tab("Query", id="query-views"):
        families_ui.build_token_scores(ui)  # a transformers detector's prompt tokens, views it lacks
        with gr.Tabs(elem_id="query-tabs"):
            with gr.Tab("Proposals", id="proposals"):
                with gr.Row():
                    ui["top_n"] = slider("top_n", 1, config.num_queries,
                                         min(inputs.DEFAULTS["top_n"], config.num_queries),
                                         "Top proposals (by encoder score)")
                    ui["proposal_color"] = gr.Radio(list(PROPOSAL_COLORS), value=inputs.DEFAULTS["proposal_color"],
                                                    label="Colour by")
                caption("The encoder's top-k proposals (the decoder's first boxes); click one to follow the "
                        "query it seeded.")
                ui["proposal_image"] = picture("proposal-image")
                steps_tab.build_selection_section(ui)
            with gr.Tab("Sampling points", id="sampling"):
                with picture_and_controls(ui, "sampling_image", "The selected query's reference box (white) and "
                                          "sampling points in one decoder layer."):
                    attention_controls(ui, "", config.dec_layers, "Decoder layer", config.num_heads,
                                       config.num_feature_levels)
                ui["mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
                with gr.Accordion("Sampling points JSON", open=False):
                    ui["points_json"] = gr.JSON(label="Sampling points")
            with gr.Tab("Layers", id="layers"):
                caption("Every decoder layer of the selected query: its reference box (white), sampling points "
                        "(colour: level; size and opacity: weight) and the box after the layer (yellow).")
                ui["layer_grid"] = picture("layer-grid", format="png")
            with gr.Tab("Heatmaps", id="heatmaps"):
                with gr.Row():
                    ui["heat_source"] = gr.Radio(list(HEATMAP_SOURCES), value=HEATMAP_SOURCES[0],
                                                 label="Attention of", elem_id="heat-source")
                    ui["heat_layer"] = slider("heat_layer", 1, config.dec_layers, config.dec_layers, "Decoder layer")
                    ui["heat_head"] = gr.Radio(indices(config.num_heads), value=inputs.ALL, label="Head",
                                               elem_id="heat-head")
                caption("Attention weights spread onto each feature level's grid, one panel per level.")
                ui["heatmap_image"] = picture("heatmap-image")
            with gr.Tab("Refinement", id="refinement"):
                caption("The selected query's box from its proposal through every decoder layer, with the "
                        "class it predicts after each.")
                ui["refine_image"] = picture("refine-image")
                ui["refine_table"] = gr.Dataframe(interactive=False, elem_id="refine-table")
                steps_tab.build_refinement_extra(ui)


def wire(page) -> None:
    ui = page.ui
    page.when([ui.top_n.release, ui.proposal_color.input], change_proposals)
    page.when([ui.proposal_image.select], click_proposals, selected=True)
    page.when([ui.layer.release, ui.head.input, ui.level.input, ui.point_color.input, ui.point_extras.input], inspect)
    page.when([ui.heat_source.input, ui.heat_layer.release, ui.heat_head.input], change_heatmaps)


# -- handlers --------------------------------------------------------------------------------------

def change_proposals(event: PageEvent, stored: StoredResult) -> Views:
    """Top-N or colouring of the proposals changed."""
    controls = event.controls
    slot = selection.shown_slot(controls, stored.result)
    return {"proposal_image": panels.proposals_image(stored, selection.detections(stored, controls),
                                                     controls.proposals, slot)}


def click_proposals(event: PageEvent, stored: StoredResult) -> Views:
    """A click on the proposals image selects the query slot the smallest proposal under the
    cursor seeded (offering every proposal there when several are)."""
    x, y = event.point
    height, width = stored.canvas.shape[:2]
    if not (0 <= x < width and 0 <= y < height):  # the legend below the picture
        return {}
    slots = panels.proposals_at(stored, event.controls.proposals.top_n, x / stored.scale, y / stored.scale)
    if not slots:
        return {}
    views = selection.select_query(event, stored, slots[0])
    lineage = {s: panels.query_lineage(stored.result, s) for s in slots[:12]}
    listed = [(f"slot {s}: encoder score {lineage[s].encoder_score:.2f}", s) for s in lineage]
    return {**views, "candidates": selection.candidates(listed, "Proposals under the cursor, smallest first")}


def inspect(event: PageEvent, stored: StoredResult) -> Views:
    """Layer, head, level, colour or extras of the sampling points changed."""
    controls, result = event.controls, stored.result
    if controls.slot is None:
        return {}
    slot = inputs.query_slot(controls.slot, result.num_queries)
    return selection.sampling_views(stored, slot, selection.sampling_options(controls, result))


def change_heatmaps(event: PageEvent, stored: StoredResult) -> Views:
    """Heatmap controls changed: the decoder attention heatmaps."""
    controls, result = event.controls, stored.result
    slot = selection.shown_slot(controls, result)
    return {"heatmap_image": panels.decoder_heatmaps(stored, selection.detections(stored, controls), slot,
                                                     selection.heatmap(controls, result))}


# -- views -----------------------------------------------------------------------------------------

def new_result_views(stored: StoredResult, view: DetectionView, slot: int | None, controls: PageControls) -> Views:
    """The tab's views of a new result beyond the selected query's: the proposals, the query
    selection's score maps and the controls sized for the model."""
    result = stored.result
    m, l, _ = result.attention_shape
    return {"proposal_image": panels.proposals_image(stored, view, controls.proposals, slot),
            "sel_maps": panels.score_maps_image(stored),
            **decoder_ranges(result.num_layers, m, l, result.num_queries, controls.proposals.top_n)}


def decoder_ranges(layers: int, heads: int, levels: int, queries: int, top_n: int) -> Views:
    """The decoder controls sized for a model (`layers` decoder layers, `heads` heads, `levels`
    feature levels, `queries` queries)."""
    return {
        "layer": gr.Slider(minimum=1, maximum=layers, value=layers, step=1),
        "head": gr.Radio(choices=indices(heads), value=inputs.ALL),
        "level": gr.Radio(choices=indices(levels), value=inputs.ALL),
        "top_n": gr.Slider(maximum=queries, value=min(top_n, queries)),
        "heat_layer": gr.Slider(minimum=1, maximum=layers, value=layers, step=1),
        "heat_head": gr.Radio(choices=indices(heads), value=inputs.ALL),
    }
