"""The page: its components (`build_layout`) and which user action calls which `Explorer` method
(`wire`). Callbacks return dicts keyed by view name; `_bind` turns those names into components.

API endpoints (gradio_client): "/detect" (image, model, checkpoint path or URL, variant, max input
side, threshold, max detections -> annotated image, detections.json); "/inspect" (query slot,
layer, head, level, colour -> sampling-point overlay, points JSON, attention mass per head and
level); "/encoder" (token level, row, column, encoder layer, head, level, colour -> the token's
sampling-point overlay, points JSON, attention mass); "/internals" (-> internals.npz). All but
"/detect" read the result "/detect" (or the Detect button) stored in the same session.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging

import gradio as gr
import numpy as np

from .. import ops
from ..sources import zoo
from ..model.config import VARIANTS
from . import choices, families_ui, gpu, inputs
from .callbacks import Explorer, example_files, max_input_label
from .files import save_drawn_image
from .settings import AppSettings

log = logging.getLogger("dino_explorer")

TITLE = "DINO Explorer"
INTRO = ("**DINO Explorer**: the DINO detector, and a look inside it. Upload an image or pick an example and press "
         "**Detect**; click a box (or pick a query) to follow it, click the Encoder tab's image to pick an encoder "
         "token. Every tab re-draws from the stored result.")
SHIPPED_NOTE = ("The shipped model (`dino-tiny`) was trained on synthetic scenes and knows only eight shapes "
                "(circle, square, triangle, star, ring, cross, hexagon, ellipse): on photos it finds shapes, "
                "not objects. For COCO's 80 classes, use a model of the zoo (downloaded once):")
# The page's own styles: pictures as tall as the window allows (and no taller than their pixels),
# model names that wrap instead of being cut off.
PAGE_CSS = """
.view-image img { max-height: calc(100vh - 150px); }
.view-image { min-height: 240px; }
#model-choice ul.options li, #model-choice ul.options { white-space: normal; }
#model-choice input { text-overflow: ellipsis; }
.caption p { margin: 0; font-size: var(--text-sm); color: var(--body-text-color-subdued); }
"""
# Pressing Enter in a slider's number box commits the value, as leaving the box does.
PAGE_JS = """
if (!window.dinoExplorerPage) {
  window.dinoExplorerPage = true;
  const style = document.createElement("style");
  style.textContent = %s;
  document.head.appendChild(style);
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (event.key === "Enter" && box instanceof HTMLInputElement && box.type === "number"
        && box.closest(".commit-on-enter")) {
      box.blur();
    }
  }, true);
}
"""


class UI(dict):
    """The page's components by view name (a dict, so callbacks' results map onto it)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _caption(text: str) -> gr.Markdown:
    return gr.Markdown(text, elem_classes=["caption"])


def _view(elem_id: str, **kwargs) -> gr.Image:
    """A picture the page draws: no floating label over it (a caption goes above), as tall as the
    window allows."""
    kwargs.setdefault("format", "jpeg")
    return gr.Image(interactive=False, show_label=False, elem_id=elem_id, elem_classes=["view-image"],
                    buttons=["download", "fullscreen"], **kwargs)


def _head_and_level(ui: UI, prefix: str, elem_prefix: str) -> None:
    ui[f"{prefix}head"] = gr.Radio([inputs.ALL] + [str(i) for i in range(1, 9)], value=inputs.ALL, label="Head",
                                   elem_id=f"{elem_prefix}head")
    ui[f"{prefix}level"] = gr.Radio([inputs.ALL] + [str(i) for i in range(1, 5)], value=inputs.ALL, label="Level",
                                    elem_id=f"{elem_prefix}level")


