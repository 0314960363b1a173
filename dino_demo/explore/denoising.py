"""DINO's contrastive denoising on one image, made visible.

`run_denoising` builds the CDN queries from an image's ground-truth boxes exactly as the official
`prepare_for_cdn` does for the same seed (`torch.manual_seed(seed)` right before, the model's own
`dn_number`, label noise and box noise), decodes them beside the matching queries, and returns a
`DenoisingRun`: the noised queries, every decoder layer's boxes and class logits for them, the
attention mask, and the per-query terms of the denoising loss. The run uses its own random state
(`torch.random.fork_rng`): the caller's is left as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import sigmoid_focal_loss

from ..io.boxes import GroundTruth
from ..io.labels import label_name
from ..io.preprocess import prepare_batch
from ..model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from ..model.config import DINOConfig
from ..model.denoising import make_denoising_queries

# The official criterion's focal loss (alpha, gamma).
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@dataclass(frozen=True)
class DenoisingRun:
    """One image's denoising queries through the decoder (numpy, batch dimension dropped).

    Shapes: n ground-truth boxes, pad = 2 * num_groups * n denoising slots, Q matching queries,
    K decoder layers, C classes. Boxes are normalized (cx, cy, w, h) of the image.

    gt_labels [n], gt_boxes [n, 4]: the targets (class ids, boxes by the image's own size).
    input_image [3, h, w]: the normalized model input.
    dn_labels [pad]: noised class ids fed to the label embedding (-1 on padding).
    dn_boxes [pad, 4]: noised anchors before the inverse sigmoid (0.5 on padding).
    dn_positive [pad] bool; dn_target [pad]: target each slot copies (-1 on padding);
    dn_group [pad]: the group of each slot.
    attn_mask [pad + Q, pad + Q] bool: True = may not attend (the official mask).
    dn_references [K + 1, pad, 4]: reference boxes before layer 1 (the anchors) and after each
        layer (detached: what the next layer starts from).
    dn_pred_boxes [K, pad, 4], dn_pred_logits [K, pad, C]: each layer's prediction.
    loss_class [K, pad]: focal loss of the slot summed over classes (target: its ground-truth class
        for a positive, "no object" for a negative); loss_bbox [K, pad]: L1 to its ground truth;
    loss_giou [K, pad]: 1 - GIoU; both NaN for negatives and padding (no box loss). Per slot,
        before the criterion's division by num_boxes * num_groups.
    """

    image_size: tuple[int, int]
    seed: int
    num_groups: int
    max_targets: int
    dn_number: int
    label_noise_ratio: float
    box_noise_scale: float
    class_names: tuple[str, ...]
    gt_labels: np.ndarray
    gt_boxes: np.ndarray
    input_image: np.ndarray
    dn_labels: np.ndarray
    dn_boxes: np.ndarray
    dn_positive: np.ndarray
    dn_target: np.ndarray
    dn_group: np.ndarray
    attn_mask: np.ndarray
    dn_references: np.ndarray
    dn_pred_boxes: np.ndarray
    dn_pred_logits: np.ndarray
    loss_class: np.ndarray
    loss_bbox: np.ndarray
    loss_giou: np.ndarray
    variant: str = ""
    model_id: str = ""

    @property
    def pad_size(self) -> int:
        return int(self.dn_labels.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.dn_pred_boxes.shape[0])

    @property
    def num_queries(self) -> int:
        """Matching queries decoded beside the denoising ones."""
        return int(self.attn_mask.shape[0]) - self.pad_size

    def label(self, class_id: int) -> str:
        return label_name(self.class_names, int(class_id))

    def group_slots(self, group: int) -> np.ndarray:
        """Slot indices of `group`'s real (not padding) queries, positives first."""
        if not 0 <= group < self.num_groups:
            raise ValueError(f"group must lie in 0..{self.num_groups - 1}, got {group}")
        return np.flatnonzero((self.dn_group == group) & (self.dn_target >= 0))


def run_denoising(model: torch.nn.Module, cfg: DINOConfig, image: np.ndarray, truth: GroundTruth, seed: int, *,
                  max_size: int | None = None, class_names: tuple[str, ...] = (), model_id: str = "") -> DenoisingRun:
    """Decode the CDN queries of `truth` (boxes of `image`, [H, W, 3] uint8 RGB, in the pixels of
    the image `truth.image_size` names: the file's, when `image` is a downscaled copy) with `model`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be a whole number in 0..2**63-1, got {seed!r}")
    (height, width), (rows, cols) = truth.image_size, image.shape[:2]
    if abs(height / width - rows / cols) > 0.02 * rows / cols:
        raise ValueError(f"the boxes are for an image of {width}x{height} pixels, not of this {cols}x{rows} image")
    device = next(model.parameters()).device
    batch = prepare_batch([image], cfg, max_size)
    target = {k: v.to(device) for k, v in truth.targets().items()}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(int(seed))
        queries = make_denoising_queries([target], model.label_enc, cfg.num_classes, cfg.num_queries, cfg.dn_number,
                                         cfg.dn_label_noise_ratio, cfg.dn_box_noise_scale)
        output = model(batch.images.to(device), batch.masks.to(device), denoising=queries)
    dn = output.denoising
    groups, max_targets = dn.num_groups, dn.max_targets
    slots = np.arange(dn.pad_size)
    losses = per_query_losses(dn.logits[:, 0].float().cpu(), dn.boxes[:, 0].float().cpu(), target["labels"].cpu(),
                              target["boxes"].cpu(), dn.queries.target_index[0].cpu(), dn.queries.positive.cpu())
    return DenoisingRun(
        image_size=truth.image_size, seed=int(seed), num_groups=groups, max_targets=max_targets,
        dn_number=cfg.dn_number, label_noise_ratio=cfg.dn_label_noise_ratio, box_noise_scale=cfg.dn_box_noise_scale,
        class_names=class_names or tuple(f"class {i}" for i in range(cfg.num_classes)),
        gt_labels=target["labels"].cpu().numpy(), gt_boxes=target["boxes"].cpu().numpy().reshape(-1, 4),
        input_image=batch.images[0].numpy(),
        dn_labels=dn.queries.labels[0].cpu().numpy(), dn_boxes=dn.queries.boxes[0].cpu().numpy(),
        dn_positive=dn.queries.positive.cpu().numpy(), dn_target=dn.queries.target_index[0].cpu().numpy(),
        dn_group=slots // (2 * max_targets) if max_targets else slots,
        attn_mask=dn.attn_mask.cpu().numpy(), dn_references=dn.references[:, 0].float().cpu().numpy(),
        dn_pred_boxes=dn.boxes[:, 0].float().cpu().numpy(), dn_pred_logits=dn.logits[:, 0].float().cpu().numpy(),
        loss_class=losses[0], loss_bbox=losses[1], loss_giou=losses[2], variant=cfg.name, model_id=model_id)


def per_query_losses(logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                     target_index: torch.Tensor, positive: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slot denoising loss terms of every layer, as the official criterion computes them before
    summing: logits [K, pad, C], boxes [K, pad, 4] cxcywh; gt_labels [n], gt_boxes [n, 4];
    target_index [pad] (-1 padding); positive [pad]. -> (focal [K, pad], L1 [K, pad], 1 - GIoU
    [K, pad]); padding slots get NaN everywhere, negatives NaN box terms."""
    layers, pad, classes = logits.shape
    real = target_index >= 0
    matched = positive & real
    onehot = torch.zeros(pad, classes)
    rows = torch.nonzero(matched).flatten()
    onehot[rows, gt_labels[target_index[rows]]] = 1.0
    focal = sigmoid_focal_loss(logits, onehot.expand(layers, -1, -1), FOCAL_ALPHA, FOCAL_GAMMA,
                               reduction="none").sum(-1)
    focal[:, ~real] = float("nan")
    l1 = torch.full((layers, pad), float("nan"))
    giou = torch.full((layers, pad), float("nan"))
    if len(rows):
        truth = gt_boxes[target_index[rows]]
        l1[:, rows] = (boxes[:, rows] - truth).abs().sum(-1)
        for k in range(layers):
            pairs = generalized_box_iou(box_cxcywh_to_xyxy(boxes[k, rows]), box_cxcywh_to_xyxy(truth))
            giou[k, rows] = 1 - torch.diag(pairs)
    return focal.numpy(), l1.numpy(), giou.numpy()


@dataclass(frozen=True)
class DenoisingRow:
    """One denoising slot, for the table: its kind, target, the class it was given and the one it
    was denoised to (best class after the last layer, with its probability), and its loss terms
    after the last layer."""

    slot: int
    group: int
    kind: str
    target: int
    input_label: str
    flipped: bool
    denoised_label: str
    score: float
    loss_class: float
    loss_bbox: float
    loss_giou: float


def denoising_rows(run: DenoisingRun, group: int, layer: int | None = None) -> list[DenoisingRow]:
    """The table rows of `group`'s real slots after `layer` (0-based; default the last)."""
    k = run.num_layers - 1 if layer is None else layer
    if not 0 <= k < run.num_layers:
        raise ValueError(f"layer must lie in 1..{run.num_layers}, got {k + 1}")
    rows = []
    for slot in run.group_slots(group):
        probabilities = 1 / (1 + np.exp(-run.dn_pred_logits[k, slot].astype(np.float64)))
        best = int(probabilities.argmax())
        target = int(run.dn_target[slot])
        rows.append(DenoisingRow(
            slot=int(slot), group=group, kind="positive" if run.dn_positive[slot] else "negative", target=target,
            input_label=run.label(run.dn_labels[slot]), flipped=bool(run.dn_labels[slot] != run.gt_labels[target]),
            denoised_label=run.label(best), score=float(probabilities[best]),
            loss_class=float(run.loss_class[k, slot]), loss_bbox=float(run.loss_bbox[k, slot]),
            loss_giou=float(run.loss_giou[k, slot])))
    return rows
