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
    """content [B, pad_size, D] label embeddings; anchors_unsigmoid [B, pad_size, 4];
    attn_mask [pad_size + Q, pad_size + Q] bool, True where attention is blocked."""

    content: torch.Tensor
    anchors_unsigmoid: torch.Tensor
    attn_mask: torch.Tensor
    pad_size: int
    num_groups: int
    max_targets: int


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
    """Build the noised queries for a batch of targets (labels [n] int64, boxes [n, 4] cxcywh)."""
    device = label_enc.weight.device
    counts = [len(t["labels"]) for t in targets]
    batch, max_targets = len(targets), max(counts, default=0)
    groups = num_denoising_groups(dn_number, max_targets)
    pad_size = 2 * groups * max_targets
    dim = label_enc.weight.shape[1]

    labels = torch.cat([t["labels"] for t in targets]).to(device)
    boxes = torch.cat([t["boxes"] for t in targets]).to(device).float()
    image_ids = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(counts)]).to(device)
    total = len(labels)
    # Layout of the noised copies: for each group, all positives then all negatives.
    copies = 2 * groups
    noised_labels = labels.repeat(copies)
    noised_boxes = boxes.repeat(copies, 1)

    if label_noise_ratio > 0 and total:
        flip = torch.rand(noised_labels.shape, device=device, generator=generator) < label_noise_ratio * 0.5
        random_labels = torch.randint(0, num_classes, noised_labels.shape, device=device, generator=generator)
        noised_labels = torch.where(flip, random_labels, noised_labels)

    if box_noise_scale > 0 and total:
        half_wh = noised_boxes[:, 2:] / 2
        corners = torch.cat([noised_boxes[:, :2] - half_wh, noised_boxes[:, :2] + half_wh], -1)
        diff = torch.cat([half_wh, half_wh], -1)
        sign = torch.randint(0, 2, noised_boxes.shape, device=device, generator=generator).float() * 2 - 1
        magnitude = torch.rand(noised_boxes.shape, device=device, generator=generator)
        is_negative = (torch.arange(copies, device=device) % 2 == 1).repeat_interleave(total)
        magnitude = magnitude + is_negative[:, None].float()
        corners = (corners + sign * magnitude * diff * box_noise_scale).clamp(0.0, 1.0)
        noised_boxes = torch.cat([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], -1)

    content = torch.zeros(batch, pad_size, dim, device=device)
    anchors = torch.zeros(batch, pad_size, 4, device=device)
    within_image = torch.cat([torch.arange(n) for n in counts]).to(device)
    slots = torch.cat([within_image + max_targets * c for c in range(copies)])
    # Written even when there are no targets, so that the label embedding is always part of the
    # graph (with a zero gradient then), as DistributedDataParallel expects of every parameter.
    content[image_ids.repeat(copies), slots] = label_enc(noised_labels)
    anchors[image_ids.repeat(copies), slots] = inverse_sigmoid(noised_boxes)

    return DenoisingQueries(content, anchors, denoising_attn_mask(pad_size, groups, num_queries, device),
                            pad_size, groups, max_targets)


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
