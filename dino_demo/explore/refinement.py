"""DINO's "look forward twice", made visible for one query of a stored result.

Decoder layer k starts from reference box r_k (detached: no gradient flows back through it into
the layers before) and predicts a delta. Two boxes come out of that delta:
- the box the loss sees, b_k = sigmoid(delta(norm(h_k)) + inverse_sigmoid(r_k)), where r_k is the
  previous layer's box *with* its gradient: layer k's loss also trains layer k - 1 (it looks
  forward twice);
- the next layer's reference r_{k+1} = sigmoid(delta(h_k) + inverse_sigmoid(r_k)), from the
  output before the decoder's final LayerNorm, then detached.
In the official code they differ only by that LayerNorm, so the two boxes are close but not equal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .draw.figures import FINAL_COLOR, REFERENCE_COLOR
from ..runtime.result import InferenceResult
from .draw.data import _check_index, _cxcywh_to_xyxy_pixels
from .draw.pixels import Color, Legend, crop_zoom, dim, draw_boxes, draw_title, tile, with_legend, zoom_window

NEXT_REFERENCE_COLOR: Color = (0, 200, 255)


@dataclass(frozen=True)
class LayerStep:
    """Decoder layer `layer` (0-based) of one query, boxes [4] xyxy original pixels:
    reference_in r_k (the detached reference the layer starts from), loss_box b_k (the box the
    loss sees, its gradient reaching layer k - 1 through r_k), next_reference r_{k+1} (the next
    layer's reference, detached); gap: largest coordinate difference of b_k and r_{k+1} in
    normalized units."""

    layer: int
    reference_in: np.ndarray
    loss_box: np.ndarray
    next_reference: np.ndarray
    gap: float


def look_forward_twice(result: InferenceResult, query_slot: int) -> list[LayerStep]:
    _check_index("query slot", query_slot, result.num_queries)
    out = result.internals
    refs, boxes = out.references[:, 0, query_slot].double(), out.boxes[:, 0, query_slot].double()
    steps = []
    for k in range(result.num_layers):
        steps.append(LayerStep(
            layer=k, reference_in=_cxcywh_to_xyxy_pixels(refs[k], result.size),
            loss_box=_cxcywh_to_xyxy_pixels(boxes[k], result.size),
            next_reference=_cxcywh_to_xyxy_pixels(refs[k + 1], result.size),
            gap=float((boxes[k] - refs[k + 1]).abs().max())))
    return steps


def render_look_forward_twice(canvas: np.ndarray, scale: float, steps: list[LayerStep], *, columns: int = 3,
                              panel_side: int = 420) -> np.ndarray:
    """A panel per decoder layer around the query: the reference it starts from (white), the box
    the loss sees (yellow) and the next layer's detached reference (cyan)."""
    if not steps:
        raise ValueError("render_look_forward_twice needs at least one layer")
    boxes = np.concatenate([np.stack([s.reference_in, s.loss_box, s.next_reference]) for s in steps]) * scale
    window = zoom_window(boxes, np.zeros((0, 2)), canvas.shape, margin=0.3)
    crop, k = crop_zoom(dim(canvas, 0.45), window, panel_side)
    shift = np.tile(np.array(window[:2], dtype=np.float64), 2)
    panels = []
    for s in steps:
        drawn = draw_boxes(crop, (np.stack([s.reference_in, s.next_reference, s.loss_box]) * scale - shift) * k,
                           [REFERENCE_COLOR, NEXT_REFERENCE_COLOR, FINAL_COLOR], widths=[2, 2, 2])
        panels.append(draw_title(drawn, f"layer {s.layer + 1}: |b - r'| = {s.gap:.1e}"))
    return with_legend(tile(panels, columns), Legend(
        swatches=((REFERENCE_COLOR, "r: reference the layer starts from (detached)"),
                  (FINAL_COLOR, "b: box the loss sees (delta on r, r keeping its gradient: trains the layer before too)"),
                  (NEXT_REFERENCE_COLOR, "r': next layer's reference (un-normalized output, detached)")),
        note="look forward twice: each layer's box refines the previous one; the next layer starts from r', "
             "the loss looks at b"))


def look_forward_rows(steps: list[LayerStep]) -> list[list]:
    """Table rows: layer, r, b, r' (xyxy pixels, rounded) and the b-r' gap."""
    def fmt(box):
        return ", ".join(f"{v:.1f}" for v in box)

    return [[s.layer + 1, fmt(s.reference_in), fmt(s.loss_box), fmt(s.next_reference), float(f"{s.gap:.2e}")]
            for s in steps]
