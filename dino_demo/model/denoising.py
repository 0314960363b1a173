"""Contrastive denoising (CDN) queries for training, as in DINO.

Every ground-truth box is copied into `num_groups` groups. Each group holds a positive copy
(box corners jittered by less than half the box size, `noise_scale` times) and a negative copy
(jittered by between one and two halves), so the decoder learns both to reconstruct boxes and to
reject near misses. A fraction of labels is replaced by random classes. The attention mask keeps
the matching queries from seeing any denoising query and each group from seeing the others.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .box_ops import inverse_sigmoid


@dataclass
class DenoisingQueries:
    """The contrastive denoising queries of a batch, laid out as the official code lays them out:
    `num_groups` groups of 2 * `max_targets` slots, each group's positives (slots 0..max_targets-1
    of the group) before its negatives; in each half, an image's targets in order, then padding.

    content: [B, pad_size, D] label embeddings of the noised class ids (zeros on padding).
    anchors_unsigmoid: [B, pad_size, 4] inverse sigmoid of the noised boxes (zeros on padding,
        i.e. the box (0.5, 0.5, 0.5, 0.5) for the decoder).
    attn_mask: [pad_size + Q, pad_size + Q] bool, True where attention is blocked.
    labels: [B, pad_size] int64 noised class ids fed to the label embedding (-1 on padding).
    boxes: [B, pad_size, 4] noised boxes, normalized cxcywh, before the inverse sigmoid (0.5 on
        padding, what the decoder sees there).
    target_index: [B, pad_size] int64 the target each slot copies (-1 on padding).
    positive: [pad_size] bool, True for the positive slots (the same for every image).
    """

    content: torch.Tensor
    anchors_unsigmoid: torch.Tensor
    attn_mask: torch.Tensor
    pad_size: int
    num_groups: int
    max_targets: int
    labels: torch.Tensor
    boxes: torch.Tensor
    target_index: torch.Tensor
    positive: torch.Tensor


def num_denoising_groups(dn_number: int, max_targets: int) -> int:
    """DINO's rule: `dn_number` positive+negative pairs per image in all, at least one group."""
    if max_targets == 0:
        return 1
    return max(1, (2 * dn_number) // (2 * max_targets)) if 2 * dn_number >= 100 else max(1, 2 * dn_number)


def make_denoising_queries(
    targets: list[dict[str, torch.Tensor]],
    label_enc: nn.Embedding,
    num_classes: int,
    num_queries: int,
    dn_number: int,
    label_noise_ratio: float,
    box_noise_scale: float,
    generator: torch.Generator | None = None,
) -> DenoisingQueries:
    """Build the noised queries for a batch of targets (labels [n] int64, boxes [n, 4] normalized
    cxcywh).

    The random numbers are drawn with the same calls, shapes and dtypes, in the same order, as the
    official `prepare_for_cdn`: so after `torch.manual_seed(s)` (and `generator=None`) the labels,
    boxes and mask equal the official ones for the same seed, bit for bit, on the same device:
    1. label noise (ratio > 0): one uniform number per noised copy; the copies below ratio / 2
       are flipped, and only those draw a replacement class in [0, num_classes);
    2. box noise (scale > 0): a random sign, then a uniform magnitude, per copy and coordinate.
    """
    device = label_enc.weight.device
    counts = [len(t["labels"]) for t in targets]
    batch, max_targets = len(targets), max(counts, default=0)
    groups = num_denoising_groups(dn_number, max_targets)
    pad_size = 2 * groups * max_targets
    dim = label_enc.weight.shape[1]

    labels = torch.cat([t["labels"] for t in targets]).to(device=device, dtype=torch.long)
    boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets]).to(device).float()
    image_ids = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(counts)]).to(device)
    total = len(labels)
    # Layout of the noised copies: for each group, all positives then all negatives.
    copies = 2 * groups
    noised_labels = labels.repeat(copies)
    noised_boxes = boxes.repeat(copies, 1)

    if label_noise_ratio > 0:
        draw = torch.rand(noised_labels.shape, device=device, generator=generator)
        flipped = torch.nonzero(draw < label_noise_ratio * 0.5).view(-1)
        replacement = torch.randint(0, num_classes, flipped.shape, device=device, generator=generator)
        noised_labels = noised_labels.scatter(0, flipped, replacement)

    is_negative = (torch.arange(copies, device=device) % 2 == 1).repeat_interleave(total)
    if box_noise_scale > 0:
        half_wh = noised_boxes[:, 2:] / 2
        corners = torch.cat([noised_boxes[:, :2] - half_wh, noised_boxes[:, :2] + half_wh], -1)
        diff = torch.cat([half_wh, half_wh], -1)
        sign = torch.randint(0, 2, noised_boxes.shape, device=device, dtype=torch.float32, generator=generator) * 2 - 1
        magnitude = torch.rand(noised_boxes.shape, device=device, generator=generator)
        magnitude = magnitude + is_negative[:, None].float()
        corners = (corners + sign * magnitude * diff * box_noise_scale).clamp(0.0, 1.0)
        noised_boxes = torch.cat([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], -1)

    content = torch.zeros(batch, pad_size, dim, device=device)
    anchors = torch.zeros(batch, pad_size, 4, device=device)
    slot_labels = torch.full((batch, pad_size), -1, dtype=torch.long, device=device)
    slot_boxes = torch.full((batch, pad_size, 4), 0.5, device=device)
    target_index = torch.full((batch, pad_size), -1, dtype=torch.long, device=device)
    within_image = torch.cat([torch.arange(n) for n in counts]).to(device)
    slots = torch.cat([within_image + max_targets * c for c in range(copies)])
    rows = image_ids.repeat(copies)
    # Written even when there are no targets, so that the label embedding is always part of the
    # graph (with a zero gradient then), as DistributedDataParallel expects of every parameter.
    content[rows, slots] = label_enc(noised_labels)
    anchors[rows, slots] = inverse_sigmoid(noised_boxes)
    slot_labels[rows, slots] = noised_labels
    slot_boxes[rows, slots] = noised_boxes
    target_index[rows, slots] = within_image.repeat(copies)
    positive = (torch.arange(pad_size, device=device) % (2 * max_targets) < max_targets) if max_targets else \
        torch.zeros(0, dtype=torch.bool, device=device)

    return DenoisingQueries(content, anchors, denoising_attn_mask(pad_size, groups, num_queries, device),
                            pad_size, groups, max_targets, slot_labels, slot_boxes, target_index, positive)


def denoising_attn_mask(pad_size: int, groups: int, num_queries: int, device=None) -> torch.Tensor:
    """[pad+Q, pad+Q] bool mask, True = blocked: matching queries cannot see denoising queries;
    a denoising group sees only itself and the matching queries."""
    size = pad_size + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[pad_size:, :pad_size] = True
    group = pad_size // groups if groups else 0
    for g in range(groups):
        rows = slice(g * group, (g + 1) * group)
        mask[rows, :g * group] = True
        mask[rows, (g + 1) * group:pad_size] = True
    return mask
