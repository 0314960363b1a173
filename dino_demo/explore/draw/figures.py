"""The explorer's figures, drawn from pixel-space views (`explore.draw.data`) with the primitives of
`explore.draw.pixels`. Pure functions: each takes the [H, W, 3] uint8 canvas to draw on and arrays
in that canvas's pixels, and returns a new [H', W', 3] uint8 image; the input is never modified.

Every colour or size encoding has a key in a strip below the picture (`pixels.with_legend`),
so the picture's own pixels keep their coordinates (clicks map to them unchanged).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .pixels import (
    WHITE,
    Color,
    Legend,
    blend_cells,
    colormap,
    crop_zoom,
    dim,
    draw_boxes,
    draw_crosses,
    draw_path,
    draw_points,
    draw_segments,
    draw_title,
    line_width,
    main_points,
    palette_color,
    point_style,
    tile,
    with_legend,
    zoom_window,
)

FINAL_COLOR: Color = (253, 231, 37)     # the box after a layer (viridis' end)
REFERENCE_COLOR: Color = WHITE          # the reference box (or cell) attention starts from


def render_detections(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str], class_ids: Sequence[int],
                      *, selected: int | None = None) -> np.ndarray:
    """Detections [N, 4] xyxy (best first) coloured by class with captions that never cover each
    other (the best and the selected one placed first); detection `selected` (an index into
    `boxes`) drawn thicker and on top, the others faded."""
    n = len(boxes)
    colors = [palette_color(int(c)) for c in class_ids]
    width = line_width(image.shape)
    chosen = selected if selected is not None and 0 <= selected < n else None
    # The best on top: drawn last, after the weaker ones; the selected one above all.
    order = [i for i in range(n)[::-1] if i != chosen] + ([chosen] if chosen is not None else [])
    position = {i: k for k, i in enumerate(order)}
    priority = ([chosen] if chosen is not None else []) + [i for i in range(n) if i != chosen]
    return draw_boxes(
        image, np.asarray(boxes).reshape(-1, 4)[order], [colors[i] for i in order],
        captions=[captions[i] for i in order],
        widths=[2 * width if i == chosen else width for i in order],
        alphas=[1.0 if (i == chosen or chosen is None) else 0.55 for i in order],
        caption_order=[position[i] for i in priority])


@dataclass(frozen=True)
class ProposalHighlight:
    """The selected query on the proposals figure: its proposal `anchor_box` and `final_box` [4]
    xyxy (canvas pixels), the final box's class colour and a caption."""

    anchor_box: np.ndarray
    final_box: np.ndarray
    color: Color
    caption: str


