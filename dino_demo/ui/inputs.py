"""The page's controls as typed values, checked once.

Every event of the page hands its handler one `PageControls` (parsed from the raw values of the
controls, keyed by view name); a Detect also parses a `DetectRequest`. API endpoints build the
same types from their parameters, so values sent by API clients or a tampered page get the same
clear errors as the controls' own limits. Ranges that depend on the model (layers, heads, levels,
query slots) are checked against the result by the methods taking those counts. Everything raises
`ControlError` (a ValueError naming the control) with a message for the person who sent it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..runtime.result import PRECISIONS
from ..explore.options import (
    HEATMAP_SOURCES,
    POINT_COLORS,
    PROPOSAL_COLORS,
    DetectionOptions,
    HeatmapOptions,
    ProposalOptions,
    SamplingOptions,
)
from ..io.images import MAX_SIDE
from ..model.config import MIN_INPUT_SIDE
from . import choices, families_ui

ALL = "all"
MAX_DETECTIONS = 300
MAX_PROPOSALS = 900
# Largest cap on the model input's longer side the page accepts (uploads are at most this large).
MAX_INPUT_SIDE = MAX_SIDE
# Extras of the sampling-point views, ticked in a checkbox group.
OFFSETS, ZOOM = "offset vectors", "zoom in"
POINT_EXTRAS = (OFFSETS, ZOOM)
# More heads, levels or layers than any DINO has: the bound of the checks made before the model is known.
MAX_INDEX = 64

# The controls' values before anything is chosen (the layout starts from these).
DEFAULTS: dict[str, object] = {
    "threshold": 0.3, "max_detections": 100, "slot": None, "query": None, "candidates": None,
    "top_n": 100, "proposal_color": PROPOSAL_COLORS[0],
    "layer": None, "head": ALL, "level": ALL, "point_color": POINT_COLORS[0], "point_extras": [],
    "heat_source": HEATMAP_SOURCES[0], "heat_layer": None, "heat_head": ALL,
    "enc_layer": None, "enc_head": ALL, "enc_level": ALL, "enc_color": POINT_COLORS[0], "enc_extras": [],
    "token_level": "1", "token_row": None, "token_col": None,
}
# The controls a Detect reads besides PageControls (parsed by `DetectRequest.parse`, in this order).
DETECT_CONTROLS = ("image_in", "model_choice", "checkpoint", "variant", "max_input", "precision", "prompt")


class ControlError(ValueError):
    """A control's value is not allowed: `control` is its view name (the page resets that control)."""

    def __init__(self, control: str, message: str):
        super().__init__(message)
        self.control = control


def number(value, name: str, lo: float, hi: float, *, integer: bool = False, control: str = "") -> float | int:
    """`value` as a number in [lo, hi] (a whole number when `integer`). Booleans are refused (JSON's
    `true` is no slot 1), and so are integers too large for a float (a 401-digit number)."""
    if isinstance(value, (bool, np.bool_)):
        raise ControlError(control, f"{name} must be a number, got {value!r}.")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ControlError(control, f"{name} must be a number, got {_shown(value)}.") from None
    except OverflowError:
        result = math.inf
    if not math.isfinite(result) or not lo <= result <= hi:
        raise ControlError(control, f"{name} must be between {lo:g} and {hi:g}, got {_shown(value)}.")
    if integer:
        if result != int(result):
            raise ControlError(control, f"{name} must be a whole number, got {_shown(value)}.")
        return int(result)
    return result


def _shown(value) -> str:
    """A value as an error message quotes it: at most 40 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's digit limit for str()
        return "a number of too many digits"
    return text if len(text) <= 40 else f"{text[:37]}..."


def optional_number(value, name: str, lo: float, hi: float, *, control: str = "") -> int | None:
    """A whole number in [lo, hi], or None for an empty box."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return number(value, name, lo, hi, integer=True, control=control)


def one_of(value, name: str, allowed: tuple[str, ...], *, control: str = "") -> str:
    if value not in allowed:
        raise ControlError(control, f"{name} must be one of {', '.join(map(repr, allowed))}, got {_shown(value)}.")
    return value


def index_or_all(value, name: str, count: int, *, control: str = "") -> int | None:
    """'all' -> None; '1'..str(count) -> the 0-based index."""
    if value is None or (isinstance(value, str) and value.strip().lower() == ALL):
        return None
    return number(value, name, 1, count, integer=True, control=control) - 1


