"""The app's API endpoints, which Gradio also serves as MCP tools (`DINO_DEMO_MCP=1`): one method
per endpoint, one parameter per value a client sends, and docstrings written for the reader of the
API page and for MCP agents (Gradio builds the tool descriptions from them).

"/detect" stores its result in the caller's session for "/inspect", "/encoder" and "/internals".
MCP calls all share one Gradio session, so over MCP nothing is read from a session: "inspect",
"encoder" and "internals" take the image (and model) given to "detect", whose result is stored by
content and reused (`Results.shared`).
"""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import gradio as gr

from ..explore import panels
from ..explore.stored import StoredResult
from ..runtime.detections import detection_view
from ..io.internals import write_internals
from . import choices, inputs, selection
from .detections_tab import detections_json
from .encoder_tab import EncoderTab
from .events import PageEvent, Views
from .inputs import ControlError, DetectRequest, PageControls
from .services import Services

# Files made for calls without a session (`internals` over MCP): one folder per call, kept this long.
SESSION_FREE = "session-free"
SESSION_FREE_SECONDS = 600


# The Args lines of the endpoints that read `detect`'s result, written once for their docstrings
# (`_with_detect_inputs`): the API page and the MCP tool descriptions are built from those.
_DETECT_INPUTS_DOC = """\
            image: the image given to `detect`; leave empty to use the session's last detection.
            model_choice: the model given to `detect` (with `image`).
            checkpoint: the checkpoint given to `detect` (with `image` and model "custom").
            variant: the variant given to `detect` (with `image`).
            max_input: the max input side given to `detect` (with `image`)."""


def _with_detect_inputs(method):
    """`method` with _DETECT_INPUTS_DOC at the end of its docstring's Args section (made when it has none);
    unchanged without a docstring (`python -OO`)."""
    if method.__doc__ is None:
        return method
    head, returns = method.__doc__.split("\n\n        Returns:")
    args = "" if "\n        Args:\n" in head else "\n\n        Args:"
    method.__doc__ = f"{head}{args}\n{_DETECT_INPUTS_DOC}\n\n        Returns:{returns}"
    return method


