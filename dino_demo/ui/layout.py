"""The page's components (`build_layout`), sized from the default model's config, and the app
(`build_app`, `build_demo`). Which user action calls which `Explorer` method is in `events`.

API endpoints (gradio_client, and MCP tools when served with `DINO_DEMO_MCP=1`): "/detect" (image,
model, checkpoint path or URL, variant, max input side, threshold, max detections -> annotated
image, detections.json); "/inspect" (query slot, layer, head, level, colour -> sampling-point
overlay, points JSON, attention mass per head and level); "/encoder" (token level, row, column,
encoder layer, head, level, colour -> the token's sampling-point overlay, points JSON, attention
mass); "/internals" (-> internals.npz). All but "/detect" read the result "/detect" (or the Detect
button) stored in the same session.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import gradio as gr

from .. import ops
from ..explore import precision as precisions
from ..explore.options import HEATMAP_SOURCES, POINT_COLORS, PROPOSAL_COLORS
from ..model.config import VARIANTS, DINOConfig
from ..sources import zoo
from ..sources.download import Policy
from . import (analysis_tab, choices, cleanup, compare_tab, denoising_tab, families_ui, gpu, inputs, memory,
               region_tab, steps_tab, video_tab)
from .callbacks import Explorer, max_input_label
from .session import Session
from .events import wire
from .settings import AppSettings

TITLE = "DINO Explorer"
INTRO = ("**DINO Explorer**: the DINO detector, and a look inside it. Pick an example or upload an image and press "
         "**Detect**; click a box (or pick a query) to follow it, click the Encoder tab's image to pick an encoder "
         "token. Every tab re-draws from the stored result.")
SHIPPED_NOTE = ("The shipped model (`dino-tiny`) knows only eight synthetic shapes (circle, square, triangle, star, "
                "ring, cross, hexagon, ellipse): on photos it finds shapes, not objects. For COCO's 80 classes, use "
                "a model of the zoo (downloaded once):")
# The page's own styles: pictures as tall as the window allows (and no taller than their pixels),
# model names that wrap instead of being cut off, a compact example gallery, the status line.
PAGE_CSS = """
.view-image img { max-height: calc(100vh - 150px); }
.view-image { min-height: 240px; }
#model-choice ul.options li, #model-choice ul.options { white-space: normal; }
#model-choice input { text-overflow: ellipsis; }
.caption p { margin: 0; font-size: var(--text-sm); color: var(--body-text-color-subdued); }
#shipped-note p { margin: 0; font-size: var(--text-sm); }
#examples .gallery { gap: 4px; }
#examples .gallery-item .container { width: 52px; height: 52px; }
#status p { margin: 0; color: var(--error-text-color); font-weight: 600; }
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


@dataclass(frozen=True)
class App:
    """The served page (`demo`) and the behaviour behind it (`explorer`: its model cache and
    result store; tests and benchmarks call its methods directly); `sweeper` removes the sessions'
    expired files (started; `sweeper.stop()` ends it)."""

    demo: gr.Blocks
    explorer: Explorer
    ui: UI
    sweeper: cleanup.Sweeper


def _caption(text: str) -> gr.Markdown:
    return gr.Markdown(text, elem_classes=["caption"])


def _view(elem_id: str, **kwargs) -> gr.Image:
    """A picture the page draws: no floating label over it (a caption goes above), as tall as the
    window allows."""
    kwargs.setdefault("format", "jpeg")
    return gr.Image(interactive=False, show_label=False, elem_id=elem_id, elem_classes=["view-image"],
                    buttons=["download", "fullscreen"], **kwargs)


def _indices(count: int, *, with_all: bool = True) -> list[str]:
    """A Radio's choices: "all" and "1".."count"."""
    return ([inputs.ALL] if with_all else []) + [str(i) for i in range(1, count + 1)]


def _slider(name: str, lo: int, hi: int, value, label: str) -> gr.Slider:
    return gr.Slider(lo, hi, value=value, step=1, label=label, elem_id=name.replace("_", "-"),
                     elem_classes=["commit-on-enter"])


def page_config(default_model: str) -> DINOConfig:
    """The config the controls are sized for before the first Detect: the default model's (its
    layers, heads, levels and queries), or the official defaults when it is known only once loaded."""
    try:
        config = choices.resolve(default_model, "", None).config
    except ValueError:
        config = None
    return config or DINOConfig()


