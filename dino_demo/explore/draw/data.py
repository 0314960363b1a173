"""Views of a stored `InferenceResult` for drawing: pixel-space numpy arrays, computed without
running the model again. Boxes are xyxy in the original image's pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...runtime.detections import DetectionView, detection_view  # noqa: F401 (detection_view: the first view)
from ...runtime.result import InferenceResult, TokenAttention
from ..encoder import cell_box


def _cxcywh_to_xyxy_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    cx, cy, w, h = boxes.double().unbind(-1)
    height, width = size
    xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return xyxy.numpy()


@dataclass(frozen=True)
class ProposalView:
    """The encoder's top proposals, best first: boxes [N, 4] xyxy pixels (the decoder's initial
    anchors), scores [N] sigmoid of the best class logit, levels [N] feature level,
    query_slots [N] the decoder query slot each proposal seeded."""

    boxes: np.ndarray
    scores: np.ndarray
    levels: np.ndarray
    query_slots: np.ndarray


def unavailable(result: InferenceResult, view: str) -> str | None:
    """One line saying why `view` ("proposals", "encoder", "token scores") does not apply to the
    model that made `result`, or None when it does (`InferenceResult.reason`)."""
    return result.reason(view)


def _require(result: InferenceResult, view: str) -> None:
    reason = unavailable(result, view)
    if reason:
        raise ValueError(reason)


def proposal_view(result: InferenceResult, top_n: int) -> ProposalView:
    _require(result, "proposals")
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
    reference_points: [L, 2] (x, y) pixels the offsets of each kept level start from (the
        reference box's centre).
    """

    reference_box: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    heads: tuple[int, ...]
    levels: tuple[int, ...]
    mass: np.ndarray
    reference_points: np.ndarray


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

    reference = out.references[layer, 0, query_slot].double()
    per_level = reference[:2] * out.valid_ratios[0].double()                   # [L, 2] as the decoder uses it
    return _attention_view(result, out.sampling_locations[layer, 0, query_slot], out.attention_weights[layer, 0, query_slot],
                           _cxcywh_to_xyxy_pixels(reference, result.size), per_level, heads, levels)


def _attention_view(result: InferenceResult, locations: torch.Tensor, weights: torch.Tensor, reference_box: np.ndarray,
                    reference_points: torch.Tensor, heads: tuple[int, ...], levels: tuple[int, ...]) -> SamplingView:
    """SamplingView of one query's locations [M, L, P, 2] and weights [M, L, P] (padded-map units)."""
    weights = weights.double()
    scale = padded_to_pixels(result)
    points = (locations.double() * scale)[list(heads)][:, list(levels)]
    mass = weights.sum(-1)
    mass = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
    return SamplingView(reference_box=np.asarray(reference_box, dtype=np.float64), points=points.numpy(),
                        weights=weights[list(heads)][:, list(levels)].numpy(), heads=heads, levels=levels,
                        mass=mass.numpy(), reference_points=(reference_points.double() * scale)[list(levels)].numpy())


def padded_to_pixels(result: InferenceResult) -> torch.Tensor:
    """[2] float64 (x, y) factors from [0, 1] of the padded feature maps to original pixels."""
    (pad_h, pad_w), (in_h, in_w), (h, w) = result.padded_size, result.input_size, result.size
    return torch.tensor([pad_w * w / in_w, pad_h * h / in_h], dtype=torch.float64)


def encoder_sampling_view(result: InferenceResult, attention: TokenAttention, layer: int, head: int | None = None,
                          level: int | None = None) -> SamplingView:
    """An encoder token's self-attention (`explore.encoder.TokenAttention`) in encoder `layer`
    (0-based) as a SamplingView; its reference box is the token's cell."""
    layers, m, l, _ = attention.attention_weights.shape
    _check_index("encoder layer", layer, layers)
    heads = tuple(range(m)) if head is None else (_check_index("head", head, m),)
    levels = tuple(range(l)) if level is None else (_check_index("level", level, l),)
    return _attention_view(result, attention.sampling_locations[layer], attention.attention_weights[layer],
                           np.array(cell_box(result, attention.token)), attention.reference_points, heads, levels)


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
    hits = detections_at(view, x, y)
    return hits[0] if hits else None