def build_layout(default_model: str, end_session) -> UI:
    """Create the components (inside a gr.Blocks context); `end_session(session)` is called when a
    session's state is deleted."""
    ui = UI()
    ui["session"] = gr.State(None, delete_callback=end_session)
    ui["enc_token"] = gr.State(None)
    gr.Markdown(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            ui["image_in"] = gr.Image(label="Image", show_label=False, type="filepath", image_mode=None,
                                      sources=["upload", "clipboard"], height=220, elem_id="image-in")
            ui["detect"] = gr.Button("Detect", variant="primary", elem_id="detect-button")
            ui["threshold"] = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Score threshold", elem_id="threshold",
                                        elem_classes=["commit-on-enter"])
            ui["max_detections"] = gr.Slider(1, inputs.MAX_DETECTIONS, value=100, step=1, label="Max detections",
                                             elem_id="max-detections", elem_classes=["commit-on-enter"])
            with gr.Accordion("Model", open=True):
                ui["model_choice"] = gr.Dropdown(choices.model_choices(), value=default_model, label="Model",
                                                 elem_id="model-choice")
                ui["checkpoint"] = gr.Textbox(label="Checkpoint path or URL", placeholder="https://…/checkpoint.pth",
                                              visible=False)
                families_ui.build_prompt(ui)
                ui["variant"] = gr.Dropdown([choices.AUTO_VARIANT, *VARIANTS], value=choices.AUTO_VARIANT,
                                            label="Variant of the checkpoint",
                                            visible=not default_model.startswith(("untrained:", "zoo:")))
                config = choices.resolve(default_model, "", None).config
                max_side = config.max_size if config else max(c.max_size for c in VARIANTS.values())
                ui["max_input"] = gr.Slider(32, max_side, value=max_side, step=1, elem_id="max-input",
                                            label=max_input_label(config) if config else "Max input side (px)",
                                            elem_classes=["commit-on-enter"])
                with gr.Column(visible=default_model == choices.SHIPPED) as ui["shipped_note"]:
                    gr.Markdown(SHIPPED_NOTE)
                    ui["coco_model"] = gr.Button(f"Use {zoo.get(choices.COCO_MODEL).name}", size="sm",
                                                 elem_id="coco-model")
            ui["examples_slot"] = gr.Column()
        with gr.Column(scale=3):
            ui["notice"] = gr.Markdown("", elem_id="notice")
            with gr.Row():
                ui["query"] = gr.Dropdown([], label="Query to inspect (or click a box)", scale=3, elem_id="query")
                ui["slot"] = gr.Number(value=0, label="Query slot (Enter)", precision=0, scale=1, elem_id="slot")
            ui["candidates"] = gr.Radio([], label="Boxes under the cursor", visible=False, elem_id="candidates")
            ui["query_info"] = gr.Markdown("", elem_id="query-info")
            families_ui.build_token_scores(ui)
            with gr.Tabs(elem_id="tabs"):
                _detections_tab(ui)
                _proposals_tab(ui)
                _sampling_tab(ui)
                with gr.Tab("Layers", id="layers"):
                    _caption("Every decoder layer of the selected query: its reference box (white), sampling points "
                             "(colour: level; size and opacity: weight) and the box after the layer (yellow).")
                    ui["layer_grid"] = _view("layer-grid", format="png")
                _heatmaps_tab(ui)
                with gr.Tab("Refinement", id="refinement"):
                    _caption("The selected query's box from its proposal through every decoder layer, with the "
                             "class it predicts after each.")
                    ui["refine_image"] = _view("refine-image")
                    ui["refine_table"] = gr.Dataframe(interactive=False, elem_id="refine-table")
                _encoder_tab(ui)
                with gr.Tab("Runtime", id="runtime"):
                    ui["runtime"] = gr.Markdown("Run a detection to see the runtime.", elem_id="runtime")
    gr.HTML("", js_on_load=PAGE_JS % json.dumps(PAGE_CSS), container=False, padding=False)
    return ui


def _detections_tab(ui: UI) -> None:
    with gr.Tab("Detections", id="detections"):
        _caption("Detections: click a box to inspect its query (boxes inside each other are all offered).")
        ui["det_image"] = _view("det-image")
        with gr.Row():
            ui["download_json"] = gr.DownloadButton("detections.json", size="sm", elem_id="download-json")
            ui["download_coco"] = gr.DownloadButton("COCO results (for pycocotools)", size="sm",
                                                    elem_id="download-coco")
            ui["download_internals"] = gr.DownloadButton("internals.npz (all the arrays)", size="sm",
                                                         elem_id="download-internals")
        ui["table"] = gr.Dataframe(headers=["#", "label", "score", "slot", "x0", "y0", "x1", "y1"],
                                   interactive=False, max_height=260, elem_id="det-table")
        with gr.Accordion("detections.json", open=False):
            ui["det_json"] = gr.JSON(label="Detections")


def _proposals_tab(ui: UI) -> None:
    with gr.Tab("Proposals", id="proposals"):
        with gr.Row():
            ui["top_n"] = gr.Slider(1, inputs.MAX_PROPOSALS, value=100, step=1, elem_id="top-n",
                                    label="Top proposals (by encoder score)", elem_classes=["commit-on-enter"])
            ui["proposal_color"] = gr.Radio(list(inputs.PROPOSAL_COLORS), value="score", label="Colour by")
        _caption("The encoder's top-k proposals (the decoder's first boxes); click one to follow the query it seeded.")
        ui["proposal_image"] = _view("proposal-image")


