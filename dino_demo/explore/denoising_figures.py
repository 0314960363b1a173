"""Figures of a denoising run (`explore.denoising.DenoisingRun`): one group's noised anchors and
where the decoder took them, and the self-attention mask as a picture. Pure functions returning
[H, W, 3] uint8 images with their key below (`pixels.with_legend`)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .draw.pixels import (
    WHITE,
    Color,
    Legend,
    dim,
    draw_boxes,
    draw_path,
    line_width,
    with_legend,
)

POSITIVE_COLOR: Color = (46, 204, 113)    # noise under half the box: to be reconstructed
NEGATIVE_COLOR: Color = (231, 76, 60)     # noise between one and two halves: to be rejected
GROUND_TRUTH_COLOR: Color = WHITE
MASK_COLORS = {"blocked": (30, 30, 30), "own group": POSITIVE_COLOR, "matching": (88, 166, 255),
               "padding row": (90, 90, 90)}


def _pixels(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Normalized cxcywh [N, 4] -> xyxy in the pixels of a canvas of `size` (H, W)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = size
    return np.stack([(b[:, 0] - b[:, 2] / 2) * width, (b[:, 1] - b[:, 3] / 2) * height,
                     (b[:, 0] + b[:, 2] / 2) * width, (b[:, 1] + b[:, 3] / 2) * height], -1)


def render_denoising_group(image: np.ndarray, run, group: int, *, layer: int | None = None,
                           kinds: tuple[str, ...] = ("positive", "negative")) -> np.ndarray:
    """Group `group` of a run on `image` (any size with the run's aspect): the ground truth
    (white), each query's noised anchor (thin; green positive, red negative), the path of its box
    centre through the decoder layers up to `layer` (0-based, default the last) and its box there
    (thick), captioned with the class it was denoised to and its probability."""
    k = run.num_layers - 1 if layer is None else layer
    if not 0 <= k < run.num_layers:
        raise ValueError(f"layer must lie in 1..{run.num_layers}, got {k + 1}")
    unknown = set(kinds) - {"positive", "negative"}
    if unknown:
        raise ValueError(f"kinds must be 'positive' and/or 'negative', got {sorted(unknown)}")
    size = image.shape[:2]
    width = line_width(image.shape)
    canvas = dim(image, 0.45)
    canvas = draw_boxes(canvas, _pixels(run.gt_boxes, size), [GROUND_TRUTH_COLOR] * len(run.gt_boxes),
                        widths=[width + 1] * len(run.gt_boxes),
                        captions=[f"GT {run.label(c)}" for c in run.gt_labels])
    slots = [s for s in run.group_slots(group) if ("positive" if run.dn_positive[s] else "negative") in kinds]
    anchors, finals, colors, captions = [], [], [], []
    for slot in slots:
        color = POSITIVE_COLOR if run.dn_positive[slot] else NEGATIVE_COLOR
        stages = np.concatenate([run.dn_boxes[slot][None], run.dn_pred_boxes[: k + 1, slot]])
        pixels = _pixels(stages, size)
        canvas = draw_path(canvas, (pixels[:, :2] + pixels[:, 2:]) / 2, [color] * len(pixels),
                           width=max(1, width // 2))
        logits = run.dn_pred_logits[k, slot].astype(np.float64)
        best = int(logits.argmax())
        sign = "+" if run.dn_positive[slot] else "-"
        anchors.append(pixels[0])
        finals.append(pixels[-1])
        colors.append(color)
        captions.append(f"{sign}{run.label(best)} {1 / (1 + np.exp(-logits[best])):.2f}")
    if slots:
        canvas = draw_boxes(canvas, np.array(anchors), colors, widths=[max(1, width // 2)] * len(slots),
                            alphas=[0.7] * len(slots))
        canvas = draw_boxes(canvas, np.array(finals), colors, widths=[width + 1] * len(slots), captions=captions)
    return with_legend(canvas, Legend(
        swatches=((GROUND_TRUTH_COLOR, "ground truth"), (POSITIVE_COLOR, "positive query"),
                  (NEGATIVE_COLOR, "negative query")),
        note=f"group {group + 1} of {run.num_groups}: thin = noised anchor, line = centre through the layers, "
             f"thick = box after layer {k + 1} with the class it was denoised to (+ positive, - negative)"))


def mask_picture(mask: np.ndarray, pad: int, groups: int) -> np.ndarray:
    """[N, N, 3] uint8 picture of an attention mask [N, N] (True = may not attend): blocked dark;
    allowed green inside a denoising group, blue towards the matching queries."""
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    picture = np.empty((n, n, 3), dtype=np.uint8)
    picture[:] = MASK_COLORS["matching"]
    group = pad // groups if groups and pad else 0
    if group:
        rows = np.arange(pad) // group
        same = rows[:, None] == rows[None, :]
        picture[:pad, :pad][same] = MASK_COLORS["own group"]
    picture[mask] = MASK_COLORS["blocked"]
    return picture


def render_attention_mask(mask: np.ndarray, pad: int, groups: int, *, side: int = 560) -> np.ndarray:
    """The decoder self-attention mask [pad + Q, pad + Q] as a picture (row = the query that
    attends, column = the query it may see), `side` pixels wide, with the boundaries of the
    denoising part and of its groups."""
    picture = mask_picture(mask, pad, groups)
    n = picture.shape[0]
    if n == 0:
        raise ValueError("the attention mask is empty")
    scaled = np.asarray(Image.fromarray(picture).resize((side, side), Image.Resampling.NEAREST))
    canvas = scaled.copy()
    f = side / n
    group = pad // groups if groups and pad else 0
    if group and group * f >= 4:
        for g in range(1, groups):
            p = int(round(g * group * f))
            canvas[max(0, p - 1):p, : int(round(pad * f))] = WHITE
            canvas[: int(round(pad * f)), max(0, p - 1):p] = WHITE
    if pad:
        p = int(round(pad * f))
        canvas[max(0, p - 1):p + 1, :] = (255, 200, 0)
        canvas[:, max(0, p - 1):p + 1] = (255, 200, 0)
    return with_legend(canvas, Legend(
        swatches=((MASK_COLORS["blocked"], "blocked (True)"), (MASK_COLORS["own group"], "own denoising group"),
                  (MASK_COLORS["matching"], "may see the matching queries")),
        note=f"{pad} denoising + {n - pad} matching queries, {groups} groups. Row: the query that attends; column: "
             "the query it would see. Yellow lines: where the denoising slots end. Matching queries never see a "
             "denoising query; a group never sees another group."))
