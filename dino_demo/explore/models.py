"""Models ready for inference, loaded once from any model source (`sources.Source`: the shipped
model, a zoo entry, a checkpoint path or URL, an untrained variant, a Hub id or a folder).

`load` returns (model, config) with the inference fast paths of `explore.speed` applied, `build`
(from `sources.loader`, the one place that decides which loader takes which kind of source) the
plain model (official modules, for export); `ModelCache` keeps the most recently used ones, thread-safe, for
the app.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ..model.config import DINOConfig
from ..sources.download import Progress
from ..sources.loader import build
from ..sources.source import UNTRAINED_PREFIX, Source
from .speed import optimize_for_inference

__all__ = ["ModelCache", "UNTRAINED_PREFIX", "build", "load"]


class ModelCache:
    """Loaded models by (source, variant), least recently used dropped beyond `capacity`.

    A source is a `Source` or its text (see sources/source.py: a checkpoint path, an http(s) URL,
    "shipped", "zoo:<id>", "untrained:<variant>", ...). Thread-safe: concurrent requests for the same source load it once, and
    loading one source does not hold up requests for loaded ones. `progress(done_bytes,
    total_bytes)` hears about a download the request causes.
    """

    def __init__(self, capacity: int = 2, device: str | torch.device = "cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, torch.device(device)
        self._models: OrderedDict[tuple[str, str | None], tuple[torch.nn.Module, DINOConfig]] = OrderedDict()
        self._loading: dict[tuple[str, str | None], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, source: str | Path | Source, variant: str | None = None,
            progress: Progress | None = None) -> tuple[torch.nn.Module, DINOConfig]:
        source = Source.parse(source)
        key = (str(source), variant or None)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:  # loaded by another request meanwhile
                    return self._models[key]
            try:
                entry = load(source, variant, self.device, progress)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._models[key] = entry
                self._loading.pop(key, None)
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            return entry

    def add(self, source: str | Path | Source, variant: str | None, model: torch.nn.Module, config: DINOConfig) -> None:
        """Hold an already loaded (model, config) under (source, variant), as `get` would."""
        key = (str(Source.parse(source)), variant or None)
        with self._lock:
            self._models[key] = (model, config)
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)


def load(source: str | Path | Source, variant: str | None = None, device: str | torch.device = "cpu",
         progress: Progress | None = None) -> tuple[torch.nn.Module, DINOConfig]:
    """(model ready for inference, its config) for a source as `ModelCache` describes: in eval
    mode, with the inference fast paths of `speed.optimize_for_inference`. A transformers model
    (an hf:ORG/NAME id or a save_pretrained folder) gives a `families.load.FamilyModel` and its
    `FamilySettings` instead (transformers' own code, with our op already serving its attention)."""
    model, cfg = build(source, variant, device, progress, transformers=True)
    if not isinstance(cfg, DINOConfig):
        return model, cfg
    return optimize_for_inference(model), cfg
