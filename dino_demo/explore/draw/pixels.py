"""Drawing primitives. Pure functions: each takes an [H, W, 3] uint8 RGB array plus boxes or points
in that image's pixels and returns a new array; the input is never modified.

Boxes are xyxy pixel coordinates and points (x, y) pixel coordinates, both continuous: pixel
(i, j) covers [j, j + 1) x [i, i + 1). Colours are RGB tuples.

What draws with what was measured (`benchmarks/drawing.py`, `benchmarks/RESULTS.md`): boxes with
per-box opacity and all text with PIL (faster for hundreds of translucent boxes; FreeType text);
points, sectors and thin lines with OpenCV (anti-aliased and faster than PIL's aliased discs).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]

# Categorical colours (classes, feature levels, heads) that people with any common colour-vision
# deficiency can tell apart: Okabe & Ito's set (its black swapped for a light grey, which shows on
# dimmed images), then a few of Paul Tol's "muted" colours for the rare ninth and later category.
PALETTE: tuple[Color, ...] = (
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
    (240, 228, 66), (200, 200, 200), (136, 34, 85), (68, 170, 153), (153, 153, 51), (51, 34, 136),
)
WHITE: Color = (255, 255, 255)

# Anchors of a perceptually ordered ramp (viridis) for continuous values in [0, 1].
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)
# OpenCV draws with 4 fractional bits (sub-pixel positions).
_SHIFT = 4
_ONE = 1 << _SHIFT


def palette_color(index: int) -> Color:
    return PALETTE[index % len(PALETTE)]


def colormap(values: np.ndarray) -> list[Color]:
    """Colours for values in [0, 1] (clipped) on the viridis ramp: dark purple = 0, yellow = 1."""
    return [tuple(int(c) for c in row) for row in colormap_array(values)]


def colormap_array(values: np.ndarray) -> np.ndarray:
    """Viridis colours of values in [0, 1] (clipped) as a uint8 array of shape values.shape + (3,)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(v).astype(int), len(_RAMP) - 2)
    t = (v - lo)[..., None]
    return (_RAMP[lo] * (1 - t) + _RAMP[lo + 1] * t).round().astype(np.uint8)


def line_width(shape: tuple[int, ...]) -> int:
    """A box outline width that stays visible on large images: 2 px up to 600 px, then grows."""
    return max(2, round(max(shape[:2]) / 300))


def font_size(shape: tuple[int, ...]) -> int:
    """Text size for an image of this shape: about 1/50 of its longer side, at least 12 px."""
    return max(12, round(max(shape[:2]) / 50))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _rgba(color: Color, alpha: float) -> tuple[int, int, int, int]:
    return (*color, int(round(255 * min(max(alpha, 0.0), 1.0))))


