"""Which user action calls which `Explorer` method: one event per action, one round trip.

Every page event sends the same set of controls (Gradio hands a set of inputs over as one dict),
parsed once into a `PageEvent`, and answers with a dict keyed by component (`reply`). A failure
never raises into Gradio (which would turn every output into an error badge and drop the last
good views): it is written to the one status line, the views stay as they were, and a control
holding the refused value is set back (`RESETS`), so that its message comes once. API endpoints
(`api.ApiEndpoints`) keep Gradio's errors (an `AppError` for the client) and take one parameter per
value.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

import gradio as gr
import numpy as np

from . import analysis_tab, choices, compare_tab, denoising_tab, inputs, region_tab, steps_tab, video_tab
from .api import ApiEndpoints
from .callbacks import DETECT_CONTROLS, Explorer, PageEvent, Views, example_files
from .files import save_drawn_image
from .inputs import ControlError, PageControls

log = logging.getLogger("dino_explorer")

# What a control refused by the page goes back to (from the event's raw values by view name).
RESETS: dict[str, Callable[[Mapping[str, object]], Views]] = {
    "slot": lambda raw: {"slot": raw.get("query")},
    "token_row": lambda raw: _token_cell(raw.get("enc_token")),
    "token_col": lambda raw: _token_cell(raw.get("enc_token")),
    "image_in": lambda raw: {"image_in": None},
}


def _token_cell(token) -> Views:
    row, col = token.cell if token is not None else (None, None)
    return {"token_row": row, "token_col": col}


def reply(ui: Mapping[str, gr.components.Component], views: Views) -> dict:
    """A handler's {view name: value} as {component: value}, each value `served`."""
    return {ui[name]: served(ui[name], value) for name, value in views.items()}


def served(component, value):
    """A drawn picture (an array; a pair of them for an ImageSlider) as the path of a file written
    once, whole (see `files.save_drawn_image`); any other value as it is."""
    if isinstance(component, gr.ImageSlider) and isinstance(value, tuple):
        return tuple(save_drawn_image(v, component.GRADIO_CACHE, "png") if isinstance(v, np.ndarray) else v
                     for v in value)
    if isinstance(component, gr.Image) and isinstance(value, np.ndarray):
        return save_drawn_image(value, component.GRADIO_CACHE, component.format or "webp")
    return value


def failure_views(err: Exception, raw: Mapping[str, object]) -> Views:
    """The status line for a failed action (and the refused control set back); nothing else changes."""
    if isinstance(err, ValueError):
        views = RESETS[err.control](raw) if isinstance(err, ControlError) and err.control in RESETS else {}
        return {**views, "status": f"⚠ {err}"}
    return {"status": f"⚠ Something went wrong ({type(err).__name__}); the server log has the details."}


class PageEvents:
    """The page's events over one `Explorer`: `handler(name)` is the Gradio function of a method."""

    def __init__(self, ui, explorer: Explorer):
        self.ui, self.explorer = ui, explorer
        self.names = {component: name for name, component in ui.items()}
        # What every page event sends: the controls, the Detect inputs and the two states (a tab's
        # events add its own controls, handed over as `PageEvent.tab_values`).
        self.inputs = {ui[name] for name in (*inputs.DEFAULTS, *DETECT_CONTROLS, "session", "enc_token")}
        # What any page event may change (each returns only the views it changed); buttons change never.
        self.outputs = [component for name, component in ui.items()
                        if name not in ("examples_slot", "shipped_note", "image_in", "model_choice", "checkpoint",
                                        "variant", "max_input", "precision")
                        and not isinstance(component, gr.Button)]
        self.outputs.append(ui["image_in"])  # set back when it holds no usable image

    def respond(self, method: Callable, values: dict, request, point=None, progress=None, redraw=True) -> dict:
        """Run `method` on the parsed event; its views, or the status line when it failed."""
        raw = {self.names[component]: value for component, value in values.items()}
        tab = {self.names[component]: value for component, value in values.items() if component not in self.inputs}
        try:
            event = PageEvent(raw["session"], PageControls.parse({name: raw[name] for name in inputs.DEFAULTS}),
                              raw["enc_token"], point, {name: raw[name] for name in DETECT_CONTROLS}, request, tab)
            if redraw:
                views = self.explorer.redraw(method, event)
            else:
                views = method(event, progress)
        except Exception as err:  # noqa: BLE001 - whatever failed, the page says so on one line
            if isinstance(err, ValueError):
                log.info("%s: %s", method.__name__, err)
            else:
                log.exception("%s failed", method.__name__)
            return reply(self.ui, failure_views(err, raw))
        # Nothing changed: every output skipped (an empty dict would be read as too few values).
        return reply(self.ui, {**views, "status": ""}) if views else gr.skip()

    def handler(self, method: Callable, *, selected: bool = False, redraw: bool = True) -> Callable:
        """The Gradio function of a re-drawing method (`selected`: it reads where a click landed;
        `redraw=False`: a method `(event, progress)` that needs no stored result; `progress` is Gradio's
        bar, shown where the event's `show_progress` allows)."""
        if selected:
            def on_select(values: dict, evt: gr.SelectData, request: gr.Request, progress=gr.Progress()):
                return self.respond(method, values, request, point=evt.index, progress=progress, redraw=redraw)
            return on_select

        def on_change(values: dict, request: gr.Request, progress=gr.Progress()):
            return self.respond(method, values, request, progress=progress, redraw=redraw)
        return on_change

    def tab_outputs(self, prefix: str) -> list:
        """What a tab's event may change: its views (names starting with `prefix`), the status line
        and the controls a failure sets back."""
        return [c for name, c in self.ui.items() if name.startswith(prefix)] + [self.ui[n] for n in ("status", *RESETS)]

    def detect(self, values: dict, request: gr.Request, progress=gr.Progress()):
        """The Detect button (and an example picked)."""
        return self.respond(self.explorer.detect, values, request, progress=progress, redraw=False)

    def check_upload(self, image):
        """An image chosen: refused at once (input cleared, one status line) when it is not one."""
        try:
            return reply(self.ui, {**self.explorer.check_upload(image), "status": ""})
        except ValueError as err:
            log.info("upload: %s", err)
            return reply(self.ui, failure_views(err, {}))