def _check_index(name: str, value: int, size: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 <= value < size:
        raise ValueError(f"{name} must be an integer in 0..{size - 1}, got {value}")
    return int(value)


# -- attention heatmaps ------------------------------------------------------------------------------

def splat(locations: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Weights [N] at locations [N, 2] ((x, y) in [0, 1] of a map of `shape` (rows, cols))
    spread bilinearly onto the map's cells: [rows, cols] float64. Each weight goes to the four
    cells the deformable-attention op reads for that location, in the op's proportions (cell
    centres at (i + 0.5) / size, as grid_sample with align_corners=False); the parts that fall
    outside the map are dropped, as the op reads zeros there."""
    rows, cols = shape
    locations = np.asarray(locations, dtype=np.float64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    finite = np.isfinite(locations).all(-1)  # a family's padding points (NaN, weight 0) are no points
    locations, weights = locations[finite], weights[finite]
    px, py = locations[:, 0] * cols - 0.5, locations[:, 1] * rows - 0.5
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = px - x0, py - y0
    grid = np.zeros((rows, cols), dtype=np.float64)
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        keep = (xi >= 0) & (xi < cols) & (yi >= 0) & (yi < rows) & np.isfinite(share)
        np.add.at(grid, (yi[keep], xi[keep]), (weights * share)[keep])
    return grid


@dataclass(frozen=True)
class HeatmapView:
    """Attention weights splatted onto each feature level's grid.

    grids: per kept level, [rows, cols] summed weights on that level's padded grid.
    cell_sizes: per kept level, (width, height) of one cell in original pixels.
    levels: which levels are kept (0-based); mass: [len(levels)] share of all the attention
    (summed over the heads kept) that lands on each kept level; queries: how many queries are summed.
    """

    grids: tuple[np.ndarray, ...]
    cell_sizes: tuple[tuple[float, float], ...]
    levels: tuple[int, ...]
    mass: np.ndarray
    queries: int


def heatmap_view(result: InferenceResult, locations: torch.Tensor, weights: torch.Tensor, head: int | None = None,
                 level: int | None = None) -> HeatmapView:
    """Heatmaps of queries' attention: locations [N, M, L, P, 2] and weights [N, M, L, P] in the
    model's units (a decoder layer's rows for N queries, or an encoder token's), summed over the
    queries, the points and all heads (or `head`), on every level (or `level`)."""
    n, m, l, _ = weights.shape
    heads = list(range(m)) if head is None else [_check_index("head", head, m)]
    levels = tuple(range(l)) if level is None else (_check_index("level", level, l),)
    out = result.internals
    scale = padded_to_pixels(result).numpy()
    loc = locations[:, heads].double().numpy()
    wgt = weights[:, heads].double().numpy()
    total = max(float(wgt.sum()), 1e-12)
    grids, cells, mass = [], [], []
    for lv in levels:
        rows, cols = (int(v) for v in out.spatial_shapes[lv])
        grids.append(splat(loc[:, :, lv].reshape(-1, 2), wgt[:, :, lv].reshape(-1), (rows, cols)))
        cells.append((float(scale[0] / cols), float(scale[1] / rows)))
        mass.append(float(wgt[:, :, lv].sum()) / total)
    return HeatmapView(grids=tuple(grids), cell_sizes=tuple(cells), levels=levels, mass=np.array(mass), queries=n)


def decoder_heatmap_view(result: InferenceResult, query_slots: list[int], layer: int, head: int | None = None,
                         level: int | None = None) -> HeatmapView:
    """Heatmaps of decoder `layer`'s cross-attention summed over `query_slots`."""
    _check_index("layer", layer, result.num_layers)
    slots = [_check_index("query slot", s, result.num_queries) for s in dict.fromkeys(query_slots)]
    out = result.internals
    return heatmap_view(result, out.sampling_locations[layer, 0, slots], out.attention_weights[layer, 0, slots],
                        head, level)


def encoder_heatmap_view(result: InferenceResult, attention: TokenAttention, layer: int, head: int | None = None,
                         level: int | None = None) -> HeatmapView:
    """Heatmaps of an encoder token's self-attention in encoder `layer`."""
    _check_index("encoder layer", layer, attention.attention_weights.shape[0])
    return heatmap_view(result, attention.sampling_locations[layer][None], attention.attention_weights[layer][None],
                        head, level)


# -- per-layer predictions -------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerScores:
    """A query's class prediction after each decoder layer: labels [K] the best class, scores [K]
    its probability, final_label the best class after the last layer and final_scores [K] that
    class's probability after each layer."""

    labels: np.ndarray
    scores: np.ndarray
    final_label: int
    final_scores: np.ndarray


def layer_scores(result: InferenceResult, query_slot: int) -> LayerScores:
    _check_index("query slot", query_slot, result.num_queries)
    probabilities = result.internals.logits[:, 0, query_slot].double().sigmoid()   # [K, C]
    scores, labels = probabilities.max(-1)
    final = int(labels[-1])
    return LayerScores(labels=labels.numpy(), scores=scores.numpy(), final_label=final,
                       final_scores=probabilities[:, final].numpy())


# -- from encoder proposal to detection ----------------------------------------------------------------

@dataclass(frozen=True)
class QueryLineage:
    """Where a decoder query came from and where it ended.

    query_slot; token: the encoder token that seeded it (index, level, (row, col) cell);
    proposal_box: [4] xyxy pixels, the token's fixed proposal (its cell, 0.05 * 2**level wide);
    anchor_box: [4] xyxy pixels, the proposal after the encoder's box head (the decoder's first
    reference); encoder_score / encoder_label: best encoder class probability and its class;
    rank: 0-based rank of that score among the selected queries (of `num_queries`);
    final_box: [4] xyxy pixels after the last decoder layer; final_score / final_label: its best
    class; detection_ranks: 0-based positions of this slot's post-processed detections (all
    classes) among the top `num_select`, best first (empty: none).
    """

    query_slot: int
    token: int
    level: int
    cell: tuple[int, int]
    proposal_box: np.ndarray
    anchor_box: np.ndarray
    encoder_score: float
    encoder_label: int
    rank: int
    num_queries: int
    final_box: np.ndarray
    final_score: float
    final_label: int
    detection_ranks: tuple[int, ...]


def query_lineage(result: InferenceResult, query_slot: int) -> QueryLineage:
    _require(result, "proposals")
    _check_index("query slot", query_slot, result.num_queries)
    out = result.internals
    selection = out.selection
    encoder_probabilities = selection.logits[0].double().sigmoid()                   # [Q, C]
    best, labels = encoder_probabilities.max(-1)
    score = float(best[query_slot])
    rank = int((best > score).sum()) + int((best[:query_slot] == score).sum())
    final = out.logits[-1, 0, query_slot].double().sigmoid()
    return QueryLineage(
        query_slot=query_slot, token=int(selection.topk_indices[0, query_slot]),
        level=int(selection.levels[0, query_slot]), cell=tuple(int(v) for v in selection.cells[0, query_slot]),
        proposal_box=_cxcywh_to_xyxy_pixels(selection.proposals[0, query_slot], result.size),
        anchor_box=_cxcywh_to_xyxy_pixels(selection.boxes[0, query_slot], result.size),
        encoder_score=score, encoder_label=int(labels[query_slot]), rank=rank, num_queries=result.num_queries,
        final_box=_cxcywh_to_xyxy_pixels(out.boxes[-1, 0, query_slot], result.size),
        final_score=float(final.max()), final_label=int(final.argmax()),
        detection_ranks=tuple(int(i) for i in torch.nonzero(result.detections.query_slot == query_slot).flatten()))


def detections_at(view: DetectionView, x: float, y: float) -> list[int]:
    """Indices in `view` of every box containing (x, y), smallest first (the nearest box by
    centre when none contains it; empty when there are no detections)."""
    return boxes_at(view.boxes, x, y)


def boxes_at(boxes: np.ndarray, x: float, y: float) -> list[int]:
    """Indices of boxes [N, 4] xyxy containing (x, y), smallest first; else [the box whose centre
    is nearest]; [] for no boxes."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(b):
        return []
    inside = np.flatnonzero((b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3]))
    if inside.size:
        area = (b[inside, 2] - b[inside, 0]) * (b[inside, 3] - b[inside, 1])
        return [int(i) for i in inside[np.argsort(area, kind="stable")]]
    centres = (b[:, :2] + b[:, 2:]) / 2
    return [int(np.argmin(((centres - (x, y)) ** 2).sum(-1)))]
