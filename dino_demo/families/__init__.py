"""`transformers` detectors built on multi-scale deformable attention, explored like DINO.

Deformable DETR, Grounding DINO, MM Grounding DINO, RT-DETR, RT-DETR v2, D-FINE, LW-DETR and
RF-DETR are loaded with transformers' own classes and processors (`load`), served by our op
(`op`), and run with hooks that capture what their attention used (`capture`, `inference`),
giving the same `runtime.InferenceResult` the views draw for DINO. One module per family holds
what differs (`base.Family`); `hub` lists published models and downloads them. Importing the
package registers its loader (`detector.load`) with the runtime for Hub ids and folders.
"""
from __future__ import annotations

import torch

from ..runtime.detector import Detector
from ..runtime.registry import register
from ..sources.download import Progress
from ..sources.source import Source, SourceKind
from . import d_fine, deformable_detr, grounding_dino, lw_detr, rt_detr
from .base import Family

FAMILIES: tuple[Family, ...] = (deformable_detr.FAMILY, grounding_dino.FAMILY, grounding_dino.MM_FAMILY,
                                rt_detr.FAMILY, rt_detr.V2_FAMILY, d_fine.FAMILY, lw_detr.FAMILY, lw_detr.RF_FAMILY)
_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def family_of(model_type: str) -> Family:
    """The family of a config `model_type`; ValueError for one the explorer does not open."""
    if model_type not in _BY_TYPE:
        raise ValueError(f"model type {model_type!r} is not a deformable-attention detector the explorer opens "
                         f"({', '.join(sorted(_BY_TYPE))})")
    return _BY_TYPE[model_type]


def load_detector(source: Source, variant: str | None, device: torch.device, progress: Progress | None) -> Detector:
    """The registered loader of transformers-format sources (a Hub id, a `save_pretrained` folder):
    `detector.load`, imported here so that transformers is imported only for these models."""
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

__all__ = ["FAMILIES", "Family", "family_of", "load_detector"]
