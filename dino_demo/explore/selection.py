"""DINO's mixed query selection, step by step, from a stored result (no model run).

1. The encoder's class head scores every token (`enc_outputs_class_unselected` in the official
   code); a token's score is its best class's probability: a map per feature level.
2. The top `num_queries` tokens by that score are picked (`topk_proposals`).
3. Each picked token has a fixed proposal (`output_proposals`): its cell's centre, 0.05 * 2**level
   wide and high; the encoder's box head moves it (`refpoint_embed_undetach`): that box, detached,
   is the decoder's first reference.
4. Mixed query selection: the decoder query of slot q takes its *position* from the picked token's
   box (image-dependent) and its *content* from the learned `tgt_embed[q]` (the same for every
   image), not from the token's features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .draw.figures import REFERENCE_COLOR, FINAL_COLOR
from ..runtime.result import InferenceResult
from .draw.data import QueryLineage, padded_to_pixels, query_lineage
from .draw.pixels import (
    WHITE,
    Color,
    Legend,
    blend_cells,
    crop_zoom,
    dim,
    draw_boxes,
    draw_crosses,
    draw_points,
    draw_title,
    line_width,
    tile,
    with_legend,
    zoom_window,
)

PICK_COLOR: Color = (255, 64, 160)
PROPOSAL_COLOR: Color = (88, 166, 255)


@dataclass(frozen=True)
class LevelScores:
    """One feature level: scores [rows, cols] the encoder's best-class probability of each token
    (NaN on padding), picks [n, 2] (row, col) of its tokens among the top-k, cell_size (w, h) of a
    cell in original pixels, and the level's share of the picks."""

    level: int
    scores: np.ndarray
    picks: np.ndarray
    cell_size: tuple[float, float]


@dataclass(frozen=True)
class SelectionStep:
    """The selection of one query slot: where its token lies (`lineage`), its cell [4] xyxy pixels,
    the proposal size rule, and the split of the decoder query into content and position."""

    lineage: QueryLineage
    cell_box: np.ndarray
    proposal_size: float
    content: str
    position: str


def level_scores(result: InferenceResult) -> list[LevelScores]:
    """The encoder's score map and top-k picks of every level."""
    out = result.internals
    probability = 1 / (1 + np.exp(-out.selection.max_logit[0].double().numpy()))
    probability[out.padding_mask[0].numpy()] = np.nan
    scale = padded_to_pixels(result).numpy()
    levels, cells = out.selection.levels[0].numpy(), out.selection.cells[0].numpy()
    maps = []
    for level, ((rows, cols), start) in enumerate(zip(out.spatial_shapes.tolist(), out.level_start_index.tolist())):
        maps.append(LevelScores(level=level, scores=probability[start:start + rows * cols].reshape(rows, cols),
                                picks=cells[levels == level].reshape(-1, 2),
                                cell_size=(float(scale[0] / cols), float(scale[1] / rows))))
    return maps


def selection_step(result: InferenceResult, query_slot: int) -> SelectionStep:
    lineage = query_lineage(result, query_slot)
    rows, cols = (int(v) for v in result.internals.spatial_shapes[lineage.level])
    scale = padded_to_pixels(result).numpy()
    w, h = scale[0] / cols, scale[1] / rows
    row, col = lineage.cell
    return SelectionStep(
        lineage=lineage, cell_box=np.array([col * w, row * h, (col + 1) * w, (row + 1) * h]),
        proposal_size=0.05 * 2 ** lineage.level,
        content=f"tgt_embed[{query_slot}]: learned, the same for every image",
        position=f"the encoder box of token {lineage.token} (level {lineage.level + 1}, cell {lineage.cell}), "
                 "detached: this image's")