def extras(value, *, control: str = "") -> frozenset[str]:
    """The ticked extras of a sampling-point view (a subset of POINT_EXTRAS; None for none)."""
    ticked = [] if value is None else [value] if isinstance(value, str) else list(value)
    for item in ticked:
        one_of(item, "Show", POINT_EXTRAS, control=control)
    return frozenset(ticked)


def max_input_side(value) -> int:
    """The cap on the model input's longer side (the model's own resize rule applies below it, so a
    cap above the model's own maximum changes nothing)."""
    return number(value, "Max input side", MIN_INPUT_SIDE, MAX_INPUT_SIDE, integer=True, control="max_input")


@dataclass(frozen=True)
class AttentionControls:
    """One attention view's controls: `layer` 1-based (None: the last), `head` / `level` 0-based or
    None for all,
    `color_by`, the ticked extras. Checked against a model's counts by `options`."""

    layer: int | None
    head: int | None
    level: int | None
    color_by: str
    offsets: bool
    zoom: bool

    @classmethod
    def parse(cls, values: Mapping[str, object], prefix: str, color: str, extras_name: str) -> "AttentionControls":
        ticked = extras(values[extras_name], control=extras_name)
        return cls(optional_number(values[f"{prefix}layer"], "Layer", 1, MAX_INDEX, control=f"{prefix}layer"),
                   index_or_all(values[f"{prefix}head"], "Head", MAX_INDEX, control=f"{prefix}head"),
                   index_or_all(values[f"{prefix}level"], "Level", MAX_INDEX, control=f"{prefix}level"),
                   one_of(values[color], "Colour points by", POINT_COLORS, control=color),
                   OFFSETS in ticked, ZOOM in ticked)

    def options(self, *, layers: int, heads: int, levels: int, layer_name: str) -> SamplingOptions:
        """These controls for a model with these counts."""
        if self.head is not None and self.head >= heads:
            raise ControlError("head", f"Head must be between 1 and {heads}, got {self.head + 1}.")
        if self.level is not None and self.level >= levels:
            raise ControlError("level", f"Level must be between 1 and {levels}, got {self.level + 1}.")
        if self.layer is not None and self.layer > layers:
            raise ControlError("layer", f"{layer_name} must be between 1 and {layers}, got {self.layer}.")
        layer = layers if self.layer is None else self.layer
        return SamplingOptions(layer - 1, self.head, self.level, self.color_by, self.offsets, self.zoom)


