"""DINO's training losses (the official SetCriterion recipe).

For the final decoder layer, every auxiliary decoder layer and the encoder's two-stage proposals:
Hungarian-match the queries to the targets, then
- `loss_ce`: sigmoid focal loss (alpha 0.25, gamma 2) over all query slots and classes, the
  matched slots' target being their target's class and every other slot "no object" (all zeros),
  summed and divided by the number of target boxes;
- `loss_bbox`: L1 between matched boxes (normalized cxcywh), divided by the number of boxes;
- `loss_giou`: 1 - GIoU of matched boxes, divided by the number of boxes.
Under data-parallel training the number of boxes is the mean over the processes (all-reduced, as
officially), so that the gradients DistributedDataParallel averages are those of the whole batch.

Contrastive denoising queries are not matched: positive query t of every group is assigned to
target t, negatives keep the "no object" target of the focal loss and get no box loss; the
denoising losses are divided by num_boxes * num_groups.

Loss keys follow the official code: `loss_ce`, `loss_bbox`, `loss_giou` (last layer),
`<key>_<k>` (decoder layer k < K-1), `<key>_interm` (encoder proposals), `<key>_dn` and
`<key>_dn_<k>` (denoising queries).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from ..model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from ..model.outputs import DenoisingOutput, DINOOutput
from .distributed import mean_over_processes
from .matcher import HungarianMatcher, Match


@dataclass(frozen=True)
class LossWeights:
    """Coefficients of the loss terms in the total (official DINO: 1, 5, 2, same for every set)."""

    cls: float = 1.0
    l1: float = 5.0
    giou: float = 2.0

    def of(self, key: str) -> float:
        term = key.split("_")[1]
        return {"ce": self.cls, "bbox": self.l1, "giou": self.giou}[term]


def _flat_index(matches: list[Match]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index, query index) of every matched pair, concatenated over images."""
    batch = torch.cat([torch.full_like(queries, i) for i, (queries, _) in enumerate(matches)])
    queries = torch.cat([queries for queries, _ in matches])
    return batch, queries


class SetCriterion(nn.Module):
    """Computes the unweighted loss dict of a DINOOutput; `total` weights and sums it."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weights: LossWeights = LossWeights(),
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = weights
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def set_losses(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
                   matches: list[Match], num_boxes: float) -> dict[str, torch.Tensor]:
        """loss_ce / loss_bbox / loss_giou of one prediction set (logits [B, Q, C], boxes [B, Q, 4])."""
        batch, queries = _flat_index(matches)
        batch, queries = batch.to(logits.device), queries.to(logits.device)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, matches)]).to(logits.device)
        matched_targets = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, matches)]).to(boxes)

        onehot = torch.zeros_like(logits)
        onehot[batch, queries, matched_labels] = 1.0
        loss_ce = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma).sum() / num_boxes

        matched_boxes = boxes[batch, queries]
        loss_bbox = F.l1_loss(matched_boxes, matched_targets, reduction="sum") / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(matched_boxes), box_cxcywh_to_xyxy(matched_targets))
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @staticmethod
    def denoising_matches(denoising: DenoisingOutput, targets: list[dict]) -> list[Match]:
        """Fixed assignment of the positive denoising queries: slot g * 2 * max_targets + t <- target t."""
        matches = []
        for target in targets:
            n = int(target["labels"].numel())
            target_index = torch.arange(n, dtype=torch.int64).repeat(denoising.num_groups)
            group_start = torch.arange(denoising.num_groups, dtype=torch.int64) * 2 * denoising.max_targets
            query_index = (group_start[:, None] + torch.arange(n, dtype=torch.int64)[None]).flatten()
            matches.append((query_index, target_index))
        return matches

    def forward(self, output: DINOOutput, targets: list[dict]) -> dict[str, torch.Tensor]:
        count = torch.tensor(float(sum(int(t["labels"].numel()) for t in targets)), device=output.logits.device)
        num_boxes = max(mean_over_processes(count).item(), 1.0)
        losses: dict[str, torch.Tensor] = {}
        layers = output.logits.shape[0]
        for k in range(layers):
            suffix = "" if k == layers - 1 else f"_{k}"
            matches = self.matcher(output.logits[k], output.boxes[k], targets)
            for key, value in self.set_losses(output.logits[k], output.boxes[k], targets, matches, num_boxes).items():
                losses[key + suffix] = value

        selection = output.selection
        matches = self.matcher(selection.logits, selection.boxes, targets)
        for key, value in self.set_losses(selection.logits, selection.boxes, targets, matches, num_boxes).items():
            losses[key + "_interm"] = value

        denoising = output.denoising
        if denoising is not None and denoising.num_groups > 0:
            matches = self.denoising_matches(denoising, targets)
            dn_boxes = num_boxes * denoising.num_groups
            for k in range(layers):
                suffix = "_dn" if k == layers - 1 else f"_dn_{k}"
                values = self.set_losses(denoising.logits[k], denoising.boxes[k], targets, matches, dn_boxes)
                for key, value in values.items():
                    losses[key + suffix] = value
        return losses

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of a loss dict from `forward`."""
        return sum(self.weights.of(key) * value for key, value in losses.items())


def build_criterion(num_classes: int) -> SetCriterion:
    """The official DINO criterion: matcher costs 2/5/2, loss weights 1/5/2, focal alpha 0.25."""
    return SetCriterion(num_classes, HungarianMatcher())
