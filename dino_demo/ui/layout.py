"""The page: its components (`build_layout`) and which user action calls which `Explorer` method
(`wire`). Callbacks return dicts keyed by view name; `_bind` turns those names into components.

API endpoints (gradio_client): "/detect" (image, model, checkpoint path or URL, variant, max input
side, threshold, max detections -> annotated image, detections.json) and "/inspect" (query slot,
layer, head, level, colour -> sampling-point overlay, points JSON, attention mass per head and
level); "/inspect" reads the result "/detect" (or the Detect button) stored in the same session.
"""
from __future__ import annotations

import functools
import logging

import gradio as gr
import numpy as np

from .. import ops
from ..io import zoo
from ..model.config import VARIANTS
from . import choices, gpu, inputs
from .callbacks import Explorer, example_files
from .files import save_drawn_image
from .settings import AppSettings

log = logging.getLogger("dino_explorer")

TITLE = "DINO Explorer"
INTRO = ("## DINO Explorer — the DINO detector, and a look inside it\n"
         "Upload an image or pick an example and press **Detect**; then click a box (or pick a query) "
         "to see its sampling points and refinement. Every tab re-draws from the stored result.")
SHIPPED_NOTE = ("The shipped model (`dino-tiny`) was trained on synthetic scenes and knows only eight shapes "
                "(circle, square, triangle, star, ring, cross, hexagon, ellipse): on photos it finds shapes, "
                "not objects. For COCO's 80 classes, use a model of the zoo (downloaded once):")


