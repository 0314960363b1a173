"""A result as the app keeps it for re-drawing: the inference result in compact form, with the
canvas the views draw on (no framework: the page's store and the views share this type).

What a stored official R50 result at 800x1066 holds (measured): the canvas 2.6 MB, sampling
locations 5.5 MB and weights 2.8 MB, per-layer logits 2.0 MB, the encoder memory 9.1 MB in float16
(18.2 MB in float32), the encoder's input 18.2 MB (kept in float32: the Encoder view recomputes
any token's attention from it, see `explore.encoder`), the rest under 1 MB.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .domain import APP_REMEDY, synthetic_model_note
from ..runtime.result import InferenceResult
from .draw.pixels import display_canvas


@dataclass(eq=False)
class StoredResult:
    """result: the inference result; canvas: the image the views are drawn on and `scale`, its
    pixels per image pixel (see `explore.draw.pixels.display_canvas`); file_name: the upload's name;
    max_input: the cap on the model input's longer side the result was computed with; model: the
    caller's handle of the model that made it (the page keeps its `ui.choices.ModelChoice`, to run
    the encoder again), None when unknown; encoder_layers: that model's number of encoder layers
    (the encoder view's layer choice, known without the model); notes: what the person should know
    about the result, decided while the image was still there (`explore.domain`), for the page's
    status and the API's detections.json."""

    result: InferenceResult
    canvas: np.ndarray
    scale: float
    file_name: str = ""
    max_input: int | None = None
    model: object | None = None
    encoder_layers: int = 0
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: InferenceResult, file_name: str = "", max_input: int | None = None,
           model: object | None = None, encoder_layers: int = 0) -> "StoredResult":
        canvas, scale = display_canvas(result.image)
        notes = tuple(note for note in (synthetic_model_note(result, APP_REMEDY),) if note)
        return cls(compact(result), canvas, scale, file_name, max_input, model, encoder_layers, notes)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays and tensors of this entry (whole storages, each counted once)."""
        seen: set = set()
        return _nbytes(self.result, seen) + _nbytes(self.canvas, seen)


def compact(result: InferenceResult) -> InferenceResult:
    """`result` as the store keeps it: without the full-size image (the canvas is the copy the
    views draw on; an upload of 4096 x 4096 pixels would otherwise hold 50 MB), and with the
    outputs no view draws from in float16 (the encoder memory and the decoder features)."""
    output = result.internals
    half = {name: getattr(output, name).half() for name in HALF_PRECISION_OUTPUTS}
    return dataclasses.replace(result, image=None, output=dataclasses.replace(output, **half))


# DINOOutput fields that no view draws from: stored in float16.
HALF_PRECISION_OUTPUTS = ("memory", "decoder_features")


def _nbytes(obj, seen: set | None = None) -> int:
    """Bytes really held by the tensors and arrays reachable through dataclass fields, tuples,
    lists and dicts: a view holds its whole storage (a small slice can keep a large tensor alive),
    and a storage shared by several fields is counted once."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        try:
            storage = obj.untyped_storage()
            key, size = ("storage", storage.data_ptr()), storage.nbytes()
        except (NotImplementedError, RuntimeError):  # opaque layouts: their own elements
            key, size = ("tensor", id(obj)), obj.element_size() * obj.nelement()
        if key in seen:
            return 0
        seen.add(key)
        return size
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        if ("array", id(base)) in seen:
            return 0
        seen.add(("array", id(base)))
        return base.nbytes
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_nbytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(item, seen) for item in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(item, seen) for item in obj.values())
    return 0