def api(ui, method: Callable) -> Callable:
    """An API endpoint's function: `method` (its signature and docstring, which Gradio publishes for
    API clients and MCP tools) answering {component: value}; a ValueError is the client's error."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            views = method(*args, **kwargs)
        except ValueError as err:
            log.info("%s: %s", method.__name__, err)
            raise gr.Error(str(err), print_exception=False) from None
        return reply(ui, views)
    return call


def wire(ui, explorer: Explorer, concurrency: int) -> None:
    """Connect each user action to its Explorer method.

    Every event takes the controls' raw values (`preprocess=False`): `inputs.PageControls` checks
    them, so a bad value is one clear message (and one log line) whichever way it came.
    """
    page = PageEvents(ui, explorer)
    # Detects run side by side (loading models and reading images); the model run itself takes one of
    # `concurrency` slots inside the callback. Downloads have slots of their own on top
    # (ModelCache's download_slots, refused at once when taken), so stalled ones never take all.
    model_run = {"concurrency_id": "detect",
                 "concurrency_limit": max(4, concurrency) + (explorer.models.download_slots or 0)}
    raw = {"preprocess": False}
    _api_endpoints(ui, ApiEndpoints(explorer), raw, model_run)

    on = {"inputs": page.inputs, "outputs": page.outputs, "api_visibility": "private", "show_progress": "hidden",
          **raw}
    detect = {**on, "fn": page.detect, "show_progress": "full", **model_run}
    ui.detect.click(**detect)
    with ui.examples_slot:
        examples = gr.Examples([[str(p)] for p in example_files()], inputs=[ui.image_in],
                               label="Examples (photos and synthetic scenes)", examples_per_page=12,
                               cache_examples=False)
    examples.load_input_event.then(**detect)
    ui.image_in.upload(page.check_upload, ui.image_in, [ui.image_in, ui.status], api_visibility="private",
                       show_progress="hidden", **raw)

    def when(triggers, method, selected=False):
        gr.on(triggers, page.handler(method, selected=selected), **on)

    when([ui.threshold.release, ui.max_detections.release], explorer.change_detection_options)
    when([ui.top_n.release, ui.proposal_color.input], explorer.change_proposals)
    # Selecting a query, whichever way.
    when([ui.query.input], explorer.choose_query)
    when([ui.slot.submit, ui.slot.blur], explorer.type_slot)
    when([ui.candidates.input], explorer.select_candidate)
    when([ui.table.select], explorer.select_table_row, selected=True)
    when([ui.det_image.select], explorer.click_detections, selected=True)
    when([ui.proposal_image.select], explorer.click_proposals, selected=True)
    when([ui.layer.release, ui.head.input, ui.level.input, ui.point_color.input, ui.point_extras.input],
         explorer.inspect)
    when([ui.heat_source.input, ui.heat_layer.release, ui.heat_head.input], explorer.change_heatmaps)
    # The encoder's attention of a token.
    when([ui.enc_image.select], explorer.click_encoder, selected=True)
    when([ui.token_row.submit, ui.token_col.submit], explorer.select_token)
    when([ui.token_level.input], explorer.change_token_level)
    when([ui.seed_token.click], explorer.seed_token)
    when([ui.enc_layer.release, ui.enc_head.input, ui.enc_level.input, ui.enc_color.input, ui.enc_extras.input],
         explorer.inspect_encoder)
    ui.model_choice.change(lambda choice: reply(ui, explorer.choose_model(choice)), [ui.model_choice],
                           [ui.checkpoint, ui.variant, ui.max_input, ui.shipped_note, ui.prompt],
                           api_visibility="private", queue=False)
    ui.coco_model.click(lambda: choices.COCO_MODEL, None, ui.model_choice, api_visibility="private", queue=False)
    denoising_tab.wire(page, on, model_run)
    steps_tab.wire(page, on, model_run)
    # The Diagnose tabs: their own controls, the same event design.
    region_tab.wire(ui, page)
    analysis_tab.wire(ui, page)
    compare_tab.wire(ui, page, model_run)
    video_tab.wire(ui, page, model_run)


def _api_endpoints(ui, endpoints: ApiEndpoints, raw: dict, model_run: dict) -> None:
    """The API endpoints, triggered by no control (the page's own events draw every view at once).
    Registered first, so that they own their names; an MCP tool is named after its method."""
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
    gr.on([], api(ui, endpoints.internals), [ui.session], [ui.download_internals],
          api_name="internals", **raw)
