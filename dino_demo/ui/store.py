"""The results the page re-draws from, kept in one app-wide store with a memory budget.

Each Detect stores one `StoredResult`: the inference result in compact form (`compact`), its
drawing canvas, the uploaded file's name. Sessions hold only the key. When the stored results
together exceed the budget, the least recently used are dropped, whichever session they belong
to; a session whose result was dropped is told to press Detect again (`ResultExpired`).

What a stored official R50 result at 800x1066 holds (measured): the canvas 2.6 MB, sampling
locations 5.5 MB and weights 2.8 MB, per-layer logits 2.0 MB, the encoder memory 9.1 MB in float16
(18.2 MB in float32), the encoder's input 18.2 MB (kept in float32: the Encoder view recomputes
any token's attention from it, see `explore.encoder`), the rest under 1 MB.
"""
from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..explore.inference import InferenceResult
from ..explore.visualize import display_canvas
from .memory import release_freed_memory
from .choices import ModelChoice


class ResultExpired(ValueError):
    """The session's result is no longer stored (dropped to stay within the memory budget)."""


@dataclass(eq=False)
class StoredResult:
    """result: the inference result; canvas: the image the views are drawn on and `scale`, its
    pixels per image pixel (see `explore.visualize.display_canvas`); file_name: the upload's name;
    max_input: the cap on the model input's longer side the result was computed with; model: the
    model that made it (the encoder view re-runs it), None when unknown; encoder_layers: that
    model's number of encoder layers (the encoder view's layer choice, known without the model)."""

    result: InferenceResult
    canvas: np.ndarray
    scale: float
    file_name: str = ""
    max_input: int | None = None
    model: ModelChoice | None = None
    encoder_layers: int = 0

    @classmethod
    def of(cls, result: InferenceResult, file_name: str = "", max_input: int | None = None,
           model: ModelChoice | None = None, encoder_layers: int = 0) -> "StoredResult":
        canvas, scale = display_canvas(result.image)
        return cls(compact(result), canvas, scale, file_name, max_input, model, encoder_layers)

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


class ResultStore:
    """Thread-safe LRU of StoredResults by key, dropping the least recently used beyond
    `budget_bytes` (the newest entry is always kept, even if it alone is larger)."""

    def __init__(self, budget_bytes: int):
        if budget_bytes < 1:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, tuple[StoredResult, int]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, stored: StoredResult, key: str | None = None) -> str:
        """Store `stored` under `key` (a new random key by default) and return the key."""
        key = key or uuid.uuid4().hex
        size = stored.nbytes
        dropped = []
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (stored, size)
            total = sum(n for _, n in self._entries.values())
            while total > self.budget_bytes and len(self._entries) > 1:
                dropped.append(self._entries.popitem(last=False))
                total -= dropped[-1][1][1]
        if dropped:
            dropped.clear()
            release_freed_memory()
        return key

    def get(self, key: str | None) -> StoredResult:
        """The entry under `key`; ResultExpired when there is none (any more)."""
        with self._lock:
            entry = self._entries.get(key) if key else None
            if entry is None:
                raise ResultExpired("No detection result in this session (it may have expired to free memory): "
                                    "press Detect (or call /detect) again.")
            self._entries.move_to_end(key)
            return entry[0]

    def peek(self, key: str | None) -> StoredResult | None:
        """The entry under `key` or None, without refreshing it."""
        with self._lock:
            entry = self._entries.get(key) if key else None
            return entry[0] if entry else None

    def discard(self, key: str | None) -> None:
        with self._lock:
            self._entries.pop(key, None)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(n for _, n in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


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
