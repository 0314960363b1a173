"""Hungarian matching of predictions to ground truth, with DINO's focal-style class cost."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from ..model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

Match = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class MatchCosts:
    """Weights of the matching cost terms (official DINO: class 2, L1 5, GIoU 2)."""

    cls: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        if min(self.cls, self.l1, self.giou) < 0 or self.cls + self.l1 + self.giou == 0:
            raise ValueError(f"match costs must be >= 0 and not all zero, got {self}")


class HungarianMatcher:
    """One-to-one assignment of each image's targets to query slots minimising
    cls * focal_cost + l1 * |box - target|_1 - giou * GIoU(box, target).

    The focal class cost is the focal loss of calling the slot positive for the target class
    minus the focal loss of calling it negative (sigmoid probabilities, alpha/gamma as in the loss).
    """

    def __init__(self, costs: MatchCosts = MatchCosts()) -> None:
        self.costs = costs

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, target_labels: torch.Tensor,
                    target_boxes: torch.Tensor) -> torch.Tensor:
        """Cost [Q, T] between one image's predictions (logits [Q, C], boxes [Q, 4] cxcywh) and
        its targets (labels [T] int64, boxes [T, 4] cxcywh)."""
        c = self.costs
        prob = logits.sigmoid()[:, target_labels]
        negative = (1 - c.focal_alpha) * prob ** c.focal_gamma * -(1 - prob + 1e-8).log()
        positive = c.focal_alpha * (1 - prob) ** c.focal_gamma * -(prob + 1e-8).log()
        cost_class = positive - negative
        cost_l1 = torch.cdist(boxes, target_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return c.l1 * cost_l1 + c.cls * cost_class + c.giou * cost_giou

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict]) -> list[Match]:
        """Match a batch.

        Args:
            logits: [B, Q, C] class logits; boxes: [B, Q, 4] normalized cxcywh.
            targets: B dicts with "labels" [T_i] int64 and "boxes" [T_i, 4] normalized cxcywh.

        Returns:
            B pairs (query_index [n_i], target_index [n_i]) of int64 CPU tensors, n_i = min(Q, T_i),
            sorted by query index.
        """
        if logits.shape[0] != len(targets):
            raise ValueError(f"{logits.shape[0]} predictions for {len(targets)} targets")
        matches = []
        for image_logits, image_boxes, target in zip(logits.float(), boxes.float(), targets):
            labels, target_boxes = target["labels"], target["boxes"].float()
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(image_logits, image_boxes, labels, target_boxes)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches
