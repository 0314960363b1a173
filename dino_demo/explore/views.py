"""Views of a stored `InferenceResult` for drawing: pixel-space numpy arrays, computed without
running the model again. Boxes are xyxy in the original image's pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .inference import InferenceResult


def _cxcywh_to_xyxy_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    cx, cy, w, h = boxes.double().unbind(-1)
    height, width = size
    xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return xyxy.numpy()


@dataclass(frozen=True)
class DetectionView:
    """Detections above a threshold, best first: boxes [N, 4] xyxy pixels, scores [N],
    labels [N] class ids, categories [N] COCO category ids, query_slots [N] the decoder query
    slot each came from, names [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    categories: np.ndarray
    query_slots: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)


def detection_view(result: InferenceResult, threshold: float, max_detections: int | None = None) -> DetectionView:
    kept = result.detections.above(threshold)
    n = len(kept) if max_detections is None else min(len(kept), max(int(max_detections), 0))
    labels = kept.labels[:n].numpy()
    return DetectionView(
        boxes=kept.boxes[:n].double().numpy(), scores=kept.scores[:n].double().numpy(), labels=labels,
        categories=np.array([result.category_ids[int(c)] for c in labels], dtype=np.int64),
        query_slots=kept.query_slot[:n].numpy(), names=tuple(result.label(int(c)) for c in labels))


@dataclass(frozen=True)
class ProposalView:
    """The encoder's top proposals, best first: boxes [N, 4] xyxy pixels (the decoder's initial
    anchors), scores [N] sigmoid of the best class logit, levels [N] feature level,
    query_slots [N] the decoder query slot each proposal seeded."""

    boxes: np.ndarray
    scores: np.ndarray
    levels: np.ndarray
    query_slots: np.ndarray


def proposal_view(result: InferenceResult, top_n: int) -> ProposalView:
    selection = result.internals.selection
    scores = selection.logits[0].max(-1).values.sigmoid().double()
    order = torch.argsort(scores, descending=True, stable=True)[: max(int(top_n), 0)]
    return ProposalView(
        boxes=_cxcywh_to_xyxy_pixels(selection.boxes[0, order], result.size), scores=scores[order].numpy(),
        levels=selection.levels[0, order].numpy(), query_slots=order.numpy())


@dataclass(frozen=True)
class SamplingView:
    """One query's cross-attention in one decoder layer.

    reference_box: [4] xyxy pixels, the layer's input reference box.
    points: [M, L, P, 2] (x, y) sampling locations in original pixels; weights: [M, L, P].
    Only the selected heads / levels are kept (`heads`, `levels` list which, in order).
    mass: [M_all, L_all] attention mass of every head on every level (each row sums to 1).
    """

    reference_box: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    heads: tuple[int, ...]
    levels: tuple[int, ...]
    mass: np.ndarray


def sampling_view(result: InferenceResult, query_slot: int, layer: int, head: int | None = None,
                  level: int | None = None) -> SamplingView:
    """Sampling points of query slot `query_slot` in decoder `layer` (0-based), for one head / level
    or all.

    Locations are (x, y) in [0, 1] of the padded feature maps: times the padded input size gives
    model-input pixels, which scale to the original image by original / input size.
    """
    out = result.internals
    m, l, _ = result.attention_shape
    _check_index("query slot", query_slot, result.num_queries)
    _check_index("layer", layer, result.num_layers)
    heads = tuple(range(m)) if head is None else (_check_index("head", head, m),)
    levels = tuple(range(l)) if level is None else (_check_index("level", level, l),)

    locations = out.sampling_locations[layer, 0, query_slot].double()        # [M, L, P, 2]
    weights = out.attention_weights[layer, 0, query_slot].double()            # [M, L, P]
    (pad_h, pad_w), (in_h, in_w), (h, w) = result.padded_size, result.input_size, result.size
    scale = torch.tensor([pad_w * w / in_w, pad_h * h / in_h], dtype=torch.float64)
    points = (locations * scale)[list(heads)][:, list(levels)]
    mass = weights.sum(-1)
    mass = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
    reference = _cxcywh_to_xyxy_pixels(out.references[layer, 0, query_slot], result.size)
    return SamplingView(reference_box=reference, points=points.numpy(),
                        weights=weights[list(heads)][:, list(levels)].numpy(), heads=heads, levels=levels,
                        mass=mass.numpy())


def refinement_view(result: InferenceResult, query_slot: int) -> np.ndarray:
    """[K + 1, 4] xyxy pixels: query slot `query_slot`'s proposal (the decoder's initial anchor), then its
    predicted box after each decoder layer (the last is the final box)."""
    _check_index("query slot", query_slot, result.num_queries)
    out = result.internals
    stages = torch.cat([out.references[0, 0, query_slot][None], out.boxes[:, 0, query_slot]], 0)
    return _cxcywh_to_xyxy_pixels(stages, result.size)


def detection_at(view: DetectionView, x: float, y: float) -> int | None:
    """Index in `view` of the smallest box containing (x, y), else of the box whose centre is
    nearest; None when there are no detections."""
    if len(view) == 0:
        return None
    b = view.boxes
    inside = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
    if inside.any():
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return int(np.flatnonzero(inside)[np.argmin(area[inside])])
    centres = (b[:, :2] + b[:, 2:]) / 2
    return int(np.argmin(((centres - (x, y)) ** 2).sum(-1)))




def _check_index(name: str, value: int, size: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 <= value < size:
        raise ValueError(f"{name} must be an integer in 0..{size - 1}, got {value}")
    return int(value)
