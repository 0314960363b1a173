"""Detectors ready for inference, loaded once from any model source (`sources.Source`: the shipped
model, a zoo entry, a checkpoint path or URL, an untrained variant, a Hub id or a folder).

`load` returns the `runtime.Detector` of a source (`runtime.load_detector`: the registry of
loaders by kind of source, with the inference fast paths of `runtime.speed` for DINO), `build`
(from `sources.loader`) DINO's plain model (official modules, for export); `ModelCache` keeps the
most recently used detectors, thread-safe, for the app.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from ..model.config import get_config
from ..model.skeleton import on_meta
from ..model.detector import build_model
from ..paths import url_checkpoints_dir
from ..runtime import Detector, load_detector
from ..sources import zoo
from ..sources.checkpoint import resolve_source, url_file_name
from ..sources.download import Progress
from ..sources.loader import build
from ..sources.source import UNTRAINED_PREFIX, Source, SourceKind

__all__ = ["DownloadsBusy", "ModelCache", "UNTRAINED_PREFIX", "build", "expected_bytes", "load", "model_bytes",
           "needs_download"]


class DownloadsBusy(ValueError):
    """Every download slot is taken by other requests' downloads: try again shortly."""


class ModelCache:
    """Loaded detectors (`runtime.Detector`) by (source, variant), least recently used dropped beyond `capacity` models or
    `max_bytes` of weights (the newest is always kept, even if it alone is larger).

    A source is a `Source` or its text (see sources/source.py: a checkpoint path, an http(s) URL,
    "shipped", "zoo:<id>", "untrained:<variant>", ...). Thread-safe: concurrent requests for the same source load it once, and
    loading one source does not hold up requests for loaded ones. `progress(done_bytes,
    total_bytes)` hears about a download the request causes.

    `download_slots`: how many loads that must download their file may run at once; such a
    request when all are taken raises DownloadsBusy at once instead of waiting, so that stalled
    downloads hold at most that many of a server's workers (loads from this machine's disk, an
    untrained variant or a file already downloaded, take no slot). Before a load (after its
    download: a failed one drops nothing), models are dropped until the new one's expected size
    fits `max_bytes`, so that two large models are never resident together on a small machine;
    `released()` is called after models are dropped (the app hands memory back to the operating
    system there).
    """

    def __init__(self, capacity: int = 2, device: str | torch.device = "cpu", *, max_bytes: int | None = None,
                 download_slots: int | None = None, released: Callable[[], None] | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if download_slots is not None and download_slots < 1:
            raise ValueError(f"download_slots must be >= 1, got {download_slots}")
        self.capacity, self.device, self.max_bytes = capacity, torch.device(device), max_bytes
        self._models: OrderedDict[tuple[str, str | None], tuple[Detector, int]] = OrderedDict()
        self._loading: dict[tuple[str, str | None], threading.Lock] = {}
        self._lock = threading.Lock()
        self._download_slots = threading.BoundedSemaphore(download_slots) if download_slots else None
        self.download_slots = download_slots
        self._released = released

    def get(self, source: str | Path | Source, variant: str | None = None,
            progress: Progress | None = None) -> Detector:
        source = Source.parse(source)
        key = (str(source), variant or None)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
        slot = self._download_slots if self._download_slots is not None and needs_download(source) else None
        if slot is not None and not slot.acquire(blocking=False):
            raise DownloadsBusy(f"{self.download_slots} model(s) are being downloaded for other visitors: try again "
                                "in a minute, or use a model that is already on this server.")
        try:
            return self._load(source, key, progress)
        finally:
            if slot is not None:
                slot.release()

    def _load(self, source: Source, key: tuple[str, str | None],
              progress: Progress | None) -> Detector:
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:  # loaded by another request meanwhile
                    return self._models[key][0]
            try:
                if source.kind in (SourceKind.ZOO, SourceKind.URL) and needs_download(source):
                    resolve_source(source, progress=progress)  # the file first: a failed download drops no model
                self._make_room(expected_bytes(source, key[1]))
                detector = load(source, key[1], self.device, progress)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            self._hold(key, detector)
            with self._lock:
                self._loading.pop(key, None)
            return detector

    def add(self, source: str | Path | Source, variant: str | None, detector: Detector) -> None:
        """Hold an already loaded detector under (source, variant), as `get` would."""
        self._hold((str(Source.parse(source)), variant or None), detector)

    @property
    def nbytes(self) -> int:
        """Bytes of the weights of the models held."""
        with self._lock:
            return sum(entry[1] for entry in self._models.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def _hold(self, key: tuple[str, str | None], detector: Detector) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._models[key] = (detector, model_bytes(detector.model))
            dropped = self._drop_beyond(0)
        self._after_drop(dropped)

    def _make_room(self, incoming: int) -> None:
        """Drop models before a load so that the new one fits (by count, and by bytes when known)."""
        with self._lock:
            dropped = self._drop_beyond(incoming, loading=True)
        self._after_drop(dropped)

    def _drop_beyond(self, incoming: int, loading: bool = False) -> list:
        """Under the lock: pop least recently used entries beyond the bounds; the newest stays."""
        dropped = []
        keep = 0 if loading else 1
        slots = self.capacity - (1 if loading else 0)
        while len(self._models) > keep and (
                len(self._models) > slots
                or (self.max_bytes is not None
                    and sum(entry[1] for entry in self._models.values()) + incoming > self.max_bytes)):
            dropped.append(self._models.popitem(last=False))
        return dropped

    def _after_drop(self, dropped: list) -> None:
        if dropped:
            dropped.clear()  # the last references (unless a running request still holds the model)
            if self._released is not None:
                self._released()


@functools.lru_cache(maxsize=None)
def _variant_bytes(name: str) -> int:
    """Bytes of a variant's float32 weights, counted on the meta device (nothing allocated)."""
    try:
        cfg = get_config(name)
    except ValueError:
        return 0
    with on_meta():
        skeleton = build_model(cfg)
    return sum(t.numel() * 4 for t in [*skeleton.parameters(), *skeleton.buffers()])


def needs_download(source: str | Path | Source) -> bool:
    """Whether loading `source` downloads first: a zoo entry or an http(s) URL whose file is not on
    this machine yet (looks at the disk only), or a Hub model."""
    source = Source.parse(source)
    if source.kind is SourceKind.ZOO:
        return zoo.cached_path(zoo.get(source.value)) is None
    if source.kind is SourceKind.URL:
        return not (url_checkpoints_dir() / url_file_name(source.value)).is_file()
    return source.needs_download


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (each storage counted once)."""
    storages = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        try:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (NotImplementedError, RuntimeError):  # opaque layouts (e.g. prepacked weights): their own size
            storages[("opaque", id(tensor))] = tensor.numel() * tensor.element_size()
    return sum(storages.values())


def expected_bytes(source: str | Path | Source, variant: str | None = None) -> int:
    """What loading `source` will about take (float32 weights), from its variant when known
    (untrained and zoo models, a forced variant), else from a local file's size; 0 if unknown."""
    source = Source.parse(source)
    name = variant
    if source.kind is SourceKind.UNTRAINED:
        name = source.value
    elif source.kind is SourceKind.ZOO:
        name = zoo.get(source.value).variant
    if name:
        return _variant_bytes(name)
    if source.kind not in (SourceKind.SHIPPED, SourceKind.FILE):
        return 0
    try:
        return source.path.stat().st_size if source.path.is_file() else 0
    except OSError:
        return 0


def load(source: str | Path | Source, variant: str | None = None, device: str | torch.device = "cpu",
         progress: Progress | None = None) -> Detector:
    """The detector of a source as `ModelCache` describes it (`runtime.load_detector`): in eval
    mode, with the inference fast paths of `runtime.speed` for DINO; a transformers model (an
    hf:ORG/NAME id or a save_pretrained folder) with our op already serving its attention."""
    return load_detector(source, device=device, progress=progress, variant=variant)
