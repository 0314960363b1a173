"""The families' loader in the runtime's registry: Hub ids and `save_pretrained` folders load
into a `detector.FamilyDetector`. The registry imports this module by name
(`runtime.registry.PROVIDERS`); it imports transformers only when such a model is asked for.
"""
from __future__ import annotations

import torch

from ..runtime.detector import Detector
from ..runtime.registry import register
from ..sources.download import Progress
from ..sources.source import Source, SourceKind


def load_detector(source: Source, variant: str | None, device: torch.device, progress: Progress | None) -> Detector:
    """The detector of a transformers-format source (a Hub id, a `save_pretrained` folder), by
    `detector.load`; a ValueError naming what to install where transformers is missing."""
    if source.kind is SourceKind.FOLDER and not (source.path / "config.json").is_file():
        raise ValueError(f"{source.name} is a folder without config.json: give a checkpoint file, or a "
                         "transformers save_pretrained folder")
    try:
        from .detector import load
    except ImportError as error:
        raise ValueError(f"{source} needs transformers, not installed here ({error}): "
                         "pip install -r requirements.txt (in the project folder)") from None
    return load(source, variant, device, progress)


register((SourceKind.HUB, SourceKind.FOLDER), load_detector)