def render_score_maps(canvas: np.ndarray, scale: float, maps: list[LevelScores], *,
                      step: SelectionStep | None = None, columns: int = 2, panel_side: int = 640) -> np.ndarray:
    """One panel per level: the encoder's token scores (viridis, 0 to the largest score of all
    levels), the top-k picks (pink dots) and, with `step`, the selected query's token (white +).
    `canvas` is the display image, `scale` its pixels per image pixel."""
    height, width = canvas.shape[:2]
    f = min(1.0, panel_side / max(height, width))
    size = (max(1, round(width * f)), max(1, round(height * f)))
    base = dim(np.asarray(_resize(canvas, size)), 0.3)
    top = max(float(np.nanmax(m.scores)) if np.isfinite(m.scores).any() else 0.0 for m in maps) or 1.0
    k = f * scale  # image pixels -> panel pixels
    panels = []
    for m in maps:
        rows, cols = m.scores.shape
        cell_w, cell_h = m.cell_size[0] * k, m.cell_size[1] * k
        col_of = np.minimum(((np.arange(size[0]) + 0.5) / cell_w).astype(np.int64), cols - 1)
        row_of = np.minimum(((np.arange(size[1]) + 0.5) / cell_h).astype(np.int64), rows - 1)
        panel = blend_cells(base, np.nan_to_num(m.scores / top, nan=0.0), row_of, col_of)
        if len(m.picks):
            centres = (m.picks[:, ::-1] + 0.5) * np.array([cell_w, cell_h])
            radius = max(1.5, min(min(cell_w, cell_h) / 5, 5.0))
            panel = draw_points(panel, centres, [PICK_COLOR] * len(centres), np.full(len(centres), radius),
                                np.full(len(centres), 0.6))
        if step is not None and step.lineage.level == m.level:
            row, col = step.lineage.cell
            panel = draw_crosses(panel, np.array([[(col + 0.5) * cell_w, (row + 0.5) * cell_h]]),
                                 size=max(6.0, cell_w))
        panels.append(draw_title(panel, f"level {m.level + 1}: {rows}x{cols} tokens, {len(m.picks)} picked"))
    return with_legend(tile(panels, columns), Legend(
        swatches=((PICK_COLOR, "among the top-k (a decoder query)"),) + (((WHITE, "the selected query's token"),)
                                                                           if step is not None else ()),
        ramp=("encoder score 0", f"{top:.2f} (best over all levels)"),
        note="score: the encoder class head's best-class probability of each token; padding cells stay dark"))


def render_selection_step(canvas: np.ndarray, scale: float, step: SelectionStep) -> np.ndarray:
    """The selected query's token cell (white), its fixed proposal (blue, 0.05 * 2**level of the
    image wide) and the box the encoder head made of it (yellow: the decoder's first reference),
    zoomed to their neighbourhood."""
    lineage = step.lineage
    boxes = np.stack([step.cell_box, lineage.proposal_box, lineage.anchor_box]) * scale
    window = zoom_window(boxes, np.zeros((0, 2)), canvas.shape, margin=0.8, min_side=96.0)
    crop, k = crop_zoom(dim(canvas, 0.45), window, max(canvas.shape[:2]))
    boxes = (boxes - np.tile(np.array(window[:2], dtype=np.float64), 2)) * k
    width = line_width(crop.shape)
    out = draw_boxes(crop, boxes, [REFERENCE_COLOR, PROPOSAL_COLOR, FINAL_COLOR],
                     widths=[width, width + 1, width + 1],
                     captions=["token cell", f"fixed proposal {step.proposal_size:g}", "encoder head box"])
    return with_legend(out, Legend(
        swatches=((REFERENCE_COLOR, f"cell of token {lineage.token} (level {lineage.level + 1})"),
                  (PROPOSAL_COLOR, f"fixed proposal: cell centre, 0.05·2^{lineage.level} = {step.proposal_size:g} "
                                   "of the image"),
                  (FINAL_COLOR, f"encoder head's box (score {lineage.encoder_score:.2f}, rank {lineage.rank + 1})")),
        note=f"decoder query {lineage.query_slot} = content {step.content} + position {step.position}"))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return image if (image.shape[1], image.shape[0]) == size else cv2.resize(image, size,
                                                                              interpolation=cv2.INTER_AREA)
