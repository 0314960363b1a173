"""Models ready for inference, loaded once: from a checkpoint path or URL, a model zoo entry, or an
untrained variant.

`load` returns (model, config) with the inference fast paths of `explore.speed` applied, `build`
the plain model (official modules, for export);
`ModelCache` keeps the most recently used ones, thread-safe, for the app.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ..families.load import is_family_source
from ..families.load import load as load_family
from ..sources.checkpoint import load_model
from ..sources.download import Progress
from ..model.config import DINOConfig, get_config
from ..model.detector import DINO, build_model
from .speed import optimize_for_inference

UNTRAINED_PREFIX = "untrained:"


class ModelCache:
    """Loaded models by (source, variant), least recently used dropped beyond `capacity`.

    A source is a checkpoint path, an http(s) URL, "zoo:<id>" (a model zoo entry, downloaded
    once; see sources/zoo.py), or "untrained:<variant>" (random weights, seeded, for exploring a
    variant's structure). Thread-safe: concurrent requests for the same source load it once, and
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

    def get(self, source: str | Path, variant: str | None = None,
            progress: Progress | None = None) -> tuple[torch.nn.Module, DINOConfig]:
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
                entry = load(str(source), variant, self.device, progress)
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

    def add(self, source: str | Path, variant: str | None, model: torch.nn.Module, config: DINOConfig) -> None:
        """Hold an already loaded (model, config) under (source, variant), as `get` would."""
        with self._lock:
            self._models[(str(source), variant or None)] = (model, config)
            self._models.move_to_end((str(source), variant or None))
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)


def load(source: str, variant: str | None = None, device: str | torch.device = "cpu",
         progress: Progress | None = None) -> tuple[torch.nn.Module, DINOConfig]:
    """(model ready for inference, its config) for a source as `ModelCache` describes: in eval
    mode, with the inference fast paths of `speed.optimize_for_inference`. A transformers model
    folder or an "hf:ORG/NAME" id gives a `families.load.FamilyModel` and its settings instead."""
    if is_family_source(source):
        if variant:
            raise ValueError(f"{source} is a transformers model: its config says what it is (no --variant)")
        handle = load_family(source, device, progress=progress)
        return handle, handle.settings
    model, cfg = build(source, variant, device, progress)
    return optimize_for_inference(model), cfg


def build(source: str, variant: str | None = None, device: str | torch.device = "cpu",
          progress: Progress | None = None) -> tuple[DINO, DINOConfig]:
    """(model, config) for a source as `ModelCache` describes, in eval mode with the official
    modules and state_dict layout (what exporting and saving need)."""
    if source.startswith(UNTRAINED_PREFIX):
        cfg = get_config(source[len(UNTRAINED_PREFIX):])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(cfg)
        return model.to(device).eval(), cfg
    return load_model(source, variant=variant, device=device, progress=progress)
