"""Drawing on images. Pure functions: each takes an [H, W, 3] uint8 RGB array plus boxes or points
in that image's pixels and returns a new array; the input is never modified.

Boxes are xyxy pixel coordinates; points are (x, y) pixel coordinates; colours are RGB tuples.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]

# Distinct colours for categorical things (classes, feature levels, heads).
PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
)

# Anchors of a perceptually ordered ramp (viridis) for continuous values in [0, 1].
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


def palette_color(index: int) -> Color:
    return PALETTE[index % len(PALETTE)]


def colormap(values: np.ndarray) -> list[Color]:
    """Colours for values in [0, 1] (clipped) on the viridis ramp: dark purple = 0, yellow = 1."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(v).astype(int), len(_RAMP) - 2)
    t = (v - lo)[:, None]
    rgb = _RAMP[lo] * (1 - t) + _RAMP[lo + 1] * t
    return [tuple(int(c) for c in row) for row in rgb.round().astype(int)]


def line_width(shape: tuple[int, ...]) -> int:
    """A box outline width that stays visible on large images: 2 px up to 600 px, then grows."""
    return max(2, round(max(shape[:2]) / 300))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _font_size(shape: tuple[int, ...]) -> int:
    return max(10, round(max(shape[:2]) / 50))


def _rgba(color: Color, alpha: float) -> tuple[int, int, int, int]:
    return (*color, int(round(255 * min(max(alpha, 0.0), 1.0))))


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    colors: Sequence[Color],
    *,
    captions: Sequence[str] | None = None,
    widths: Sequence[int] | None = None,
    alphas: Sequence[float] | None = None,
) -> np.ndarray:
    """Outline boxes [N, 4] xyxy in `colors`, drawn in order (later boxes on top).

    captions: text drawn on a filled tag at each box's top-left corner (skipped when empty).
    widths: outline width per box (default `line_width`); alphas: outline opacity per box.
    """
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    default_width = line_width(image.shape)
    font = _font(_font_size(image.shape))
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x0, y0, x1, y1 = box.tolist()
        if not np.isfinite(box).all():
            continue
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        width = widths[i] if widths is not None else default_width
        alpha = alphas[i] if alphas is not None else 1.0
        draw.rectangle((x0, y0, x1, y1), outline=_rgba(colors[i], alpha), width=width)
        if captions is not None and captions[i]:
            _draw_tag(draw, font, (x0, y0), captions[i], colors[i], canvas.size)
    return np.asarray(canvas)


def _draw_tag(draw: ImageDraw.ImageDraw, font, anchor: tuple[float, float], text: str, color: Color,
              size: tuple[int, int]) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 6, bottom - top + 4
    x = min(max(anchor[0], 0), max(size[0] - tw, 0))
    y = anchor[1] - th if anchor[1] - th >= 0 else max(anchor[1], 0)
    draw.rectangle((x, y, x + tw, y + th), fill=_rgba(color, 1.0))
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 150 else (255, 255, 255)
    draw.text((x + 3 - left, y + 2 - top), text, fill=ink, font=font)


def point_style(weights: np.ndarray, *, min_radius: float, max_radius: float,
                min_alpha: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Radius and opacity per point, both growing linearly with weight / max(weights).

    The largest weight gets `max_radius` and full opacity; a zero weight gets `min_radius` and
    `min_alpha`.
    """
    w = np.clip(np.nan_to_num(np.asarray(weights, dtype=np.float64)), 0.0, None)
    rel = w / w.max() if w.size and w.max() > 0 else np.zeros_like(w)
    return min_radius + (max_radius - min_radius) * rel, min_alpha + (1.0 - min_alpha) * rel


def draw_points(
    image: np.ndarray,
    points: np.ndarray,
    colors: Sequence[Color],
    radii: Sequence[float],
    alphas: Sequence[float] | None = None,
) -> np.ndarray:
    """Filled discs at points [N, 2] (x, y), largest first so small ones stay visible, each with
    a thin dark rim. Points outside the image are clipped by the canvas."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    order = np.argsort(-np.asarray(radii, dtype=np.float64), kind="stable")
    for i in order.tolist():
        x, y = (float(c) for c in points[i])
        r = float(radii[i])
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        alpha = alphas[i] if alphas is not None else 1.0
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgba(colors[i], alpha),
                     outline=(0, 0, 0, int(160 * alpha)), width=1 if r >= 3 else 0)
    return np.asarray(canvas)