@dataclass(frozen=True)
class PageControls:
    """Every control of the page that a re-draw reads, checked.

    detection: threshold and max detections; proposals: top-N and colouring; slot: the query slot
    box (None when empty); query: the slot selected in the query list; candidate: the slot chosen
    among the boxes under the cursor; sampling / encoder: the decoder's and the encoder's attention
    controls; heat_source, heat_layer (1-based, None: the last), heat_head (0-based or None): the heatmaps;
    token_level (0-based), token_row, token_col: the encoder token boxes.
    """

    detection: DetectionOptions
    proposals: ProposalOptions
    slot: int | None
    query: int | None
    candidate: int | None
    sampling: AttentionControls
    heat_source: str
    heat_layer: int | None
    heat_head: int | None
    encoder: AttentionControls
    token_level: int
    token_row: int | None
    token_col: int | None

    @classmethod
    def parse(cls, values: Mapping[str, object] | None = None, **overrides) -> "PageControls":
        """The controls from raw values by view name (missing ones take `DEFAULTS`)."""
        raw = {**DEFAULTS, **(values or {}), **overrides}
        return cls(
            detection=DetectionOptions(
                number(raw["threshold"], "Score threshold", 0.0, 1.0, control="threshold"),
                number(raw["max_detections"], "Max detections", 1, MAX_DETECTIONS, integer=True,
                       control="max_detections")),
            proposals=ProposalOptions(
                number(raw["top_n"], "Proposals shown", 1, MAX_PROPOSALS, integer=True, control="top_n"),
                one_of(raw["proposal_color"], "Colour proposals by", PROPOSAL_COLORS, control="proposal_color")),
            slot=optional_number(raw["slot"], "Query slot", 0, 100_000, control="slot"),
            query=optional_number(raw["query"], "Query", 0, 100_000, control="query"),
            candidate=optional_number(raw["candidates"], "Box under the cursor", 0, 100_000, control="candidates"),
            sampling=AttentionControls.parse(raw, "", "point_color", "point_extras"),
            heat_source=one_of(raw["heat_source"], "Heatmap of", HEATMAP_SOURCES, control="heat_source"),
            heat_layer=optional_number(raw["heat_layer"], "Decoder layer", 1, MAX_INDEX, control="heat_layer"),
            heat_head=index_or_all(raw["heat_head"], "Head", MAX_INDEX, control="heat_head"),
            encoder=AttentionControls.parse(raw, "enc_", "enc_color", "enc_extras"),
            token_level=number(raw["token_level"], "Token level", 1, MAX_INDEX, integer=True,
                               control="token_level") - 1,
            token_row=optional_number(raw["token_row"], "Token row", 0, 1_000_000, control="token_row"),
            token_col=optional_number(raw["token_col"], "Token column", 0, 1_000_000, control="token_col"),
        )

    def for_new_result(self) -> "PageControls":
        """These controls as a Detect leaves them (its reply resets the decoder controls to the new
        model's last layer and every head and level): the model just run may have fewer layers or
        heads than the one before."""
        sampling = replace(self.sampling, layer=None, head=None, level=None)
        encoder = replace(self.encoder, layer=None, head=None, level=None)
        return replace(self, sampling=sampling, encoder=encoder, heat_layer=None, heat_head=None, token_level=0)

    def heatmap(self, *, layers: int, heads: int) -> HeatmapOptions:
        """The heatmap controls for a model with `layers` decoder layers and `heads` heads."""
        if self.heat_head is not None and self.heat_head >= heads:
            raise ControlError("heat_head", f"Head must be between 1 and {heads}, got {self.heat_head + 1}.")
        if self.heat_layer is not None and self.heat_layer > layers:
            raise ControlError("heat_layer", f"Decoder layer must be between 1 and {layers}, got {self.heat_layer}.")
        return HeatmapOptions(self.heat_source, (layers if self.heat_layer is None else self.heat_layer) - 1,
                              self.heat_head)


def query_slot(value, queries: int, control: str = "slot") -> int:
    """A query slot of a model with `queries` queries."""
    return number(value, "Query slot", 0, queries - 1, integer=True, control=control)


@dataclass(frozen=True)
class DetectRequest:
    """A Detect's inputs: the image file (`path`, and the name it was uploaded as), the model, the
    cap on the model input's longer side, the precision the model runs in ("float32", or
    "bfloat16" / "float16" under autocast: see `runtime.dino.run_batch`), and the text prompt
    of a text-prompted transformers detector (dino_demo.families; "" for every other model)."""

    path: str
    file_name: str
    model: choices.ModelChoice
    max_input: int
    precision: str = "float32"
    prompt: str = ""

    @classmethod
    def parse(cls, image, model_choice, checkpoint, variant, max_input, precision=None,
              prompt=None) -> "DetectRequest":
        """`image`: a FileData dict (the raw payload of an image input) or a path; `precision` None:
        float32."""
        model = choices.resolve(model_choice, checkpoint, variant)
        side = max_input_side(max_input)
        precision = one_of(precision or "float32", "Precision", tuple(PRECISIONS), control="precision")
        try:
            text = families_ui.parse_prompt(prompt)
        except ValueError as err:
            raise ControlError("prompt", str(err)) from None
        path, file_name = uploaded_file(image)
        if not path:
            raise ControlError("image_in", "Upload an image or pick an example first.")
        return cls(path, file_name, model, side, precision, text)


def detect_request(values: Mapping[str, object]) -> DetectRequest:
    """The Detect request of a page event's raw Detect controls (by view name)."""
    return DetectRequest.parse(*(values.get(name) for name in DETECT_CONTROLS))


def uploaded_file(image) -> tuple[str | None, str]:
    """(path, original file name) of an image input: a FileData dict (raw payload) or a path."""
    if image is None:
        return None, ""
    if isinstance(image, dict):
        path = image.get("path")
        return path, Path(image.get("orig_name") or path or "").name
    return str(image), Path(str(image)).name