@contextlib.contextmanager
def _picture_and_controls(ui: UI, name: str, caption: str):
    """A view `ui[name]` with its caption, and a narrow column beside it for the controls made in
    the `with` block."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            _caption(caption)
            ui[name] = _view(name.replace("_", "-"))
        with gr.Column(scale=1, min_width=230):
            yield


def _sampling_tab(ui: UI) -> None:
    with gr.Tab("Sampling points", id="sampling"):
        with _picture_and_controls(ui, "sampling_image", "The selected query's reference box (white) and sampling "
                                   "points in one decoder layer."):
            ui["layer"] = gr.Slider(1, 6, value=6, step=1, label="Decoder layer", elem_id="layer",
                                    elem_classes=["commit-on-enter"])
            ui["point_color"] = gr.Radio(list(inputs.POINT_COLORS), value="level", label="Colour by",
                                         elem_id="sampling-color")
            _head_and_level(ui, "", "")
            ui["point_extras"] = gr.CheckboxGroup(list(inputs.POINT_EXTRAS), label="Show",
                                                  elem_id="sampling-extras")
        ui["mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
        with gr.Accordion("Sampling points JSON", open=False):
            ui["points_json"] = gr.JSON(label="Sampling points")


def _heatmaps_tab(ui: UI) -> None:
    with gr.Tab("Heatmaps", id="heatmaps"):
        with gr.Row():
            ui["heat_source"] = gr.Radio(list(inputs.HEATMAP_SOURCES), value=inputs.HEATMAP_SOURCES[0],
                                         label="Attention of", elem_id="heat-source")
            ui["heat_layer"] = gr.Slider(1, 6, value=6, step=1, label="Decoder layer", elem_id="heat-layer",
                                         elem_classes=["commit-on-enter"])
            ui["heat_head"] = gr.Radio([inputs.ALL] + [str(i) for i in range(1, 9)], value=inputs.ALL, label="Head",
                                       elem_id="heat-head")
        _caption("Attention weights spread onto each feature level's grid, one panel per level.")
        ui["heatmap_image"] = _view("heatmap-image")


def _encoder_tab(ui: UI) -> None:
    with gr.Tab("Encoder", id="encoder"):
        with _picture_and_controls(ui, "enc_image", "Click anywhere to pick the encoder token of the chosen level "
                                   "under the cursor (its cell in white): where it looks in one encoder layer."):
            ui["token_level"] = gr.Radio([str(i) for i in range(1, 5)], value="1", label="Token level",
                                         elem_id="token-level")
            with gr.Row():
                ui["token_row"] = gr.Number(None, label="Row (Enter)", precision=0, min_width=80,
                                            elem_id="token-row")
                ui["token_col"] = gr.Number(None, label="Column (Enter)", precision=0, min_width=80,
                                            elem_id="token-col")
            ui["seed_token"] = gr.Button("Token that seeded the selected query", size="sm", elem_id="seed-token")
            ui["enc_layer"] = gr.Slider(1, 6, value=6, step=1, label="Encoder layer", elem_id="enc-layer",
                                        elem_classes=["commit-on-enter"])
            ui["enc_color"] = gr.Radio(list(inputs.POINT_COLORS), value="level", label="Colour by",
                                       elem_id="enc-color")
            _head_and_level(ui, "enc_", "enc-")
            ui["enc_extras"] = gr.CheckboxGroup(list(inputs.POINT_EXTRAS), label="Show", elem_id="enc-extras")
        ui["token_info"] = gr.Markdown("", elem_id="token-info")
        ui["enc_mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
        _caption("The token's attention spread onto each level's grid.")
        ui["enc_heatmap"] = _view("enc-heatmap")
        with gr.Accordion("Sampling points JSON", open=False):
            ui["enc_points"] = gr.JSON(label="Encoder sampling points")


def _bind(ui: UI, method):
    """`method`'s {view name: value} as {component: value}; a ValueError (bad input, expired
    result, unusable checkpoint) becomes a message on the page and one line in the log."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            views = method(*args, **kwargs)
        except ValueError as err:
            log.info("%s: %s", method.__name__, err)
            raise gr.Error(str(err), print_exception=False) from None
        return {ui[name]: _served(ui[name], value) for name, value in views.items()}
    return call