def draw_path(image: np.ndarray, points: np.ndarray, colors: Sequence[Color], *, width: int | None = None) -> np.ndarray:
    """Line segments joining consecutive points [T, 2], segment t in colors[t + 1], with a dot on
    each point."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    width = width or line_width(image.shape)
    pts = [tuple(float(c) for c in p) for p in np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    for t in range(1, len(pts)):
        draw.line((pts[t - 1], pts[t]), fill=_rgba(colors[t], 1.0), width=width)
    for t, (x, y) in enumerate(pts):
        r = width + 1
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgba(colors[t], 1.0), outline=(0, 0, 0, 200))
    return np.asarray(canvas)


def draw_legend(image: np.ndarray, entries: Sequence[tuple[Color, str]]) -> np.ndarray:
    """A key of coloured swatches and labels in the image's top-right corner."""
    if not entries:
        return image.copy()
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    font = _font(_font_size(image.shape))
    sizes = [draw.textbbox((0, 0), text, font=font) for _, text in entries]
    line_h = max(b[3] - b[1] for b in sizes) + 4
    text_w = max(b[2] - b[0] for b in sizes)
    swatch = line_h - 4
    w, h = text_w + swatch + 14, line_h * len(entries) + 6
    x0 = max(canvas.size[0] - w - 4, 0)
    y0 = 4
    draw.rectangle((x0, y0, x0 + w, y0 + h), fill=(255, 255, 255, 200), outline=(0, 0, 0, 160))
    for i, ((color, text), box) in enumerate(zip(entries, sizes)):
        y = y0 + 3 + i * line_h
        draw.rectangle((x0 + 4, y + 2, x0 + 4 + swatch, y + 2 + swatch), fill=_rgba(color, 1.0))
        draw.text((x0 + swatch + 10 - box[0], y + 2 - box[1]), text, fill=(0, 0, 0, 255), font=font)
    return np.asarray(canvas)


# Views are drawn with the image's longer side between these (see `display_canvas`).
DISPLAY_MIN_SIDE = 640
DISPLAY_MAX_SIDE = 1600