def _ink(color: Color) -> Color:
    """Black or white, whichever reads on `color`."""
    return (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 150 else WHITE


# -- labels -----------------------------------------------------------------------------------------

def place_labels(boxes: np.ndarray, sizes: Sequence[tuple[float, float]], bounds: tuple[int, int]
                 ) -> list[tuple[float, float, float, float]]:
    """Where to put each box's label so that no two labels overlap: [N] xyxy rectangles.

    boxes: [N, 4] xyxy, in priority order (the first gets the best place); sizes: (w, h) of each
    label; bounds: (width, height) of the image. Each label goes to the first free spot among:
    above the box's top-left corner, inside it, below the box, inside its bottom; then the same at
    the right edge; else the nearest free spot up or down the image from the first. Only when the
    image has no free row left do labels overlap.
    """
    width, height = bounds
    placed: list[tuple[float, float, float, float]] = []

    def clamp(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        x = min(max(x, 0.0), max(width - w, 0.0))
        y = min(max(y, 0.0), max(height - h, 0.0))
        return (x, y, x + w, y + h)

    def free(rect) -> bool:
        return all(rect[2] <= p[0] or p[2] <= rect[0] or rect[3] <= p[1] or p[3] <= rect[1] for p in placed)

    for box, (w, h) in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), sizes):
        x0, y0, x1, y1 = (float(v) for v in box)
        spots = [clamp(x, y, w, h) for x, y in ((x0, y0 - h), (x0, y0), (x0, y1), (x0, y1 - h),
                                                  (x1 - w, y0 - h), (x1 - w, y0), (x1 - w, y1), (x1 - w, y1 - h))]
        choice = next((s for s in spots if free(s)), None)
        if choice is None:
            first = spots[0]
            steps = int(height // max(h, 1.0)) + 1
            sliding = (clamp(first[0], first[1] + sign * k * h, w, h) for k in range(1, steps + 1) for sign in (1, -1))
            choice = next((s for s in sliding if free(s)), first)
        placed.append(choice)
    return placed


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    colors: Sequence[Color],
    *,
    captions: Sequence[str] | None = None,
    widths: Sequence[int] | None = None,
    alphas: Sequence[float] | None = None,
    caption_order: Sequence[int] | None = None,
) -> np.ndarray:
    """Outline boxes [N, 4] xyxy in `colors`, drawn in order (later boxes on top).

    captions: text on a filled tag near each box (empty ones skipped), drawn after every box and
        never over another caption (`place_labels`); `caption_order` lists box indices by priority
        (default: the last drawn first), the first getting the best place. A caption that had to
        move away from its box is tied to the box's corner by a thin line.
    widths: outline width per box (default `line_width`); alphas: outline opacity per box.
    """
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    default_width = line_width(image.shape)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ordered = np.stack([np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3]),
                        np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3])], -1)
    finite = np.isfinite(ordered).all(-1)
    for i, (x0, y0, x1, y1) in enumerate(ordered.tolist()):
        if finite[i]:
            width = widths[i] if widths is not None else default_width
            alpha = alphas[i] if alphas is not None else 1.0
            draw.rectangle((x0, y0, x1, y1), outline=_rgba(colors[i], alpha), width=width)
    if captions is not None:
        order = list(caption_order) if caption_order is not None else list(range(len(ordered)))[::-1]
        order = [i for i in order if finite[i] and captions[i]]
        _draw_captions(draw, ordered[order], [captions[i] for i in order], [colors[i] for i in order],
                       _font(font_size(image.shape)), canvas.size)
    return np.asarray(canvas)


def _draw_captions(draw: ImageDraw.ImageDraw, boxes: np.ndarray, texts: list[str], colors: list[Color], font,
                   size: tuple[int, int]) -> None:
    """Tags for `boxes` [N, 4] (in priority order), placed with `place_labels`."""
    extents = [draw.textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(r - l + 6, b - t + 4) for l, t, r, b in extents]
    spots = place_labels(boxes, sizes, size)
    for (x0, y0, _, _), (l, t, _, _), (w, h), text, color, box in reversed(
            list(zip(spots, extents, sizes, texts, colors, boxes))):
        corner = (float(box[0]), float(box[1]))
        if abs(x0 - corner[0]) > w or abs(y0 + h - corner[1]) > 2 * h:  # moved away: tie it to its box
            ty = y0 + h if y0 + h <= corner[1] else y0
            draw.line(((x0, ty), corner), fill=_rgba(color, 0.9), width=1)
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=_rgba(color, 1.0))
        draw.text((x0 + 3 - l, y0 + 2 - t), text, fill=_ink(color), font=font)


# -- points and lines (OpenCV, anti-aliased) -------------------------------------------------------

