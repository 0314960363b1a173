"""From a model source to a `Detector`: a registry keyed by the source's kind.

DINO registers the checkpoint kinds (shipped, zoo, URL, file, untrained; `runtime.dino`), the
`transformers` families the Hub ids and `save_pretrained` folders (`families.registration`), each
with a loader `(source, variant, device, progress) -> Detector`, when their module is imported.
This floor imports nothing above it: the modules that fill the registry in are named in
`PROVIDERS` and imported by name the first time a kind nobody registered is asked for (as a
plugin is found).
"""
from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable

import torch

from ..sources.download import Progress
from ..sources.source import Source, SourceKind
from .detector import Detector

Loader = Callable[[Source, "str | None", torch.device, "Progress | None"], Detector]

# Modules that register loaders when imported.
PROVIDERS = ("dino_demo.runtime.dino", "dino_demo.families.registration")

_LOADERS: dict[SourceKind, Loader] = {}
_lock = threading.Lock()


def register(kinds: Iterable[SourceKind], loader: Loader) -> None:
    """Make `loader` the one that loads sources of `kinds` (a later registration replaces it)."""
    with _lock:
        for kind in kinds:
            _LOADERS[kind] = loader


def loader_for(kind: SourceKind) -> Loader:
    """The loader registered for `kind`, importing the providers once if none is yet;
    ValueError when none loads it."""
    with _lock:
        loader = _LOADERS.get(kind)
    if loader is None:
        for provider in PROVIDERS:
            importlib.import_module(provider)
        with _lock:
            loader = _LOADERS.get(kind)
    if loader is None:
        raise ValueError(f"no detector loads {kind.value} sources here")
    return loader


def load_detector(source: str | os.PathLike | Source, *, device: str | torch.device = "cpu",
                  progress: Progress | None = None, variant: str | None = None) -> Detector:
    """The detector `source` names (a `Source` or its text: "shipped", "zoo:ID", a checkpoint path
    or URL, "untrained:VARIANT", "hf:ORG/NAME[@REVISION]", a save_pretrained folder), on
    `device`, in eval mode with the inference fast paths applied. `variant` forces a DINO
    configuration on a checkpoint; `progress(done_bytes, total_bytes)` hears about a download.
    ValueError for a source that cannot be loaded, with the reason."""
    parsed = Source.parse(source)
    return loader_for(parsed.kind)(parsed, variant or None, torch.device(device), progress)
