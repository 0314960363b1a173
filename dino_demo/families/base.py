"""Families as data: what differs between the `transformers` detectors the explorer opens.

A `Family` names the config `model_type`s it covers, the transformers class, and three small
functions of the model's own outputs: the class logits and boxes after every decoder layer
(`predictions`), the two-stage query selection (`selection`, None for families without one) and
whether boxes are refined from layer to layer. Everything else (loading, the op, capture,
post-processing, the result) is shared (`load`, `inference`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..model.outputs import EncoderSelection
from .capture import Recorder

# (model, outputs, recorder, inputs) -> (logits [K, B, Q, C], boxes [K, B, Q, 4] normalized cxcywh)
Predictions = Callable[[torch.nn.Module, object, Recorder, dict], tuple[torch.Tensor, torch.Tensor]]
# (model, outputs, spatial_shapes, level_start_index) -> EncoderSelection | None
Selection = Callable[[torch.nn.Module, object, torch.Tensor, torch.Tensor], EncoderSelection | None]


@dataclass(frozen=True)
class Family:
    """One family of deformable-attention detectors in `transformers`.

    name: display name; model_types: the config `model_type`s it covers; model_class: the
    transformers class that loads it; text_prompt: it detects what a text prompt names
    (Grounding DINO); deformable_encoder: its encoder is multi-scale deformable attention (the
    encoder-token view applies); top_k: detections kept by post-processing (None: one per query
    slot, as the family's processor keeps); refines: (config) -> whether each decoder layer refines
    the previous layer's box (then the reference after the last layer is the final box);
    two_stage: (config) -> whether its queries are selected from the encoder's proposals;
    unavailable: view -> why it does not apply, for every model of the family.
    """

    name: str
    model_types: tuple[str, ...]
    model_class: str
    predictions: Predictions
    selection: Selection
    text_prompt: bool = False
    deformable_encoder: bool = False
    top_k: int | None = None
    refines: Callable[[object], bool] = lambda config: True
    two_stage: Callable[[object], bool] = lambda config: True
    unavailable: dict[str, str] = field(default_factory=dict)


def selection_from_topk(topk: torch.Tensor, scores: torch.Tensor, logits: torch.Tensor, box_logits: torch.Tensor,
                        proposals: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor
                        ) -> EncoderSelection:
    """The `EncoderSelection` of a two-stage top-k.

    topk: [B, Q] token indices in query-slot order; scores: [B, S] the score top-k ranked by;
    logits: [B, S, C] encoder class logits; box_logits: [B, S, 4] encoder boxes before the sigmoid;
    proposals: [B, S, 4] the fixed proposals (normalized cxcywh).
    """
    gather4 = topk[..., None].expand(-1, -1, 4)
    starts = level_start_index.to(topk.device)
    levels = torch.searchsorted(starts, topk, right=True) - 1
    widths = spatial_shapes[:, 1].to(topk.device)[levels]
    offset = topk - starts[levels]
    cells = torch.stack([offset // widths, offset % widths], -1)
    return EncoderSelection(
        topk_indices=topk, levels=levels, cells=cells, proposals=torch.gather(proposals, 1, gather4),
        boxes=torch.gather(box_logits, 1, gather4).sigmoid(),
        logits=torch.gather(logits, 1, topk[..., None].expand(-1, -1, logits.shape[-1])), max_logit=scores)


def refined_boxes(heads_logits: torch.Tensor, references: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """sigmoid(delta + logit(reference)) as the DETR heads compute boxes: deltas [..., 4] and
    references [..., 2 or 4] (a 2-d reference shifts the centre only)."""
    inverse = torch.special.logit(references, eps=eps) if eps is not None else _inverse_sigmoid(references)
    if references.shape[-1] == 4:
        return (heads_logits + inverse).sigmoid()
    delta = heads_logits.clone()
    delta[..., :2] += inverse
    return delta.sigmoid()


def _inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """transformers' `inverse_sigmoid` of the DETR family."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