class UI(dict):
    """The page's components by view name (a dict, so callbacks' results map onto it)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def build_layout(default_model: str, end_session) -> UI:
    """Create the components (inside a gr.Blocks context); `end_session(session)` is called when a
    session's state is deleted."""
    ui = UI()
    ui["session"] = gr.State(None, delete_callback=end_session)
    gr.Markdown(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            ui["image_in"] = gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                      height=220, elem_id="image-in")
            ui["detect"] = gr.Button("Detect", variant="primary", elem_id="detect-button")
            ui["threshold"] = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Score threshold", elem_id="threshold")
            ui["max_detections"] = gr.Slider(1, inputs.MAX_DETECTIONS, value=100, step=1, label="Max detections",
                                             elem_id="max-detections")
            with gr.Accordion("Model", open=True):
                ui["model_choice"] = gr.Dropdown(choices.model_choices(), value=default_model, label="Model",
                                                 elem_id="model-choice")
                ui["checkpoint"] = gr.Textbox(label="Checkpoint path or URL", placeholder="https://…/checkpoint.pth",
                                              visible=False)
                ui["variant"] = gr.Dropdown([choices.AUTO_VARIANT, *VARIANTS], value=choices.AUTO_VARIANT,
                                            label="Variant of the checkpoint",
                                            visible=not default_model.startswith(("untrained:", "zoo:")))
                config = choices.resolve(default_model, "", None).config
                max_side = config.max_size if config else max(c.max_size for c in VARIANTS.values())
                ui["max_input"] = gr.Slider(32, max_side, value=max_side, step=1, label="Max input side (px)",
                                            elem_id="max-input")
                with gr.Column(visible=default_model == choices.SHIPPED) as ui["shipped_note"]:
                    gr.Markdown(SHIPPED_NOTE)
                    ui["coco_model"] = gr.Button(f"Use {zoo.get(choices.COCO_MODEL).name}", size="sm",
                                                 elem_id="coco-model")
            ui["examples_slot"] = gr.Column()
        with gr.Column(scale=3):
            ui["notice"] = gr.Markdown("", elem_id="notice")
            with gr.Row():
                ui["query"] = gr.Dropdown([], label="Query to inspect (or click a box)", scale=3, elem_id="query")
                ui["slot"] = gr.Number(value=0, label="Query slot", precision=0, minimum=0, scale=1, elem_id="slot")
            with gr.Tabs():
                with gr.Tab("Detections", id="detections"):
                    ui["det_image"] = gr.Image(label="Detections (click a box to inspect its query)",
                                               interactive=False, format="jpeg", height=520, elem_id="det-image")
                    with gr.Row():
                        ui["download_json"] = gr.DownloadButton("detections.json", size="sm",
                                                                elem_id="download-json")
                        ui["download_coco"] = gr.DownloadButton("COCO results (for pycocotools)", size="sm",
                                                                elem_id="download-coco")
                    ui["table"] = gr.Dataframe(headers=["#", "label", "score", "slot", "x0", "y0", "x1", "y1"],
                                               interactive=False, max_height=260)
                    with gr.Accordion("detections.json", open=False):
                        ui["det_json"] = gr.JSON(label="Detections")
                with gr.Tab("Proposals", id="proposals"):
                    with gr.Row():
                        ui["top_n"] = gr.Slider(1, inputs.MAX_PROPOSALS, value=100, step=1,
                                                label="Top proposals (by encoder score)", elem_id="top-n")
                        ui["proposal_color"] = gr.Radio(list(inputs.PROPOSAL_COLORS), value="score",
                                                        label="Colour by")
                    ui["proposal_image"] = gr.Image(label="Encoder top-k proposals (thick: became a detection)",
                                                    interactive=False, format="jpeg", height=520,
                                                    elem_id="proposal-image")
                with gr.Tab("Sampling points", id="sampling"):
                    with gr.Row():
                        ui["layer"] = gr.Slider(1, 6, value=6, step=1, label="Decoder layer", elem_id="layer")
                        ui["point_color"] = gr.Radio(list(inputs.POINT_COLORS), value="level", label="Colour by",
                                                     elem_id="sampling-color")
                    with gr.Row():
                        ui["head"] = gr.Radio([inputs.ALL] + [str(i) for i in range(1, 9)], value=inputs.ALL,
                                              label="Head", elem_id="head")
                        ui["level"] = gr.Radio([inputs.ALL] + [str(i) for i in range(1, 5)], value=inputs.ALL,
                                               label="Level", elem_id="level")
                    ui["sampling_image"] = gr.Image(label="Reference box (white) and sampling points (size ∝ weight)",
                                                    interactive=False, format="jpeg", height=520,
                                                    elem_id="sampling-image")
                    ui["mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
                    with gr.Accordion("Sampling points JSON", open=False):
                        ui["points_json"] = gr.JSON(label="Sampling points")
                with gr.Tab("Refinement", id="refinement"):
                    ui["refine_image"] = gr.Image(label="Box after each decoder layer", interactive=False,
                                                  format="jpeg", height=520, elem_id="refine-image")
                    ui["refine_table"] = gr.Dataframe(headers=["stage", "x0", "y0", "x1", "y1"], interactive=False)
                with gr.Tab("Runtime", id="runtime"):
                    ui["runtime"] = gr.Markdown("Run a detection to see the runtime.", elem_id="runtime")
    return ui


def _bind(ui: UI, method):
    """`method`'s {view name: value} as {component: value}; a ValueError (bad input, expired
    result, unusable checkpoint) becomes a message on the page and one line in the log."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            views = method(*args, **kwargs)
        except ValueError as err:
            log.info("%s: %s", method.__name__, err)
            raise gr.Error(str(err)) from None
        return {ui[name]: _served(ui[name], value) for name, value in views.items()}
    return call


def _served(component, value):
    """A drawn picture as the path of a file written once, whole (see `files.save_drawn_image`)."""
    if isinstance(component, gr.Image) and isinstance(value, np.ndarray):
        return save_drawn_image(value, component.GRADIO_CACHE, component.format or "webp")
    return value


def wire(ui: UI, explorer: Explorer, concurrency: int) -> None:
    """Connect each user action to its Explorer method (one event, one round trip, per action)."""
    detect_inputs = [ui.session, ui.image_in, ui.model_choice, ui.checkpoint, ui.variant, ui.max_input,
                     ui.threshold, ui.max_detections]
    sampling_controls = [ui.layer, ui.head, ui.level, ui.point_color]
    query_views = [ui.query, ui.slot, ui.det_image, ui.sampling_image, ui.points_json, ui.mass, ui.refine_image,
                   ui.refine_table]
    detection_views = [ui.det_image, ui.det_json, ui.table, ui.download_json, ui.download_coco, ui.query, ui.slot,
                       ui.notice]
    every_view = list(dict.fromkeys([ui.session, *detection_views, *query_views, ui.proposal_image, ui.runtime,
                                     ui.layer, ui.head, ui.level, ui.top_n]))
    # Detects run side by side (loading models and reading images); the model run itself takes one of
    # `concurrency` slots inside the callback, so that a download never holds up others' runs.
    model_run = {"concurrency_id": "detect", "concurrency_limit": max(4, concurrency)}
    private = {"api_visibility": "private", "show_progress": "hidden"}

    # API endpoints, triggered by no control: the page's own events below draw every view at once.
    # Registered first, so that they own their names.
    gr.on([], _bind(ui, explorer.detect_api), detect_inputs, [ui.session, ui.det_image, ui.det_json],
          api_name="detect", preprocess=False, **model_run)
    gr.on([], _bind(ui, explorer.inspect), [ui.session, ui.slot, *sampling_controls],
          [ui.sampling_image, ui.points_json, ui.mass], api_name="inspect")

    # The image is decoded by dino_demo.io.images with its own limits, so Gradio's preprocessing is off.
    ui_detect = {"fn": _bind(ui, explorer.detect),
                 "inputs": detect_inputs + [ui.top_n, ui.proposal_color, *sampling_controls],
                 "outputs": every_view, "preprocess": False, "api_visibility": "private", **model_run}
    ui.detect.click(**ui_detect)
    with ui.examples_slot:
        examples = gr.Examples([[str(p)] for p in example_files()], inputs=[ui.image_in],
                               label="Examples (photos and synthetic scenes)", examples_per_page=12,
                               cache_examples=False)
    examples.load_input_event.then(**ui_detect)

    gr.on([ui.threshold.release, ui.max_detections.release], _bind(ui, explorer.change_detection_options),
          [ui.session, ui.threshold, ui.max_detections, ui.slot, ui.top_n, ui.proposal_color],
          [*detection_views, ui.proposal_image], **private)
    gr.on([ui.top_n.release, ui.proposal_color.input], _bind(ui, explorer.change_proposals),
          [ui.session, ui.top_n, ui.proposal_color, ui.threshold, ui.max_detections], [ui.proposal_image], **private)
    select_inputs = [ui.threshold, ui.max_detections, *sampling_controls]
    ui.query.input(_bind(ui, explorer.select_query), [ui.session, ui.query, *select_inputs], query_views, **private)
    ui.slot.submit(_bind(ui, explorer.select_query), [ui.session, ui.slot, *select_inputs], query_views, **private)
    ui.det_image.select(_bind(ui, explorer.click_detections), [ui.session, *select_inputs], query_views, **private)
    gr.on([ui.layer.release, ui.head.input, ui.level.input, ui.point_color.input], _bind(ui, explorer.inspect),
          [ui.session, ui.slot, *sampling_controls], [ui.sampling_image, ui.points_json, ui.mass], **private)
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