def _served(component, value):
    """A drawn picture as the path of a file written once, whole (see `files.save_drawn_image`)."""
    if isinstance(component, gr.Image) and isinstance(value, np.ndarray):
        return save_drawn_image(value, component.GRADIO_CACHE, component.format or "webp")
    return value


def wire(ui: UI, explorer: Explorer, concurrency: int) -> None:
    """Connect each user action to its Explorer method (one event, one round trip, per action).

    Every event takes the controls' raw values (`preprocess=False`): `ui.inputs` checks them, so
    a bad value is one clear message (and one log line) whichever way it came.
    """
    detect_inputs = [ui.session, ui.image_in, ui.model_choice, ui.checkpoint, ui.variant, ui.max_input,
                     ui.threshold, ui.max_detections]
    sampling_controls = [ui.layer, ui.head, ui.level, ui.point_color]
    heat_controls = [ui.heat_source, ui.heat_layer, ui.heat_head]
    encoder_controls = [ui.enc_layer, ui.enc_head, ui.enc_level, ui.enc_color, ui.enc_extras]
    # What selecting a query reads, after the session and the slot.
    select_inputs = [ui.threshold, ui.max_detections, *sampling_controls, ui.point_extras, ui.top_n,
                     ui.proposal_color, *heat_controls]
    query_views = [ui.query, ui.slot, ui.candidates, ui.query_info, ui.det_image, ui.table, ui.proposal_image,
                   ui.sampling_image, ui.points_json, ui.mass, ui.layer_grid, ui.heatmap_image, ui.refine_image,
                   ui.refine_table, ui.token_scores]
    detection_views = [ui.det_image, ui.det_json, ui.table, ui.download_json, ui.download_coco, ui.query, ui.slot,
                       ui.notice, ui.candidates]
    encoder_views = [ui.enc_image, ui.enc_points, ui.enc_mass, ui.enc_heatmap, ui.token_info, ui.token_level,
                     ui.token_row, ui.token_col, ui.enc_token]
    every_view = list(dict.fromkeys([
        ui.session, *detection_views, *query_views, ui.proposal_image, ui.runtime, ui.download_internals,
        ui.layer, ui.head, ui.level, ui.top_n, ui.heat_layer, ui.heat_head, *encoder_views, ui.enc_layer,
        ui.enc_head, ui.enc_level]))
    # Detects run side by side (loading models and reading images); the model run itself takes one of
    # `concurrency` slots inside the callback, so that a download never holds up others' runs.
    model_run = {"concurrency_id": "detect", "concurrency_limit": max(4, concurrency)}
    raw = {"preprocess": False}
    private = {"api_visibility": "private", "show_progress": "hidden", **raw}

    # API endpoints, triggered by no control: the page's own events below draw every view at once.
    # Registered first, so that they own their names.
    gr.on([], _bind(ui, explorer.detect_api), detect_inputs, [ui.session, ui.det_image, ui.det_json],
          api_name="detect", **raw, **model_run)
    gr.on([], _bind(ui, explorer.inspect), [ui.session, ui.slot, *sampling_controls],
          [ui.sampling_image, ui.points_json, ui.mass], api_name="inspect", **raw)
    gr.on([], _bind(ui, explorer.encoder_api),
          [ui.session, ui.token_level, ui.token_row, ui.token_col, ui.enc_layer, ui.enc_head, ui.enc_level,
           ui.enc_color], [ui.enc_image, ui.enc_points, ui.enc_mass], api_name="encoder", **raw)
    gr.on([], _bind(ui, explorer.internals_api), [ui.session], [ui.download_internals], api_name="internals", **raw)

    # The image is decoded by dino_demo.io.images with its own limits, so Gradio's preprocessing is off.
    ui_detect = {"fn": _bind(ui, explorer.detect),
                 "inputs": detect_inputs + [ui.top_n, ui.proposal_color, *sampling_controls, ui.point_extras,
                                            ui.heat_source, ui.prompt],
                 "outputs": every_view, "api_visibility": "private", **raw, **model_run}
    ui.detect.click(**ui_detect)
    with ui.examples_slot:
        examples = gr.Examples([[str(p)] for p in example_files()], inputs=[ui.image_in],
                               label="Examples (photos and synthetic scenes)", examples_per_page=12,
                               cache_examples=False)
    examples.load_input_event.then(**ui_detect)

    gr.on([ui.threshold.release, ui.max_detections.release], _bind(ui, explorer.change_detection_options),
          [ui.session, ui.threshold, ui.max_detections, ui.slot, ui.top_n, ui.proposal_color, *heat_controls],
          [*detection_views, ui.proposal_image, ui.query_info, ui.heatmap_image], **private)
    gr.on([ui.top_n.release, ui.proposal_color.input], _bind(ui, explorer.change_proposals),
          [ui.session, ui.top_n, ui.proposal_color, ui.threshold, ui.max_detections, ui.slot], [ui.proposal_image],
          **private)

    # Selecting a query, whichever way.
    ui.query.input(_bind(ui, explorer.select_query), [ui.session, ui.query, *select_inputs], query_views, **private)
    gr.on([ui.slot.submit, ui.slot.blur], _bind(ui, explorer.type_slot),
          [ui.session, ui.slot, ui.query, *select_inputs], query_views, **private)
    ui.candidates.input(_bind(ui, explorer.select_candidate), [ui.session, ui.candidates, *select_inputs],
                        query_views, **private)
    ui.table.select(_bind(ui, explorer.select_table_row), [ui.session, *select_inputs], query_views, **private)
    ui.det_image.select(_bind(ui, explorer.click_detections), [ui.session, *select_inputs], query_views, **private)
    ui.proposal_image.select(_bind(ui, explorer.click_proposals), [ui.session, *select_inputs], query_views,
                             **private)

    gr.on([ui.layer.release, ui.head.input, ui.level.input, ui.point_color.input, ui.point_extras.input],
          _bind(ui, explorer.inspect), [ui.session, ui.slot, *sampling_controls, ui.point_extras],
          [ui.sampling_image, ui.points_json, ui.mass], **private)
    gr.on([ui.heat_source.input, ui.heat_layer.release, ui.heat_head.input], _bind(ui, explorer.change_heatmaps),
          [ui.session, ui.slot, ui.threshold, ui.max_detections, *heat_controls], [ui.heatmap_image], **private)

    # The encoder's attention of a token.
    ui.enc_image.select(_bind(ui, explorer.click_encoder), [ui.session, ui.token_level, *encoder_controls],
                        encoder_views, **private)
    gr.on([ui.token_row.submit, ui.token_col.submit], _bind(ui, explorer.select_token),
          [ui.session, ui.token_level, ui.token_row, ui.token_col, *encoder_controls], encoder_views, **private)
    ui.token_level.input(_bind(ui, explorer.change_token_level),
                         [ui.session, ui.enc_token, ui.token_level, *encoder_controls], encoder_views, **private)
    ui.seed_token.click(_bind(ui, explorer.seed_token), [ui.session, ui.slot, *encoder_controls], encoder_views,
                        **private)
    gr.on([ui.enc_layer.release, ui.enc_head.input, ui.enc_level.input, ui.enc_color.input, ui.enc_extras.input],
          _bind(ui, explorer.inspect_encoder), [ui.session, ui.enc_token, *encoder_controls], encoder_views,
          **private)
    ui.model_choice.change(_bind(ui, explorer.choose_model), [ui.model_choice],
                           [ui.checkpoint, ui.variant, ui.max_input, ui.shipped_note], api_visibility="private",
                           queue=False)
    ui.coco_model.click(lambda: choices.COCO_MODEL, None, ui.model_choice, api_visibility="private", queue=False)


def build_demo(settings: AppSettings | None = None, **explorer_options) -> gr.Blocks:
    """The whole app, queued: one model run at a time (DINO_MODEL_CONCURRENCY), re-drawing alongside."""
    settings = settings or AppSettings.from_env()
    ops.prepare_in_background(settings.device)  # the reference op serves until the kernel is built
    explorer = Explorer(settings, **explorer_options)
    if gpu.on_zerogpu():
        explorer.preload(choices.default_choice())  # moved to "cuda" at start-up, as ZeroGPU requires
    with gr.Blocks(title=TITLE, fill_width=True, delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        ui = build_layout(choices.default_choice(), explorer.close_session)
        wire(ui, explorer, settings.model_concurrency)
        # Checkpoints copied into weights/ while the app runs appear on the next page load.
        demo.load(lambda choice: gr.Dropdown(choices=choices.model_choices(), value=choice), ui.model_choice,
                  ui.model_choice, api_visibility="private", queue=False)
        demo.unload(explorer.unload)
    demo.explorer = explorer  # for tests and benchmarks
    return demo.queue(default_concurrency_limit=4, max_size=64)
