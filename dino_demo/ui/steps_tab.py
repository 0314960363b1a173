"""DINO's ideas step by step on the page: query selection under the Proposals tab (the encoder's
score maps, the top-k picks, the selected query's token, fixed proposal and encoder box), the
look-forward-twice panels of the Refinement tab, and the Forward pass tab (every stage's tensors, named as in the
official code). Components are made by the `build_*` functions inside the page's tabs, events by
`wire`; handlers are plain functions returning {view name: value}."""
from __future__ import annotations

import json
import logging

import gradio as gr
import pandas as pd

from ..explore.refinement import look_forward_rows, look_forward_twice, render_look_forward_twice
from ..explore.selection import level_scores, render_score_maps, render_selection_step, selection_step
from ..explore.trace import trace_document, traced_run
from ..io.images import MAX_SIDE, load_image
from . import choices, gpu, inputs
from .denoising_tab import image_file, load_model
from .store import StoredResult

log = logging.getLogger("dino_explorer")

TRACE_HEADERS = ["stage", "name", "shape", "dtype", "meaning", "preview"]
TWICE_HEADERS = ["layer", "r: reference in (xyxy px)", "b: box the loss sees", "r': next reference", "max |b - r'|"]


# -- handlers --------------------------------------------------------------------------------------

def query_views(stored: StoredResult | None, slot) -> dict:
    """The query-selection section and the look-forward-twice panels for query `slot` of a stored
    result; empty views when there is no result yet."""
    if stored is None:
        return {"sel_maps": None, "sel_step": None, "sel_info": "Run a detection first.", "twice_image": None,
                "twice_table": None}
    result = stored.result
    index = _slot(slot, result)
    step = selection_step(result, index)
    steps = look_forward_twice(result, index)
    lineage = step.lineage
    info = (f"**Query slot {index}**: token {lineage.token} (level {lineage.level + 1}, cell {lineage.cell}) ranked "
            f"{lineage.rank + 1} of {lineage.num_queries} by encoder score ({lineage.encoder_score:.3f}). Its decoder "
            f"query = content `tgt_embed[{index}]` (learned, image-independent) + position: the encoder box "
            f"(detached), the first reference.")
    return {"sel_maps": render_score_maps(stored.canvas, stored.scale, level_scores(result), step=step),
            "sel_step": render_selection_step(stored.canvas, stored.scale, step), "sel_info": info,
            "twice_image": render_look_forward_twice(stored.canvas, stored.scale, steps),
            "twice_table": pd.DataFrame(look_forward_rows(steps), columns=TWICE_HEADERS)}


def walk(explorer, session, image, model_choice, checkpoint, variant, max_input, gr_request=None) -> dict:
    """Run the current image with the forward pass traced: the table and trace.json."""
    path, name = image_file(image)
    if not path:
        raise ValueError("Upload an image or pick an example first.")
    model_choice = choices.resolve(model_choice, checkpoint, variant)
    side = inputs.max_input_side(max_input)
    loaded = load_image(path, max_side=MAX_SIDE)
    model, cfg = load_model(explorer, model_choice)
    try:
        result, stages = _traced(model, cfg, loaded.array, max_size=side, model_id=model_choice.model_id)
    except RuntimeError as err:
        log.exception("traced run failed")
        raise ValueError(f"The traced run failed: {err}") from None
    document = trace_document(result, stages, source=name)
    session = explorer.session(session, gr_request)
    out = session.downloads() / "trace.json"
    out.write_text(json.dumps(document, indent=1))
    rows = [[s.stage, s.name, "×".join(str(v) for v in s.shape) or "scalar", s.dtype, s.meaning,
             json.dumps(s.preview)] for s in stages]
    return {"session": session, "trace_table": pd.DataFrame(rows, columns=TRACE_HEADERS), "trace_json": document,
            "trace_download": str(out)}


# -- layout ------------------------------------------------------------------------------------------

def build_selection_section(ui) -> None:
    """Query selection step by step, under the Proposals tab's picture."""
    with gr.Accordion("Query selection, step by step", open=True, elem_id="sel-section"):
        ui["sel_info"] = gr.Markdown("", elem_id="sel-info")
        gr.Markdown("The encoder scores every token (best class probability, a map per level); the top-k become "
                    "the decoder's queries (pink). The selected query's token is marked +.", elem_classes=["caption"])
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
    ui["twice_table"] = gr.Dataframe(headers=TWICE_HEADERS, interactive=False, elem_id="twice-table")


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


def wire(ui, explorer, bind) -> None:
    raw = {"api_visibility": "private", "preprocess": False}

    def on_query(session, slot):
        stored = explorer.store.peek(session.result_key) if session is not None else None
        return query_views(stored, slot)

    gr.on([ui.slot.change, ui.runtime.change], bind(ui, on_query), [ui.session, ui.slot],
          [ui.sel_maps, ui.sel_step, ui.sel_info, ui.twice_image, ui.twice_table], show_progress="hidden", **raw)

    def on_walk(session, image, model_choice, checkpoint, variant, max_input, request: gr.Request = None):
        return walk(explorer, session, image, model_choice, checkpoint, variant, max_input, request)

    ui.trace_run.click(bind(ui, on_walk), [ui.session, ui.image_in, ui.model_choice, ui.checkpoint, ui.variant,
                                           ui.max_input], [ui.session, ui.trace_table, ui.trace_json,
                                                           ui.trace_download], concurrency_id="detect", **raw)


_traced = gpu.gpu_function(traced_run)


def _slot(slot, result) -> int:
    try:
        index = int(float(slot))
    except (TypeError, ValueError):
        raise ValueError(f"The query slot must be a whole number, got {slot!r:.40}.") from None
    if not 0 <= index < result.num_queries:
        raise ValueError(f"The query slot must lie in 0..{result.num_queries - 1}, got {slot}.")
    return index