def precision_choice(default: str, device: str) -> gr.Radio:
    """The precision of the model runs; its note says whether this device has native bfloat16."""
    note = precisions.support(device).note("bfloat16")
    return gr.Radio(list(precisions.PRECISIONS), value=default, label="Precision", info=note, elem_id="precision")


def build_layout(default_model: str, end_session, precision: str = "float32", device: str = "cpu") -> UI:
    """Create the components (inside a gr.Blocks context); `end_session(session)` is called when a
    session's state is deleted; `precision` is the Precision choice's default, `device` where the
    models run (its note says what that device offers)."""
    ui = UI()
    config = page_config(default_model)
    ui["session"] = gr.State(Session(), delete_callback=end_session)
    ui["enc_token"] = gr.State(None)
    gr.Markdown(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            _input_column(ui, default_model, config, precision, device)
        with gr.Column(scale=3):
            ui["status"] = gr.Markdown("", elem_id="status")
            ui["notice"] = gr.Markdown("", elem_id="notice")
            with gr.Row():
                ui["query"] = gr.Dropdown([], label="Query to inspect (or click a box)", scale=3, elem_id="query")
                ui["slot"] = gr.Number(value=None, label="Query slot (Enter)", precision=0, scale=1, elem_id="slot",
                                       minimum=0, maximum=config.num_queries - 1)
            ui["candidates"] = gr.Radio([], label="Boxes under the cursor", visible=False, elem_id="candidates")
            ui["query_info"] = gr.Markdown("", elem_id="query-info")
            # Six tabs (every one shown at 1366 px): the selected query's views, DINO's ideas and the
            # diagnosis views each under one tab, with their own tabs inside.
            with gr.Tabs(elem_id="tabs"):
                _detections_tab(ui)
                with gr.Tab("Query", id="query-views"):
                    families_ui.build_token_scores(ui)  # a transformers detector's prompt tokens, views it lacks
                    with gr.Tabs(elem_id="query-tabs"):
                        _query_tabs(ui, config)
                _encoder_tab(ui, config)
                with gr.Tab("DINO's ideas", id="ideas"), gr.Tabs(elem_id="ideas-tabs"):
                    denoising_tab.build(ui)
                    steps_tab.build_trace_tab(ui)
                with gr.Tab("Diagnose", id="diagnose") as ui["diagnose_tab"]:
                    with gr.Tabs(elem_id="diagnose-tabs") as ui["diagnose_tabs"]:
                        region_tab.build(ui)
                        analysis_tab.build(ui)
                        compare_tab.build(ui, default_model)
                video_tab.build(ui)
                with gr.Tab("Runtime", id="runtime"):
                    ui["runtime"] = gr.Markdown("Run a detection to see the runtime.", elem_id="runtime")
    gr.HTML("", js_on_load=PAGE_JS % json.dumps(PAGE_CSS), container=False, padding=False)
    return ui


def _query_tabs(ui: UI, config: DINOConfig) -> None:
    """The selected query's views: its proposal among the others, its sampling points, every layer,
    the attention heatmaps and its box's refinement."""
    _proposals_tab(ui, config)
    _sampling_tab(ui, config)
    with gr.Tab("Layers", id="layers"):
        _caption("Every decoder layer of the selected query: its reference box (white), sampling points "
                 "(colour: level; size and opacity: weight) and the box after the layer (yellow).")
        ui["layer_grid"] = _view("layer-grid", format="png")
    _heatmaps_tab(ui, config)
    with gr.Tab("Refinement", id="refinement"):
        _caption("The selected query's box from its proposal through every decoder layer, with the "
                 "class it predicts after each.")
        ui["refine_image"] = _view("refine-image")
        ui["refine_table"] = gr.Dataframe(interactive=False, elem_id="refine-table")
        steps_tab.build_refinement_extra(ui)


def _input_column(ui: UI, default_model: str, config: DINOConfig, precision: str, device: str) -> None:
    """Image, Detect, model, the shipped model's note and the examples (all above the fold at
    1366x768), then the detection settings."""
    ui["image_in"] = gr.Image(label="Image", show_label=False, type="filepath", image_mode=None,
                              sources=["upload", "clipboard"], height=170, elem_id="image-in")
    ui["detect"] = gr.Button("Detect", variant="primary", elem_id="detect-button")
    ui["model_choice"] = gr.Dropdown(choices.model_choices(), value=default_model, label="Model",
                                     elem_id="model-choice")
    ui["checkpoint"] = gr.Textbox(label="Checkpoint path or URL", placeholder="https://…/checkpoint.pth",
                                  elem_id="checkpoint", visible=False)
    families_ui.build_prompt(ui, default_model)
    with gr.Column(visible=default_model == choices.SHIPPED, elem_id="shipped-note") as ui["shipped_note"]:
        gr.Markdown(SHIPPED_NOTE)
        ui["coco_model"] = gr.Button(f"Use {zoo.get(choices.COCO_MODEL).name}", size="sm", elem_id="coco-model")
    ui["examples_slot"] = gr.Column(elem_id="examples")
    with gr.Accordion("Detection settings", open=True):
        ui["threshold"] = gr.Slider(0.0, 1.0, value=inputs.DEFAULTS["threshold"], step=0.01, label="Score threshold",
                                    elem_id="threshold", elem_classes=["commit-on-enter"])
        ui["max_detections"] = _slider("max_detections", 1, inputs.MAX_DETECTIONS, inputs.DEFAULTS["max_detections"],
                                       "Max detections")
        ui["variant"] = gr.Dropdown([choices.AUTO_VARIANT, *VARIANTS], value=choices.AUTO_VARIANT,
                                    label="Variant of the checkpoint",
                                    visible=not choices.variant_is_fixed(default_model))
        ui["max_input"] = _slider("max_input", 32, config.max_size, config.max_size, max_input_label(config))
        ui["precision"] = precision_choice(precision, device)


def _detections_tab(ui: UI) -> None:
    with gr.Tab("Detections", id="detections"):
        _caption("Detections, one box per query (its classes together): click a box to inspect its query "
                 "(boxes inside each other are all offered).")
        ui["det_image"] = _view("det-image")
        with gr.Row():
            ui["download_json"] = gr.DownloadButton("detections.json", size="sm", elem_id="download-json")
            ui["download_coco"] = gr.DownloadButton("COCO results (for pycocotools)", size="sm",
                                                    elem_id="download-coco")
            ui["download_internals"] = gr.DownloadButton("internals.npz (all the arrays)", size="sm",
                                                         elem_id="download-internals")
        ui["table"] = gr.Dataframe(headers=["#", "label", "score", "slot", "x0", "y0", "x1", "y1"],
                                   interactive=False, max_height=260, elem_id="det-table")
        with gr.Accordion("detections.json (every (query, class) pair of the official post-processing)", open=False):
            ui["det_json"] = gr.JSON(label="Detections")


def _proposals_tab(ui: UI, config: DINOConfig) -> None:
    with gr.Tab("Proposals", id="proposals"):
        with gr.Row():
            ui["top_n"] = _slider("top_n", 1, config.num_queries, min(inputs.DEFAULTS["top_n"], config.num_queries),
                                  "Top proposals (by encoder score)")
            ui["proposal_color"] = gr.Radio(list(PROPOSAL_COLORS), value=inputs.DEFAULTS["proposal_color"],
                                            label="Colour by")
        _caption("The encoder's top-k proposals (the decoder's first boxes); click one to follow the query it seeded.")
        ui["proposal_image"] = _view("proposal-image")
        steps_tab.build_selection_section(ui)


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


def _attention_controls(ui: UI, prefix: str, layers: int, layer_label: str, config: DINOConfig) -> None:
    """Layer, colour, head, level and extras of one attention view (`prefix` "" or "enc_")."""
    elem = prefix.replace("_", "-")
    ui[f"{prefix}layer"] = _slider(f"{prefix}layer", 1, layers, layers, layer_label)
    color = "point_color" if not prefix else "enc_color"
    ui[color] = gr.Radio(list(POINT_COLORS), value=POINT_COLORS[0], label="Colour by",
                         elem_id=f"{elem or 'sampling-'}color")
    ui[f"{prefix}head"] = gr.Radio(_indices(config.num_heads), value=inputs.ALL, label="Head", elem_id=f"{elem}head")
    ui[f"{prefix}level"] = gr.Radio(_indices(config.num_feature_levels), value=inputs.ALL, label="Level",
                                    elem_id=f"{elem}level")
    extras = "point_extras" if not prefix else "enc_extras"
    ui[extras] = gr.CheckboxGroup(list(inputs.POINT_EXTRAS), label="Show", elem_id=f"{elem or 'sampling-'}extras")


def _sampling_tab(ui: UI, config: DINOConfig) -> None:
    with gr.Tab("Sampling points", id="sampling"):
        with _picture_and_controls(ui, "sampling_image", "The selected query's reference box (white) and sampling "
                                   "points in one decoder layer."):
            _attention_controls(ui, "", config.dec_layers, "Decoder layer", config)
        ui["mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
        with gr.Accordion("Sampling points JSON", open=False):
            ui["points_json"] = gr.JSON(label="Sampling points")


def _heatmaps_tab(ui: UI, config: DINOConfig) -> None:
    with gr.Tab("Heatmaps", id="heatmaps"):
        with gr.Row():
            ui["heat_source"] = gr.Radio(list(HEATMAP_SOURCES), value=HEATMAP_SOURCES[0], label="Attention of",
                                         elem_id="heat-source")
            ui["heat_layer"] = _slider("heat_layer", 1, config.dec_layers, config.dec_layers, "Decoder layer")
            ui["heat_head"] = gr.Radio(_indices(config.num_heads), value=inputs.ALL, label="Head", elem_id="heat-head")
        _caption("Attention weights spread onto each feature level's grid, one panel per level.")
        ui["heatmap_image"] = _view("heatmap-image")


def _encoder_tab(ui: UI, config: DINOConfig) -> None:
    with gr.Tab("Encoder", id="encoder"):
        with _picture_and_controls(ui, "enc_image", "Click anywhere to pick the encoder token of the chosen level "
                                   "under the cursor (its cell in white): where it looks in one encoder layer."):
            ui["token_level"] = gr.Radio(_indices(config.num_feature_levels, with_all=False), value="1",
                                         label="Token level", elem_id="token-level")
            with gr.Row():
                ui["token_row"] = gr.Number(None, label="Row (Enter)", precision=0, min_width=80,
                                            elem_id="token-row")
                ui["token_col"] = gr.Number(None, label="Column (Enter)", precision=0, min_width=80,
                                            elem_id="token-col")
            ui["seed_token"] = gr.Button("Token that seeded the selected query", size="sm", elem_id="seed-token")
            _attention_controls(ui, "enc_", config.enc_layers, "Encoder layer", config)
        ui["token_info"] = gr.Markdown("", elem_id="token-info")
        ui["enc_mass"] = gr.Dataframe(label="Attention mass per head and level", interactive=False)
        _caption("The token's attention spread onto each level's grid.")
        ui["enc_heatmap"] = _view("enc-heatmap")
        with gr.Accordion("Sampling points JSON", open=False):
            ui["enc_points"] = gr.JSON(label="Encoder sampling points")


def build_app(settings: AppSettings | None = None, **explorer_options) -> App:
    """The whole app, queued: one model run at a time (DINO_DEMO_MODEL_CONCURRENCY), re-drawing alongside."""
    settings = settings or AppSettings.from_env()
    memory.tune_allocator()  # freed activations and dropped models go back to the system
    ops.prepare_in_background(settings.device)  # the reference op serves until the kernel is built
    explorer = Explorer(settings, **explorer_options)
    if gpu.on_zerogpu():
        explorer.preload(choices.default_choice())  # moved to "cuda" at start-up, as ZeroGPU requires
    with gr.Blocks(title=TITLE, fill_width=True, delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        ui = build_layout(choices.default_choice(), explorer.close_session, settings.precision, settings.device)
        wire(ui, explorer, settings.model_concurrency)
        # Checkpoints copied into weights/ while the app runs appear on the next page load.
        demo.load(lambda choice: gr.Dropdown(choices=choices.model_choices(), value=choice), ui.model_choice,
                  ui.model_choice, api_visibility="private", queue=False)
        demo.unload(explorer.unload)
    # Files of sessions that never say goodbye (no heartbeat), and on a public server uploads never
    # detected, expire by age and total size.
    swept = [explorer.files_folder] + ([cleanup.gradio_upload_folder()] if Policy.from_env().public else [])
    sweeper = cleanup.Sweeper(swept, cleanup.FileLimits.from_env(), keep=(cleanup.OWNER_FILE,))
    sweeper.start()
    return App(demo.queue(default_concurrency_limit=4, max_size=64), explorer, ui, sweeper)


def build_demo(settings: AppSettings | None = None, **explorer_options) -> gr.Blocks:
    """The served page of `build_app`."""
    return build_app(settings, **explorer_options).demo