def point_style(weights: np.ndarray, *, min_radius: float, max_radius: float,
                min_alpha: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Radius and fill opacity per point, both growing linearly with weight / max(weights).

    The largest weight gets `max_radius` and full opacity; a zero weight gets `min_radius` and
    `min_alpha`.
    """
    w = np.clip(np.nan_to_num(np.asarray(weights, dtype=np.float64)), 0.0, None)
    rel = w / w.max() if w.size and w.max() > 0 else np.zeros_like(w)
    return min_radius + (max_radius - min_radius) * rel, min_alpha + (1.0 - min_alpha) * rel


def _fixed(value: float) -> int:
    return int(round(value * _ONE))


def coincident_groups(points: np.ndarray, tolerance: float) -> np.ndarray:
    """[N] group id per point: points closer than `tolerance` to each other (transitively) share
    an id."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(points)
    group = np.arange(n)
    if n < 2:
        return group
    close = np.linalg.norm(points[:, None] - points[None], axis=-1) < tolerance
    for i in range(n):
        for j in np.flatnonzero(close[i, i + 1:]) + i + 1:
            a, b = group[i], group[j]
            if a != b:
                group[group == max(a, b)] = min(a, b)
    return group


def draw_points(
    image: np.ndarray,
    points: np.ndarray,
    colors: Sequence[Color],
    radii: Sequence[float],
    alphas: Sequence[float] | None = None,
) -> np.ndarray:
    """Anti-aliased discs at points [N, 2] (x, y), filled with opacity `alphas` (default 1) and
    ringed in their own colour at full opacity, so that faint (low-weight) points still show.

    Larger discs are drawn first so smaller ones stay visible on top. Points of different colours
    that coincide (closer than a third of the smaller radius) are drawn as sectors of one disc,
    one sector each, so that every one of them shows. Points outside the image are clipped.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    alphas = np.ones(len(points)) if alphas is None else np.asarray(alphas, dtype=np.float64).reshape(-1)
    finite = np.isfinite(points).all(-1) & np.isfinite(radii)
    groups = coincident_groups(np.where(finite[:, None], points, 1e12),
                               max(1.0, float(radii[finite].min(initial=3.0)) / 3))
    sector = np.zeros(len(points), dtype=int)
    members = np.zeros(len(points), dtype=int)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len({colors[i] for i in idx}) > 1:
            sector[idx] = np.arange(len(idx))
            members[idx] = len(idx)
    for i in np.argsort(-radii, kind="stable").tolist():
        if finite[i]:
            _disc(out, points[i], radii[i], colors[i], alphas[i], sector[i], members[i])
    return out


def _disc(out: np.ndarray, point: np.ndarray, radius: float, color: Color, alpha: float, sector: int,
          sectors: int) -> None:
    """One disc (or its `sector`-th of `sectors` sectors) blended into `out` in place."""
    h, w = out.shape[:2]
    x, y = float(point[0]) - 0.5, float(point[1]) - 0.5  # OpenCV measures from pixel centres
    r = max(float(radius), 0.5)
    x0, y0 = max(int(math.floor(x - r - 2)), 0), max(int(math.floor(y - r - 2)), 0)
    x1, y1 = min(int(math.ceil(x + r + 3)), w), min(int(math.ceil(y + r + 3)), h)
    if x0 >= x1 or y0 >= y1:
        return
    roi = out[y0:y1, x0:x1]
    centre, axes = (_fixed(x - x0), _fixed(y - y0)), (_fixed(r), _fixed(r))
    start, stop = (360.0 * sector / sectors - 90, 360.0 * (sector + 1) / sectors - 90) if sectors else (0.0, 360.0)
    fill = roi.copy()
    cv2.ellipse(fill, centre, axes, 0.0, start, stop, color, -1, cv2.LINE_AA, _SHIFT)
    a = min(max(float(alpha), 0.0), 1.0)
    cv2.addWeighted(fill, a, roi, 1.0 - a, 0.0, dst=roi)
    if a < 1.0:  # the ring, so that a faint fill still shows where the point is
        cv2.ellipse(roi, centre, axes, 0.0, start, stop, color, 1, cv2.LINE_AA, _SHIFT)


def draw_segments(image: np.ndarray, starts: np.ndarray, ends: np.ndarray, colors: Sequence[Color], *,
                  width: int = 1, alpha: float = 0.8) -> np.ndarray:
    """Anti-aliased line segments from starts [N, 2] to ends [N, 2] (x, y)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    layer = out.copy()
    for (sx, sy), (ex, ey), color in zip(np.asarray(starts, float).reshape(-1, 2), np.asarray(ends, float).reshape(-1, 2),
                                         colors):
        if np.isfinite([sx, sy, ex, ey]).all():
            cv2.line(layer, (_fixed(sx - 0.5), _fixed(sy - 0.5)), (_fixed(ex - 0.5), _fixed(ey - 0.5)), color, width,
                     cv2.LINE_AA, _SHIFT)
    return cv2.addWeighted(layer, alpha, out, 1.0 - alpha, 0.0)


def draw_crosses(image: np.ndarray, points: np.ndarray, color: Color = WHITE, *, size: float = 6.0) -> np.ndarray:
    """A "+" of half-length `size` at each point [N, 2] (x, y), with a dark outline."""
    out = np.array(image, dtype=np.uint8, copy=True)
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        if not np.isfinite([x, y]).all():
            continue
        for ink, thickness in (((0, 0, 0), 3), (color, 1)):
            for dx, dy in ((size, 0), (0, size)):
                cv2.line(out, (_fixed(x - 0.5 - dx), _fixed(y - 0.5 - dy)), (_fixed(x - 0.5 + dx), _fixed(y - 0.5 + dy)),
                         ink, thickness, cv2.LINE_AA, _SHIFT)
    return out


def draw_path(image: np.ndarray, points: np.ndarray, colors: Sequence[Color], *, width: int | None = None) -> np.ndarray:
    """Line segments joining consecutive points [T, 2], segment t in colors[t + 1], with a dot on
    each point."""
    width = width or line_width(image.shape)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.array(image, dtype=np.uint8, copy=True)
    for t in range(1, len(pts)):
        out = draw_segments(out, pts[t - 1:t], pts[t:t + 1], [colors[t]], width=width, alpha=1.0)
    return draw_points(out, pts, list(colors[:len(pts)]), np.full(len(pts), width + 1.5))


# -- legends ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Legend:
    """A key for every colour and size encoding of a figure, drawn in a strip below it.

    swatches: (colour, text) per category; ramp: (low text, high text) of the viridis ramp;
    sizes: (radius in figure pixels, text) of sample discs; note: a last line of plain text.
    """

    swatches: tuple[tuple[Color, str], ...] = ()
    ramp: tuple[str, str] | None = None
    sizes: tuple[tuple[float, str], ...] = ()
    note: str = ""


def with_legend(image: np.ndarray, legend: Legend) -> np.ndarray:
    """`image` with `legend` in a white strip below it (never over the content): the image's own
    pixels keep their coordinates. Items flow left to right and wrap."""
    height, width = image.shape[:2]
    font = _font(font_size(image.shape))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(font.size * 1.5)
    pad = max(4, line_h // 4)
    items: list[tuple[int, object]] = []  # (width, what)

    def text_w(text: str) -> int:
        left, _, right, _ = probe.textbbox((0, 0), text, font=font)
        return right - left

    for color, text in legend.swatches:
        items.append((line_h + text_w(text) + pad, ("swatch", color, text)))
    if legend.ramp is not None:
        low, high = legend.ramp
        bar = 5 * line_h
        items.append((text_w(low) + bar + text_w(high) + 3 * pad, ("ramp", low, high, bar)))
    for radius, text in legend.sizes:
        side = max(line_h, int(2 * radius + 4))
        items.append((side + text_w(text) + pad, ("size", radius, text, side)))
    rows: list[list[tuple[int, object]]] = [[]]
    used = pad
    for item in items:
        if rows[-1] and used + item[0] + 2 * pad > width:
            rows.append([])
            used = pad
        rows[-1].append(item)
        used += item[0] + 2 * pad
    row_heights = [max([line_h] + [it[1][3] for it in row if it[1][0] == "size"]) for row in rows if row]
    note_lines = _wrap(legend.note, font, width - 2 * pad) if legend.note else []
    note_rows = len(note_lines)
    strip_h = sum(row_heights) + note_rows * line_h + (len(row_heights) + note_rows + 1) * pad
    if not items and not legend.note:
        return image.copy()
    strip = Image.new("RGB", (width, strip_h), WHITE)
    draw = ImageDraw.Draw(strip)
    y = pad
    for row, row_h in zip([r for r in rows if r], row_heights):
        x = pad
        for item_w, what in row:
            _legend_item(strip, draw, font, what, x, y, row_h, line_h, pad)
            x += item_w + 2 * pad
        y += row_h + pad
    for line in note_lines:
        draw.text((pad, y), line, fill=(40, 40, 40), font=font)
        y += line_h
    return np.concatenate([np.asarray(image, dtype=np.uint8), np.asarray(strip)], 0)


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` broken into lines at spaces, each at most `width` pixels wide where possible."""
    lines: list[str] = []
    used = 0.0
    space = font.getlength(" ")
    for word in text.split(" "):
        length = font.getlength(word)
        if lines and used + space + length <= width:
            lines[-1] += " " + word
            used += space + length
        else:
            lines.append(word)
            used = length
    return lines


def _legend_item(strip: Image.Image, draw: ImageDraw.ImageDraw, font, what, x: int, y: int, row_h: int,
                 line_h: int, pad: int) -> None:
    kind = what[0]
    mid = y + row_h / 2
    ink = (20, 20, 20)
    if kind == "swatch":
        _, color, text = what
        s = line_h - 2 * (line_h // 6)
        draw.rectangle((x, mid - s / 2, x + s, mid + s / 2), fill=color, outline=(90, 90, 90))
        draw.text((x + line_h, mid), text, fill=ink, font=font, anchor="lm")
    elif kind == "ramp":
        _, low, high, bar = what
        draw.text((x, mid), low, fill=ink, font=font, anchor="lm")
        left = x + int(draw.textlength(low, font=font)) + pad
        ramp = colormap_array(np.linspace(0.0, 1.0, bar))[None].repeat(line_h // 2, 0)
        strip.paste(Image.fromarray(ramp), (left, int(mid - line_h // 4)))
        draw.text((left + bar + pad, mid), high, fill=ink, font=font, anchor="lm")
    else:
        _, radius, text, side = what
        draw.ellipse((x + side / 2 - radius, mid - radius, x + side / 2 + radius, mid + radius),
                     fill=(150, 150, 150), outline=(60, 60, 60))
        draw.text((x + side + pad // 2, mid), text, fill=ink, font=font, anchor="lm")


def draw_title(image: np.ndarray, text: str, *, color: Color = WHITE) -> np.ndarray:
    """`image` with `text` on a dark band across its top (for the panels of a figure)."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    font = _font(max(12, round(image.shape[1] / 28)))
    _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
    band = bottom - top + 8
    draw.rectangle((0, 0, image.shape[1], band), fill=(0, 0, 0, 170))
    draw.text((6, 4 - top), text, fill=color, font=font)
    return np.asarray(canvas)


# -- canvases -------------------------------------------------------------------------------------------

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


def main_points(points: np.ndarray, weights: np.ndarray, share: float = 0.8) -> np.ndarray:
    """The points [N, 2] that hold the first `share` of the total weight [N], heaviest first
    (at least one): what a zoomed view must keep in frame."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    weights = np.nan_to_num(np.asarray(weights, dtype=np.float64).reshape(-1))
    if not len(points):
        return points
    order = np.argsort(-weights, kind="stable")
    cumulative = np.cumsum(weights[order]) / max(float(weights.sum()), 1e-12)
    return points[order[:max(1, int(np.searchsorted(cumulative, share)) + 1)]]


def zoom_window(boxes: np.ndarray, points: np.ndarray, shape: tuple[int, ...], *, margin: float = 0.25,
                min_side: float = 48.0, max_fraction: float = 1.0) -> tuple[int, int, int, int]:
    """xyxy integer window of an image of `shape` around boxes [N, 4] and points [M, 2] (e.g.
    `main_points`), grown by `margin` of its size on each side, at least `min_side` px and at
    most `max_fraction` of the image's sides (centred on the boxes and points), with the image's
    aspect ratio (so that the zoomed view fills the same frame), clipped to the image."""
    height, width = shape[:2]
    coords = np.concatenate([np.asarray(boxes, float).reshape(-1, 2), np.asarray(points, float).reshape(-1, 2)])
    coords = coords[np.isfinite(coords).all(-1)]
    if not len(coords):
        return 0, 0, width, height
    (x0, y0), (x1, y1) = coords.min(0), coords.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = max(x1 - x0, 1.0) * (1 + 2 * margin), max(y1 - y0, 1.0) * (1 + 2 * margin)
    w, h = max(w, h * width / height, min_side), max(h, w * height / width, min_side)
    w, h = min(w, width * max_fraction), min(h, height * max_fraction)
    w, h = min(w, h * width / height), min(h, w * height / width)
    left = int(math.floor(min(max(cx - w / 2, 0), width - w)))
    top = int(math.floor(min(max(cy - h / 2, 0), height - h)))
    return left, top, min(int(math.ceil(left + w)), width), min(int(math.ceil(top + h)), height)


def crop_zoom(image: np.ndarray, window: tuple[int, int, int, int], side: int) -> tuple[np.ndarray, float]:
    """The `window` (xyxy) of `image`, enlarged (nearest pixels, so that cells stay sharp) so its
    longer side is about `side`; and the zoom factor (output pixels per input pixel)."""
    x0, y0, x1, y1 = window
    crop = image[y0:y1, x0:x1]
    k = max(1.0, side / max(crop.shape[:2]))
    size = (max(1, round(crop.shape[1] * k)), max(1, round(crop.shape[0] * k)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_NEAREST if k >= 2 else cv2.INTER_LINEAR), size[0] / crop.shape[1]


def blend_cells(image: np.ndarray, values: np.ndarray, row_of: np.ndarray, col_of: np.ndarray, *,
                max_alpha: float = 0.85) -> np.ndarray:
    """`image` [H, W, 3] with a grid of `values` ([rows, cols] in [0, 1]) overlaid in viridis, the
    opacity growing with the value (zero stays transparent); pixel (i, j) shows cell
    (row_of[i], col_of[j]). Colours are computed per cell, then spread: fast on large images."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    out = np.array(image, dtype=np.uint8, copy=True)
    rows = np.flatnonzero((v > 0).any(1)[row_of])
    cols = np.flatnonzero((v > 0).any(0)[col_of])
    if not rows.size or not cols.size:
        return out
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1  # only where some cell is non-zero
    r, c = row_of[y0:y1, None], col_of[None, x0:x1]
    color = colormap_array(v).astype(np.uint16)[r, c]
    alpha = np.round(256 * max_alpha * np.sqrt(v)).astype(np.uint16)[r, c][..., None]
    out[y0:y1, x0:x1] = (out[y0:y1, x0:x1].astype(np.uint16) * (256 - alpha) + color * alpha + 128) >> 8
    return out


def tile(panels: Sequence[np.ndarray], columns: int, *, gap: int = 6, background: Color = WHITE) -> np.ndarray:
    """Panels (each [h, w, 3], any sizes) in a grid of `columns`, row by row, separated by `gap`."""
    columns = max(1, min(columns, len(panels)))
    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    cell_w = max(p.shape[1] for p in panels)
    heights = [max(p.shape[0] for p in row) for row in rows]
    out = np.empty((sum(heights) + gap * (len(rows) - 1), cell_w * columns + gap * (columns - 1), 3), np.uint8)
    out[:] = background
    y = 0
    for row, row_h in zip(rows, heights):
        for c, panel in enumerate(row):
            x = c * (cell_w + gap)
            out[y:y + panel.shape[0], x:x + panel.shape[1]] = panel
        y += row_h + gap
    return out
