"""`transformers` detectors built on multi-scale deformable attention, explored like DINO.

Deformable DETR, Grounding DINO, MM Grounding DINO, RT-DETR, RT-DETR v2, D-FINE, LW-DETR and
RF-DETR are loaded with transformers' own classes and processors (`load`), served by our op
(`op`), and run with hooks that capture what their attention used (`capture`, `inference`),
giving the same `runtime.InferenceResult` the views draw for DINO. One module per family holds
what differs (`base.Family`); `hub` lists published models and downloads them. The runtime loads
Hub ids and folders through `registration`, which it finds by name.
"""
from __future__ import annotations

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


__all__ = ["FAMILIES", "Family", "family_of"]