def render_proposals(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, levels: np.ndarray,
                     final: np.ndarray, *, color_by: str = "score",
                     highlight: ProposalHighlight | None = None) -> np.ndarray:
    """Encoder proposals [N, 4] xyxy, coloured by score (viridis over the shown range) or by
    feature level; proposals that became final detections (`final` [N] bool) drawn thicker with a
    white halo just outside. Higher scores are drawn on top. `highlight`: the selected query's
    proposal (white, thick) and where it ended (its final box, joined centre to centre)."""
    if color_by not in ("score", "level"):
        raise ValueError(f"color_by must be 'score' or 'level', got {color_by!r}")
    scores = np.asarray(scores, dtype=np.float64)
    final = np.asarray(final, dtype=bool)
    if color_by == "score":
        lo, hi = (scores.min(), scores.max()) if scores.size else (0.0, 1.0)
        colors = colormap((scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores))
        legend = Legend(ramp=(f"encoder score {lo:.2f}", f"{hi:.2f}"))
    else:
        colors = [palette_color(int(level)) for level in levels]
        legend = Legend(swatches=tuple((palette_color(int(level)), f"level {int(level) + 1}")
                                       for level in sorted(set(np.asarray(levels).tolist()))))
    width = line_width(image.shape)
    order = np.lexsort((scores, final))  # plain proposals first, then by score; final ones last
    canvas = dim(image, 0.35)
    halo = [i for i in order if final[i]]
    outward = np.array([-width, -width, width, width], dtype=np.float64)
    canvas = draw_boxes(canvas, np.asarray(boxes, dtype=np.float64)[halo].reshape(-1, 4) + outward,
                        [WHITE] * len(halo), widths=[width] * len(halo))
    canvas = draw_boxes(canvas, np.asarray(boxes)[order].reshape(-1, 4), [colors[i] for i in order],
                        widths=[width if final[i] else max(1, width // 2) for i in order],
                        alphas=[1.0 if final[i] else 0.7 for i in order])
    notes = ["thick with a white halo: became a detection above the threshold"] if final.any() else []
    if highlight is not None:
        canvas = _draw_highlight(canvas, highlight, width)
        notes.append("selected query: its proposal (white) and where it ended")
    return with_legend(canvas, Legend(legend.swatches, legend.ramp, note="; ".join(notes)))


def _draw_highlight(canvas: np.ndarray, highlight: ProposalHighlight, width: int) -> np.ndarray:
    boxes = np.stack([highlight.anchor_box, highlight.final_box]).astype(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    canvas = draw_segments(canvas, centres[:1], centres[1:], [highlight.color], width=max(1, width // 2), alpha=1.0)
    return draw_boxes(canvas, boxes, [REFERENCE_COLOR, highlight.color], widths=[2 * width, 2 * width],
                      captions=["proposal", highlight.caption], caption_order=[1, 0])


@dataclass(frozen=True)
class PointStyle:
    """How points are drawn on a canvas of a given size: radii from `min_radius` (weight 0) to
    `max_radius` (the largest weight shown)."""

    min_radius: float
    max_radius: float

    @classmethod
    def for_canvas(cls, shape: tuple[int, ...]) -> "PointStyle":
        side = max(shape[:2])
        return cls(min_radius=max(2.5, side / 360), max_radius=max(6.0, side / 64))


def render_sampling(image: np.ndarray, reference_box: np.ndarray, points: np.ndarray, weights: np.ndarray,
                    heads: Sequence[int], levels: Sequence[int], *, color_by: str = "level",
                    reference_points: np.ndarray | None = None, offsets: bool = False, zoom: bool = False,
                    reference_name: str = "reference box") -> np.ndarray:
    """One query's sampling points: reference box in white, points [M', L', P, 2] coloured by
    level or head, radius and opacity growing with attention weight [M', L', P].

    reference_points: [L', 2] where each level's offsets start (drawn as a "+"); offsets: also
    draw each point's offset vector from it. zoom: show only the neighbourhood of the box and the
    points, enlarged to the canvas size.
    """
    if color_by not in ("level", "head"):
        raise ValueError(f"color_by must be 'level' or 'head', got {color_by!r}")
    m, l, p = weights.shape
    points = np.asarray(points, dtype=np.float64)
    reference_box = np.asarray(reference_box, dtype=np.float64).reshape(4)
    origins = None if reference_points is None else np.asarray(reference_points, dtype=np.float64).reshape(l, 2)
    canvas = dim(image, 0.45)
    if zoom:
        window = zoom_window(reference_box, main_points(points, weights, 0.5), canvas.shape, max_fraction=0.5)
        canvas, k = crop_zoom(canvas, window, max(image.shape[:2]))
        shift = np.array(window[:2], dtype=np.float64)
        points, reference_box = (points - shift) * k, (reference_box - np.tile(shift, 2)) * k
        origins = None if origins is None else (origins - shift) * k
    head_idx, level_idx = np.meshgrid(np.asarray(heads), np.asarray(levels), indexing="ij")
    keys = (level_idx if color_by == "level" else head_idx)[:, :, None].repeat(p, axis=2).reshape(-1)
    colors = [palette_color(int(key)) for key in keys]
    style = PointStyle.for_canvas(canvas.shape)
    radii, alphas = point_style(weights.reshape(-1), min_radius=style.min_radius, max_radius=style.max_radius)
    if offsets and origins is not None:
        starts = np.broadcast_to(origins[None, :, None], (m, l, p, 2)).reshape(-1, 2)
        canvas = draw_segments(canvas, starts, points.reshape(-1, 2), colors, width=1, alpha=0.8)
    canvas = draw_points(canvas, points.reshape(-1, 2), colors, radii, alphas)
    canvas = draw_boxes(canvas, reference_box.reshape(1, 4), [REFERENCE_COLOR],
                        widths=[max(1, line_width(canvas.shape) // 2)])
    if origins is not None:
        canvas = draw_crosses(canvas, origins, size=max(5.0, style.max_radius * 0.8))
    names = levels if color_by == "level" else heads
    top = float(np.max(weights)) if weights.size else 0.0
    legend = Legend(
        swatches=tuple((palette_color(int(k)), f"{color_by} {int(k) + 1}") for k in names),
        sizes=((style.max_radius, f"weight {top:.2f}"), (style.min_radius, "weight 0 (ring only)")),
        note=f"white: {reference_name}" + (", + where the offsets start" if origins is not None else "")
             + ("; lines: offset vectors" if offsets and origins is not None else "")
             + ("; zoomed to the neighbourhood" if zoom else ""))
    return with_legend(canvas, legend)


def render_refinement(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str] | None = None) -> np.ndarray:
    """A query's boxes through the decoder [T, 4] xyxy: the proposal (blue) to the final box
    (yellow), with the path of the box centres. Earlier stages are drawn wider and below later
    ones, so that boxes that have converged still show every stage's colour as nested bands;
    every stage is labelled (`captions`, default "proposal", "layer 1", ...), labels never
    covering each other."""
    t = len(boxes)
    # The ramp's darkest end would vanish on the dimmed image: start a little way in.
    colors = colormap(np.linspace(0.2, 1.0, t) if t > 1 else np.ones(1))
    names = list(captions) if captions is not None else ["proposal"] + [f"layer {k}" for k in range(1, t)]
    short = ["P"] + [str(k) for k in range(1, t)]
    base = max(1, line_width(image.shape) // 2)
    canvas = dim(image, 0.35)
    canvas = draw_boxes(canvas, boxes, colors, widths=[base * (t - k) for k in range(t)], captions=short,
                        caption_order=list(range(t))[::-1])
    centres = (np.asarray(boxes)[:, :2] + np.asarray(boxes)[:, 2:]) / 2
    canvas = draw_path(canvas, centres, colors, width=base)
    return with_legend(canvas, Legend(swatches=tuple((c, f"{s}: {n}") for c, s, n in zip(colors, short, names)),
                                      note="earlier stages drawn wider, underneath"))


@dataclass(frozen=True)
class LayerPanel:
    """One decoder layer of a query, in canvas pixels: `reference_box` [4] its input reference,
    `points` [M, L, P, 2] and `weights` [M, L, P] its sampling, `box` [4] its output box, `title`."""

    reference_box: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    box: np.ndarray
    title: str


def render_layer_grid(image: np.ndarray, panels: Sequence[LayerPanel], *, columns: int = 3,
                      panel_side: int = 520) -> np.ndarray:
    """Every decoder layer of one query at a glance: a panel per layer, all showing the same
    neighbourhood of the query, with the layer's reference box (white), its sampling points
    (coloured by level, size and opacity by weight) and the box after the layer (yellow)."""
    if not panels:
        raise ValueError("render_layer_grid needs at least one layer panel")
    boxes = np.concatenate([np.stack([p.reference_box, p.box]) for p in panels]).astype(np.float64)
    points = np.concatenate([main_points(p.points, p.weights) for p in panels])
    window = zoom_window(boxes, points, image.shape, margin=0.15)
    base = dim(image, 0.45)
    crop, k = crop_zoom(base, window, panel_side)
    shift = np.array(window[:2], dtype=np.float64)
    style = PointStyle.for_canvas(crop.shape)
    top = max(float(np.max(p.weights)) for p in panels)
    drawn = []
    for panel in panels:
        m, l, p = panel.weights.shape
        colors = [palette_color(level) for level in np.broadcast_to(np.arange(l)[None, :, None], (m, l, p)).reshape(-1)]
        radii, alphas = point_style(np.append(panel.weights.reshape(-1), top), min_radius=style.min_radius,
                                    max_radius=style.max_radius)
        canvas = draw_points(crop, ((panel.points - shift) * k).reshape(-1, 2), colors, radii[:-1], alphas[:-1])
        canvas = draw_boxes(canvas, np.stack([(panel.reference_box - np.tile(shift, 2)) * k,
                                              (panel.box - np.tile(shift, 2)) * k]),
                            [REFERENCE_COLOR, FINAL_COLOR], widths=[2, 2])
        drawn.append(draw_title(canvas, panel.title))
    levels = panels[0].weights.shape[1]
    figure = tile(drawn, columns)
    return with_legend(figure, Legend(
        swatches=tuple((palette_color(level), f"level {level + 1}") for level in range(levels))
        + ((REFERENCE_COLOR, "reference box (layer input)"), (FINAL_COLOR, "box after the layer")),
        sizes=((style.max_radius, f"weight {top:.2f}"), (style.min_radius, "weight 0"))))


def render_heatmaps(image: np.ndarray, grids: Sequence[np.ndarray], cell_sizes: Sequence[tuple[float, float]],
                    titles: Sequence[str], *, outline: np.ndarray | None = None, outline_name: str = "reference box",
                    columns: int = 2, panel_side: int = 800, note: str = "") -> np.ndarray:
    """One panel per feature level: the canvas with that level's attention grid ([rows, cols],
    each cell `cell_sizes` (w, h) canvas pixels) overlaid in viridis, scaled to the level's own
    maximum. `outline`: [4] xyxy box (canvas pixels) drawn on every panel for context; `note`:
    what the heatmaps show, under the key."""
    if not grids:
        raise ValueError("render_heatmaps needs at least one grid")
    height, width = image.shape[:2]
    f = min(1.0, panel_side / max(height, width))
    size = (max(1, round(width * f)), max(1, round(height * f)))
    base = dim(image if f == 1.0 else _resize(image, size), 0.3)
    panels = []
    for grid, (cell_w, cell_h), title in zip(grids, cell_sizes, titles):
        grid = np.asarray(grid, dtype=np.float64)
        rows, cols = grid.shape
        top = grid.max()
        cols_index = np.minimum(((np.arange(size[0]) + 0.5) / f / cell_w).astype(np.int64), cols - 1)
        rows_index = np.minimum(((np.arange(size[1]) + 0.5) / f / cell_h).astype(np.int64), rows - 1)
        panel = blend_cells(base, grid / top if top > 0 else grid, rows_index, cols_index)
        if outline is not None:
            panel = draw_boxes(panel, np.asarray(outline, dtype=np.float64).reshape(1, 4) * f, [REFERENCE_COLOR],
                               widths=[2])
        panels.append(draw_title(panel, title))
    return with_legend(tile(panels, columns), Legend(
        ramp=("attention 0", "the level's maximum"),
        note=(note + ": " if note else "") + "weights spread bilinearly onto each level's cells, as the attention "
             "reads them" + (f"; white: {outline_name}" if outline is not None else "")))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


REGION_COLOR: Color = (255, 64, 160)    # the region asked about (a drawn box or a ground truth)
PROPOSAL_COLOR: Color = (80, 160, 255)  # proposals near it


def render_region(image: np.ndarray, region: np.ndarray, query_boxes: np.ndarray, query_captions: Sequence[str],
                  proposal_boxes: np.ndarray, proposal_captions: Sequence[str], *, note: str = "") -> np.ndarray:
    """A region asked about (`region` [4] xyxy, magenta, thick), the final boxes of the queries
    nearest to it ([N, 4], yellow to dark by rank, the nearest on top) and the closest encoder
    proposals ([P, 4], blue, thin), each captioned."""
    width = line_width(image.shape)
    queries = np.asarray(query_boxes, dtype=np.float64).reshape(-1, 4)
    proposals = np.asarray(proposal_boxes, dtype=np.float64).reshape(-1, 4)
    ramp = colormap(np.linspace(1.0, 0.35, len(queries))) if len(queries) else []
    canvas = dim(image, 0.35)
    thin = [max(1, width // 2)] * len(proposals)
    canvas = draw_boxes(canvas, proposals, [PROPOSAL_COLOR] * len(proposals), widths=thin,
                        alphas=[0.8] * len(proposals))
    boxes = np.concatenate([proposals, queries[::-1], np.asarray(region, dtype=np.float64).reshape(1, 4)])
    captions = [*proposal_captions, *list(query_captions)[::-1], "region"]
    colors = [PROPOSAL_COLOR] * len(proposals) + list(ramp)[::-1] + [REGION_COLOR]
    widths = [max(1, width // 2)] * len(proposals) + [width] * len(queries) + [2 * width]
    canvas = draw_boxes(canvas, boxes, colors, captions=captions, widths=widths,
                        caption_order=list(range(len(boxes)))[::-1])
    swatches = ((REGION_COLOR, "region"),) + ((ramp[0], "final box of the nearest query"),) * bool(len(queries)) \
        + ((PROPOSAL_COLOR, "closest encoder proposals (decoder's first boxes)"),) * bool(len(proposals))
    return with_legend(canvas, Legend(swatches=swatches, note=note))
