"""One user action, one event, one round trip: `PageEvent` (what a handler gets) and `PageEvents`
(a handler as Gradio's function). Which action calls which handler is in each tab's `wire`.

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
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from ..explore.encoder import EncoderToken
from . import inputs
from .files import save_drawn_image
from .inputs import DETECT_CONTROLS, ControlError, PageControls
from .services import Services
from .session import Session

log = logging.getLogger("dino_explorer")

# A handler's answer: {view name: value} of the views it changed.
Views = dict[str, object]


@dataclass(frozen=True)
class PageEvent:
    """One user action on the page: the visitor's `session` (None before the first Detect), the
    parsed `controls`, the encoder `token` picked earlier (None before a pick), `point` where a
    click on a picture or table landed (Gradio's SelectData index; None for other events), the
    Detect controls' raw values (`detect_values`, parsed by `inputs.detect_request` where a handler
    runs the model), the `request`, and the raw values of a tab's own controls when its events send
    them (`tab_values`, by view name; each tab parses its own)."""

    session: Session | None
    controls: PageControls
    token: EncoderToken | None = None
    point: object = None
    detect_values: Mapping[str, object] = field(default_factory=dict)
    request: gr.Request | None = None
    tab_values: Mapping[str, object] = field(default_factory=dict)

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
    """The page's events over the app's `Services`: `handler(method)` is the Gradio function of a
    handler; `on` the Gradio arguments every page event shares, `model_run` those of the events
    that run the model (their concurrency)."""

    def __init__(self, ui, services: Services, concurrency: int = 1):
        self.ui, self.services = ui, services
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
        # Every event takes the controls' raw values (`preprocess=False`): `inputs.PageControls` checks
        # them, so a bad value is one clear message (and one log line) whichever way it came.
        self.on = {"inputs": self.inputs, "outputs": self.outputs, "api_visibility": "private",
                   "show_progress": "hidden", "preprocess": False}
        # Detects run side by side (loading models and reading images); the model run itself takes one
        # of `concurrency` slots inside the handler. Downloads have slots of their own on top
        # (ModelCache's download_slots, refused at once when taken), so stalled ones never take all.
        self.model_run = {"concurrency_id": "detect",
                          "concurrency_limit": max(4, concurrency) + (services.models.cache.download_slots or 0)}

    def respond(self, method: Callable, values: dict, request, point=None, progress=None, redraw=True) -> dict:
        """Run `method` on the parsed event; its views, or the status line when it failed."""
        raw = {self.names[component]: value for component, value in values.items()}
        tab = {self.names[component]: value for component, value in values.items() if component not in self.inputs}
        try:
            event = PageEvent(raw["session"], PageControls.parse({name: raw[name] for name in inputs.DEFAULTS}),
                              raw["enc_token"], point, {name: raw[name] for name in DETECT_CONTROLS}, request, tab)
            if redraw:
                views = self.services.results.redraw(method, event)
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

    def when(self, triggers, method: Callable, *, selected: bool = False, redraw: bool = True, **extra) -> None:
        """Connect `triggers` to a handler with the page events' arguments (`extra` overrides them)."""
        gr.on(triggers, self.handler(method, selected=selected, redraw=redraw), **{**self.on, **extra})


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
