"""DINO's PostProcess: the top `num_select` (query, class) pairs by sigmoid score."""
from __future__ import annotations

import torch

from .box_ops import box_cxcywh_to_xyxy
from .outputs import Detections


def top_detections(logits: torch.Tensor, boxes: torch.Tensor, num_select: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batched top-k of `postprocess`, before scaling to pixels.

    Args:
        logits: [B, Q, C] final class logits; boxes: [B, Q, 4] normalized cxcywh.
        num_select: detections kept per image (official 300), capped at Q * C.

    Returns scores [B, N] (sigmoid, best first), labels [B, N] int64, query_slot [B, N] int64 and
    boxes [B, N, 4] normalized xyxy, N = min(num_select, Q * C).
    """
    batch, queries, classes = logits.shape
    k = torch.sym_min(num_select, queries * classes)  # a graph op when the size is traced
    scores, flat_index = torch.topk(logits.sigmoid().view(batch, -1), k, dim=1)
    query_slot = flat_index // classes
    labels = flat_index % classes
    xyxy = torch.gather(box_cxcywh_to_xyxy(boxes), 1, query_slot.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, query_slot, xyxy


def postprocess(logits: torch.Tensor, boxes: torch.Tensor, target_sizes: torch.Tensor, num_select: int) -> list[Detections]:
    """
    Args:
        logits: [B, Q, C] final class logits; boxes: [B, Q, 4] normalized cxcywh.
        target_sizes: [B, 2] (height, width) each image's boxes are scaled to.
        num_select: detections kept per image (official 300), capped at Q * C.

    Returns one `Detections` per image, highest score first.
    """
    batch = logits.shape[0]
    if target_sizes.shape != (batch, 2):
        raise ValueError(f"target_sizes must be [{batch}, 2], got {tuple(target_sizes.shape)}")
    scores, labels, query_slot, xyxy = top_detections(logits, boxes, num_select)
    height, width = target_sizes.unbind(1)
    scale = torch.stack([width, height, width, height], dim=1).to(xyxy.dtype)
    xyxy = xyxy * scale[:, None, :]
    return [Detections(scores[i], labels[i], xyxy[i], query_slot[i]) for i in range(batch)]