class ApiEndpoints:
    """The endpoints over the app's services (its model cache, result store and sessions)."""

    def __init__(self, services: Services):
        self.services = services

    def detect(self, session, image, model_choice=None, checkpoint=None, variant="auto", max_input=None,
               threshold=None, max_detections=None, prompt=None, request: gr.Request = None,
               progress=gr.Progress()) -> Views:
        """Detect objects in an image with DINO: the image with the boxes drawn, and the detections as JSON.

        Each detection names its decoder query slot: pass it to `inspect` to see where that query looked. The
        result stays in the caller's session for `inspect`, `encoder` and `internals`; MCP agents pass the
        same image to `inspect` instead (the result is reused, not computed again).

        Args:
            image: the image to look at (PNG, JPEG, WebP, ...; larger than 4096 px on a side is downscaled).
            model_choice: the model: "shipped" (knows 8 synthetic shapes only), "zoo:dino-4scale-r50" or another "zoo:<id>" (COCO's 80 classes, downloaded once), "untrained:<variant>", "weights/<file>.pth", a transformers detector of the Hub ("hf:ORG/NAME", e.g. "hf:IDEA-Research/grounding-dino-tiny"), or "custom" with `checkpoint`.
            checkpoint: a checkpoint path, a transformers model folder, an hf: id or an http(s) URL when `model_choice` is "custom"; else empty.
            variant: the DINO variant of a checkpoint file, or "auto" to read it from the file.
            max_input: cap in pixels on the longer side of the model input, 32 to 4096 (the model's own resize applies below it).
            threshold: the lowest score a detection needs to be returned, 0 to 1.
            max_detections: the most detections returned, best first, 1 to 300.
            prompt: what to detect, for a text-prompted model ("hf:IDEA-Research/grounding-dino-tiny": phrases ending in "."); empty for the others.

        Returns:
            The image with the detections drawn, and detections.json: per detection its box (x0, y0, x1, y1 in the image's pixels), class, score and query slot.
        """
        parsed = _by_image(image, model_choice, checkpoint, variant, max_input, self.services.settings.precision,
                           prompt)
        given = {"threshold": threshold, "max_detections": max_detections}
        options = PageControls.parse({name: value for name, value in given.items() if value is not None}).detection
        if from_mcp(request):  # no session of its own: the result is reached again by its image
            stored = self.services.results.shared(parsed, progress)
        else:
            stored = self.services.results.compute(parsed, self.services.sessions.session(session, request), progress)
        view = detection_view(stored.result, options.threshold, options.max_detections)
        return {"det_image": panels.detections_image(stored, view, None),
                "det_json": detections_json(stored, view, options)}

    @_with_detect_inputs
    def inspect(self, session, slot, layer, head, level, point_color, image=None, model_choice=None,
                checkpoint=None, variant="auto", max_input=None, request: gr.Request = None,
                progress=gr.Progress()) -> Views:
        """Where one decoder query of DINO looks: its sampling points in one decoder layer, drawn over the image.

        Inspects the result of the last `detect` in the caller's session, or, when `image` is given (as MCP
        agents do), the result of `detect` on that image with that model (computed once, then reused).

        Args:
            slot: the decoder query slot to inspect (a detection's "query_slot" in detections.json), 0-based.
            layer: the decoder layer, 1 to the model's number of decoder layers (the last shows the final box).
            head: one attention head ("1", "2", ...) or "all".
            level: one feature level ("1" is the finest) or "all".
            point_color: colour the sampling points by "level" or by "head".

        Returns:
            The sampling-point overlay, the points as JSON (x, y in the image's pixels, attention weights), and the attention mass per head and level.
        """
        controls = PageControls.parse(slot=slot, layer=layer, head=head, level=level, point_color=point_color)
        stored = self._api_result(session, request, progress, image, model_choice, checkpoint, variant, max_input)
        slot = inputs.query_slot(controls.slot, stored.result.num_queries)
        return selection.sampling_views(stored, slot, selection.sampling_options(controls, stored.result))

    @_with_detect_inputs
    def encoder(self, session, token_level, row, col, layer, head, level, point_color, image=None,
                model_choice=None, checkpoint=None, variant="auto", max_input=None, request: gr.Request = None,
                progress=gr.Progress()) -> Views:
        """Where one encoder token of DINO looks: its sampling points in one encoder layer, drawn over the image.

        Reads the session's last `detect`, or, when `image` is given, the result of `detect` on that image.

        Args:
            token_level: the token's feature level, 1 (finest) to the model's number of levels.
            row: the token's row in that level's grid, 0-based.
            col: the token's column in that level's grid, 0-based.
            layer: the encoder layer, 1 to the model's number of encoder layers.
            head: one attention head ("1", "2", ...) or "all".
            level: one feature level the token looks at ("1", "2", ...) or "all".
            point_color: colour the sampling points by "level" or by "head".

        Returns:
            The sampling-point overlay, the points as JSON and the attention mass per head and level.
        """
        controls = PageControls.parse(token_level=token_level, token_row=row, token_col=col, enc_layer=layer,
                                      enc_head=head, enc_level=level, enc_color=point_color)
        stored = self._api_result(session, request, progress, image, model_choice, checkpoint, variant, max_input)
        views = EncoderTab(self.services.models).typed_token(PageEvent(session, controls), stored)
        return {name: views[name] for name in ("enc_image", "enc_points", "enc_mass")}

    @_with_detect_inputs
    def internals(self, session, image=None, model_choice=None, checkpoint=None, variant="auto", max_input=None,
                  request: gr.Request = None, progress=gr.Progress()) -> Views:
        """Every array of DINO's result on an image as one internals.npz file: detections, the encoder's selection, boxes and references per decoder layer, sampling points and attention weights of every query.

        Reads the session's last `detect`, or, when `image` is given (as MCP agents do), the result of `detect` on that image with that model (computed once, then reused).

        Returns:
            The internals.npz file (NumPy arrays, described in docs/formats.md): boxes, scores, per-layer references, sampling locations and attention weights.
        """
        stored = self._api_result(session, request, progress, image, model_choice, checkpoint, variant, max_input)
        folder = session_free_folder(self.services.sessions.files_folder) if image is not None else session.downloads()
        path = write_internals(stored.result, folder / "internals.npz", source=stored.file_name)
        return {"download_internals": str(path)}

    def _api_result(self, session, request, progress, image, model_choice, checkpoint, variant,
                    max_input) -> StoredResult:
        """The result an API call reads: `detect`'s on `image` when given, else the session's (never
        over MCP, whose calls share one session)."""
        if image is not None:
            parsed = _by_image(image, model_choice, checkpoint, variant, max_input, self.services.settings.precision)
            return self.services.results.shared(parsed, progress)
        if from_mcp(request):
            raise ControlError("image_in", "Pass the image (and model) given to detect: MCP calls have no session.")
        return self.services.results.stored(session)


def _by_image(image, model_choice, checkpoint, variant, max_input, precision: str, prompt=None) -> DetectRequest:
    """An API call's Detect request; a model or input cap left out is the page's default, and the
    model runs in the app's precision (`DINO_DEMO_PRECISION`)."""
    return DetectRequest.parse(image, model_choice or choices.default_choice(), checkpoint, variant,
                               inputs.MAX_INPUT_SIDE if max_input is None else max_input, precision, prompt)


def session_free_folder(files_folder: Path) -> Path:
    """A new folder for one file of a call without a session (MCP), under `files_folder`'s
    `SESSION_FREE` folder; those older than `SESSION_FREE_SECONDS` go first (Gradio has copied
    them to its own cache for the caller by then)."""
    root = files_folder / SESSION_FREE
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        try:
            if time.time() - old.stat().st_mtime > SESSION_FREE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another call removed it meanwhile
            pass
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


def from_mcp(request: gr.Request | None) -> bool:
    """Whether a call came through Gradio's MCP server, whose calls share one client session (so
    that a session's result would be every agent's): Gradio marks them `x-gradio-user: mcp`."""
    headers = getattr(request, "headers", None) or {}
    return headers.get("x-gradio-user") == "mcp"
