"""The page's components (`build_layout`), sized from the default model's config, and the app
(`build_app`, `build_demo`). Each part of the page makes its own components (the input column,
the selected query, one module per tab group); which user action calls which handler is in
`wiring`.

API endpoints (gradio_client, and MCP tools when served with `DINO_DEMO_MCP=1`): "/detect" (image,
model, checkpoint path or URL, variant, max input side, threshold, max detections -> annotated
image, detections.json); "/inspect" (query slot, layer, head, level, colour -> sampling-point
overlay, points JSON, attention mass per head and level); "/encoder" (token level, row, column,
encoder layer, head, level, colour -> the token's sampling-point overlay, points JSON, attention
mass); "/internals" (-> internals.npz). All but "/detect" read the result "/detect" (or the Detect
button) stored in the same session.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from .. import ops
from ..model.config import DINOConfig
from ..sources.download import Policy
from . import (analysis_tab, busy, choices, cleanup, compare_tab, denoising_tab, detections_tab, encoder_tab, gpu,
               input_panel, memory, query_tab, region_tab, selection, steps_tab, video_tab)
from .services import Services
from .session import Session
from .settings import AppSettings
from .wiring import wire

TITLE = "DINO Explorer"
INTRO = ("**DINO Explorer**: the DINO detector, and a look inside it. Pick an example or upload an image, press "
         "**Detect**, click a box (or pick a query) to follow it; every tab re-draws from the stored result.")
# The page's own styles: pictures as tall as the window allows (and no taller than their pixels; the
# Detections picture whole below the selected query's row),
# model names that wrap instead of being cut off, a compact example gallery, the status line.
PAGE_CSS = """
.view-image img { max-height: calc(100vh - 150px); }
#det-image img { max-height: max(240px, calc(100vh - 350px)); }
#messages { gap: 0; }
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
    """The page's components by view name (a dict, so handlers' results map onto it)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class App:
    """The served page (`demo`), the app-wide services behind it (`services`: its model cache,
    result store and sessions; tests and benchmarks call the handlers with them directly), its
    components (`ui`) and events (`page`); `sweeper` removes the sessions' expired files (started;
    `sweeper.stop()` ends it)."""

    demo: gr.Blocks
    services: Services
    ui: UI
    sweeper: cleanup.Sweeper
    page: object = None


def page_config(default_model: str) -> DINOConfig:
    """The config the controls are sized for before the first Detect: the default model's (its
    layers, heads, levels and queries), or the official defaults when it is known only once loaded."""
    try:
        config = choices.resolve(default_model, "", None).config
    except ValueError:
        config = None
    return config or DINOConfig()


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
            input_panel.build(ui, default_model, config, precision, device)
        with gr.Column(scale=3):
            with gr.Column(elem_id="messages"):  # the status line and the result's notice, no gap between
                ui["status"] = gr.Markdown("", elem_id="status")
                ui["notice"] = gr.Markdown("", elem_id="notice")
            selection.build(ui, config)
            # Six tabs (every one shown at 1366 px): the selected query's views, DINO's ideas and the
            # diagnosis views each under one tab, with their own tabs inside.
            with gr.Tabs(elem_id="tabs") as ui["tabs"]:
                detections_tab.build(ui)
                query_tab.build(ui, config)
                encoder_tab.build(ui, config)
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


def build_app(settings: AppSettings | None = None, **service_options) -> App:
    """The whole app, queued: one model run at a time (DINO_DEMO_MODEL_CONCURRENCY), re-drawing
    alongside; `service_options` go to `Services.make` (e.g. `result_budget_bytes`)."""
    settings = settings or AppSettings.from_env()
    memory.tune_allocator()  # freed activations and dropped models go back to the system
    ops.prepare_in_background(settings.device)  # the reference op serves until the kernel is built
    services = Services.make(settings, **service_options)
    if gpu.on_zerogpu():
        services.models.preload(choices.default_choice())  # moved to "cuda" at start-up, as ZeroGPU requires
    with gr.Blocks(title=TITLE, fill_width=True, delete_cache=(1800, 3600), analytics_enabled=False) as demo:
        ui = build_layout(choices.default_choice(), services.sessions.close, settings.precision, settings.device)
        page = wire(ui, services, settings.model_concurrency)
        # Checkpoints copied into weights/ while the app runs appear on the next page load.
        demo.load(lambda choice: gr.Dropdown(choices=choices.model_choices(), value=choice), ui.model_choice,
                  ui.model_choice, api_visibility="private", queue=False)
        demo.unload(services.sessions.unload)
    # Files of sessions that never say goodbye (no heartbeat), and on a public server uploads never
    # detected, expire by age and total size.
    swept = [services.sessions.files_folder] + ([cleanup.gradio_upload_folder()] if Policy.from_env().public else [])
    sweeper = cleanup.Sweeper(swept, cleanup.FileLimits.from_env(), keep=(cleanup.OWNER_FILE,))
    sweeper.start()
    return App(demo.queue(default_concurrency_limit=4, max_size=busy.queue_size()), services, ui, sweeper, page)


def build_demo(settings: AppSettings | None = None, **service_options) -> gr.Blocks:
    """The served page of `build_app`."""
    return build_app(settings, **service_options).demo