def display_canvas(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image to draw views on and its scale (drawn pixels per image pixel): small images are
    enlarged by a whole factor (pixels repeated, at most 4x) so that overlays stay legible, since
    browsers are not asked to enlarge them; large ones are reduced to DISPLAY_MAX_SIDE so that
    re-drawing stays fast. Coordinates given to the render functions must be multiplied by scale."""
    h, w = image.shape[:2]
    if max(h, w) > DISPLAY_MAX_SIDE:
        size = (max(1, round(w * DISPLAY_MAX_SIDE / max(h, w))), max(1, round(h * DISPLAY_MAX_SIDE / max(h, w))))
        canvas = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        return canvas, size[0] / w
    k = min(max(1, math.ceil(DISPLAY_MIN_SIDE / max(h, w))), 4)
    return (image.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else image), float(k)


def dim(image: np.ndarray, amount: float = 0.35) -> np.ndarray:
    """The image blended towards black by `amount`, so overlays stand out."""
    keep = int(round(256 * (1.0 - amount)))
    return ((image.astype(np.uint16) * keep + 128) >> 8).astype(np.uint8)


# -- explorer views ---------------------------------------------------------------------------------

def render_detections(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str], class_ids: Sequence[int],
                      *, selected: int | None = None) -> np.ndarray:
    """Detections [N, 4] xyxy coloured by class with captions; detection `selected` (an index into
    `boxes`) drawn thicker and on top, the others faded."""
    n = len(boxes)
    colors = [palette_color(int(c)) for c in class_ids]
    width = line_width(image.shape)
    order = [i for i in range(n) if i != selected] + ([selected] if selected is not None and 0 <= selected < n else [])
    faded = selected is not None and 0 <= selected < n
    return draw_boxes(
        image, np.asarray(boxes).reshape(-1, 4)[order], [colors[i] for i in order],
        captions=[captions[i] for i in order],
        widths=[2 * width if i == selected else width for i in order],
        alphas=[1.0 if (i == selected or not faded) else 0.55 for i in order])


def render_proposals(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, levels: np.ndarray,
                     final: np.ndarray, *, color_by: str = "score") -> np.ndarray:
    """Encoder proposals [N, 4] xyxy, coloured by score (viridis over the shown range) or by
    feature level; proposals that became final detections (`final` [N] bool) drawn thicker with a
    white halo just outside. Higher scores are drawn on top."""
    if color_by not in ("score", "level"):
        raise ValueError(f"color_by must be 'score' or 'level', got {color_by!r}")
    scores = np.asarray(scores, dtype=np.float64)
    final = np.asarray(final, dtype=bool)
    if color_by == "score":
        lo, hi = (scores.min(), scores.max()) if scores.size else (0.0, 1.0)
        colors = colormap((scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores))
        legend = [(colormap(np.array([1.0]))[0], f"score {hi:.2f}"), (colormap(np.array([0.0]))[0], f"score {lo:.2f}")]
    else:
        colors = [palette_color(int(level)) for level in levels]
        legend = [(palette_color(int(level)), f"level {int(level) + 1}") for level in sorted(set(np.asarray(levels).tolist()))]
    width = line_width(image.shape)
    order = np.lexsort((scores, final))  # plain proposals first, then by score; final ones last
    canvas = dim(image, 0.35)
    halo = [i for i in order if final[i]]
    outward = np.array([-width, -width, width, width], dtype=np.float64)
    canvas = draw_boxes(canvas, np.asarray(boxes, dtype=np.float64)[halo].reshape(-1, 4) + outward,
                        [(255, 255, 255)] * len(halo), widths=[width] * len(halo))
    canvas = draw_boxes(canvas, np.asarray(boxes)[order].reshape(-1, 4), [colors[i] for i in order],
                        widths=[width if final[i] else max(1, width // 2) for i in order],
                        alphas=[1.0 if final[i] else 0.7 for i in order])
    if final.any():
        legend.append(((255, 255, 255), "final detection"))
    return draw_legend(canvas, legend)


def render_sampling(image: np.ndarray, reference_box: np.ndarray, points: np.ndarray, weights: np.ndarray,
                    heads: Sequence[int], levels: Sequence[int], *, color_by: str = "level") -> np.ndarray:
    """One query's sampling points: reference box in white, points [M', L', P, 2] coloured by
    level or head, radius and opacity growing with attention weight [M', L', P]."""
    if color_by not in ("level", "head"):
        raise ValueError(f"color_by must be 'level' or 'head', got {color_by!r}")
    m, l, p = weights.shape
    head_idx, level_idx = np.meshgrid(np.asarray(heads), np.asarray(levels), indexing="ij")
    keys = (level_idx if color_by == "level" else head_idx)[:, :, None].repeat(p, axis=2).reshape(-1)
    colors = [palette_color(int(k)) for k in keys]
    side = max(image.shape[:2])
    radii, alphas = point_style(weights.reshape(-1), min_radius=max(1.5, side / 400), max_radius=max(4.0, side / 64))
    canvas = draw_points(dim(image, 0.45), points.reshape(-1, 2), colors, radii, alphas)
    canvas = draw_boxes(canvas, np.asarray(reference_box).reshape(1, 4), [(255, 255, 255)],
                        widths=[max(1, line_width(image.shape) // 2)])
    names = levels if color_by == "level" else heads
    return draw_legend(canvas, [(palette_color(int(k)), f"{color_by} {int(k) + 1}") for k in names])


def render_refinement(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A query's boxes through the decoder [T, 4] xyxy: the proposal (blue) to the final box
    (yellow), with the path of the box centres."""
    t = len(boxes)
    # The ramp's darkest end would vanish on the dimmed image: start a little way in.
    colors = colormap(np.linspace(0.2, 1.0, t) if t > 1 else np.ones(1))
    captions = ["proposal"] + [f"layer {k}" for k in range(1, t)]
    canvas = dim(image, 0.35)
    canvas = draw_boxes(canvas, boxes, colors, captions=[""] * t)
    centres = (np.asarray(boxes)[:, :2] + np.asarray(boxes)[:, 2:]) / 2
    canvas = draw_path(canvas, centres, colors)
    return draw_legend(canvas, list(zip(colors, captions)))
