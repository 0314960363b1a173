"""The values of the page's views for one stored result: images drawn with `explore.draw.figures`,
tables (pandas) and short Markdown texts. Plain functions of a `StoredResult` and the options of
`explore.options`; no UI framework here (the page, `dino_demo.ui`, puts these into components)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..runtime.detections import query_rows
from ..runtime.result import EncoderToken, TokenAttention
from .encoder import level_grid
from .draw.figures import (
    LayerPanel,
    ProposalHighlight,
    render_detections,
    render_heatmaps,
    render_layer_grid,
    render_proposals,
    render_refinement,
    render_sampling,
)
from .options import SELECTED_QUERY, HeatmapOptions, ProposalOptions, SamplingOptions
from ..runtime.precision import support
from .refinement import look_forward_rows, look_forward_twice, render_look_forward_twice
from .score_text import score_text, threshold_text
from .selection import level_scores, render_score_maps, render_selection_step, selection_step
from .stored import StoredResult
from .draw.data import (
    DetectionView,
    HeatmapView,
    detection_view,
    boxes_at,
    decoder_heatmap_view,
    encoder_heatmap_view,
    encoder_sampling_view,
    layer_scores,
    proposal_view,
    query_lineage,
    refinement_view,
    sampling_view,
    unavailable,
)
from .draw.pixels import Legend, dim, palette_color, with_legend

HIGHLIGHT = "background-color: #fde68a; font-weight: 600"
TABLE_COLUMNS = ["#", "label", "score", "slot", "x0", "y0", "x1", "y1"]
LOOK_FORWARD_COLUMNS = ["layer", "r: reference in (xyxy px)", "b: box the loss sees", "r': next reference",
                        "max |b - r'|"]


def detection_table(view: DetectionView, slot: int | None):
    """The detections table, one row per query (its classes and scores together, best first; see
    `detections.query_rows`), the row of query `slot` highlighted (a pandas Styler)."""
    rows = query_rows(view)
    frame = pd.DataFrame([[n + 1, caption, round(float(view.scores[i]), 3), int(q),
                           *[round(float(v), 1) for v in view.boxes[i]]]
                          for n, (i, q, caption) in enumerate(zip(rows.index, rows.query_slots, rows.captions))],
                         columns=TABLE_COLUMNS)
    styler = frame.style.apply(lambda row: [HIGHLIGHT if row["slot"] == slot else ""] * len(row), axis=1)
    return styler.format({"score": "{:.3f}", **{c: "{:.1f}" for c in ("x0", "y0", "x1", "y1")}}).hide(axis="index")


def detections_image(stored: StoredResult, view: DetectionView, slot: int | None) -> np.ndarray:
    """The detections on the canvas, one box per query labelled with its classes ("cat 0.81 · dog
    0.12"), query `slot`'s drawn on top."""
    rows = query_rows(view)
    return render_detections(stored.canvas, view.boxes[rows.index] * stored.scale, rows.captions,
                             view.labels[rows.index], selected=rows.row_of(slot))


def lineage_markdown(stored: StoredResult, slot: int, view: DetectionView, threshold: float) -> str:
    """Where query `slot` came from (its encoder token and proposal) and where it ended."""
    result = stored.result
    reason = unavailable(result, "proposals")
    if reason:
        return f"**Query slot {slot}**: {reason}."
    lineage = query_lineage(result, slot)
    row, col = lineage.cell
    x0, y0, x1, y1 = lineage.anchor_box
    shown = np.flatnonzero(view.query_slots == slot)
    if shown.size:
        fate = f"**detection #{int(shown[0]) + 1}** (score {view.scores[shown[0]]:.2f} ≥ threshold {threshold:.2f})"
    elif lineage.detection_ranks:
        fate = (f"not shown: its best detection is #{lineage.detection_ranks[0] + 1} of the post-processed "
                f"top-{len(result.detections)}, below the threshold {threshold:.2f} or the max detections")
    else:
        fate = f"no detection: not among the post-processed top-{len(result.detections)} (query, class) pairs"
    fx0, fy0, fx1, fy1 = lineage.final_box
    return (
        f"**Query slot {slot}** ← encoder token {lineage.token} (level {lineage.level + 1}, row {row}, col {col}); "
        f"proposal [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}] px, encoder score {lineage.encoder_score:.3f} "
        f"({result.label(lineage.encoder_label)}), rank {lineage.rank + 1} of {lineage.num_queries}  \n"
        f"→ after {result.num_layers} decoder layers: [{fx0:.0f}, {fy0:.0f}, {fx1:.0f}, {fy1:.0f}] px, "
        f"{result.label(lineage.final_label)} {lineage.final_score:.3f}: {fate}"
    )


def proposals_image(stored: StoredResult, view: DetectionView, options: ProposalOptions,
                    slot: int | None) -> np.ndarray:
    """The encoder's top-N proposals; the selected query's proposal and final box highlighted."""
    result = stored.result
    reason = unavailable(result, "proposals")
    if reason:
        return _message(stored, reason)
    proposals = proposal_view(result, options.top_n)
    final = np.isin(proposals.query_slots, view.query_slots)
    highlight = None
    if slot is not None:
        lineage = query_lineage(result, slot)
        highlight = ProposalHighlight(
            anchor_box=lineage.anchor_box * stored.scale, final_box=lineage.final_box * stored.scale,
            color=palette_color(lineage.final_label),
            caption=f"slot {slot}: {result.label(lineage.final_label)} {lineage.final_score:.2f}")
    return render_proposals(stored.canvas, proposals.boxes * stored.scale, proposals.scores, proposals.levels,
                            final, color_by=options.color_by, highlight=highlight)


def proposals_at(stored: StoredResult, top_n: int, x: float, y: float) -> list[int]:
    """Query slots of the shown proposals containing image pixel (x, y), smallest first."""
    if unavailable(stored.result, "proposals"):
        return []
    proposals = proposal_view(stored.result, top_n)
    return [int(proposals.query_slots[i]) for i in boxes_at(proposals.boxes, x, y)]


def sampling_image(stored: StoredResult, slot: int, options: SamplingOptions):
    """(overlay, points JSON, mass table) of query `slot` in one decoder layer."""
    view = sampling_view(stored.result, slot, options.layer, options.head, options.level)
    return _attention_panels(stored, view, options, {"query_slot": slot, "layer": options.layer + 1},
                             "reference box")


def encoder_panels(stored: StoredResult, attention: TokenAttention, options: SamplingOptions):
    """(overlay, points JSON, mass table, heatmaps) of an encoder token in one encoder layer."""
    result = stored.result
    view = encoder_sampling_view(result, attention, options.layer, options.head, options.level)
    token = attention.token
    about = {"token": token.index, "token_level": token.level + 1, "token_cell": list(token.cell),
             "encoder_layer": options.layer + 1}
    overlay, points, mass = _attention_panels(stored, view, options, about, "the token's cell")
    heat = encoder_heatmap_view(result, attention, options.layer, options.head)
    return overlay, points, mass, heatmap_figure(stored, heat, f"token {token.index}'s attention in encoder layer "
                                                 f"{options.layer + 1}", view.reference_box, "the token's cell")


def _attention_panels(stored: StoredResult, view, options: SamplingOptions, about: dict, reference_name: str):
    k = stored.scale
    overlay = render_sampling(stored.canvas, view.reference_box * k, view.points * k, view.weights, view.heads,
                              view.levels, color_by=options.color_by, reference_points=view.reference_points * k,
                              offsets=options.offsets, zoom=options.zoom, reference_name=reference_name)
    points = {
        **about,
        "heads": [h + 1 for h in view.heads], "levels": [lv + 1 for lv in view.levels],
        "shape": list(view.weights.shape),
        "reference_box_xyxy": [round(float(v), 2) for v in view.reference_box],
        "points_xy": np.round(view.points, 2).tolist(),
        "weights": np.round(view.weights, 5).tolist(),
    }
    levels = view.mass.shape[1]
    rows = [[f"head {i + 1}", *[round(float(v), 3) for v in row]] for i, row in enumerate(view.mass)]
    rows.append(["all heads", *[round(float(v), 3) for v in view.mass.mean(0)]])
    return overlay, points, pd.DataFrame(rows, columns=["head"] + [f"level {i + 1}" for i in range(levels)])


def heatmap_figure(stored: StoredResult, heat: HeatmapView, what: str, outline: np.ndarray | None = None,
                   outline_name: str = "reference box") -> np.ndarray:
    """One panel per level of `heat`, titled with the level's grid and share of the attention."""
    k = stored.scale
    shapes = stored.result.internals.spatial_shapes
    titles = [f"level {lv + 1}: {share:.0%} ({int(shapes[lv, 1])}x{int(shapes[lv, 0])} cells)"
              for lv, share in zip(heat.levels, heat.mass)]
    cells = [(w * k, h * k) for w, h in heat.cell_sizes]
    return render_heatmaps(stored.canvas, heat.grids, cells, titles, note=f"share per level of {what}",
                           outline=None if outline is None else np.asarray(outline) * k, outline_name=outline_name)


def decoder_heatmaps(stored: StoredResult, view: DetectionView, slot: int | None,
                     options: HeatmapOptions) -> np.ndarray:
    """Heatmaps of the selected query's, or of every shown detection's, decoder attention."""
    result = stored.result
    layer = f"decoder layer {options.layer + 1}"
    if options.source == SELECTED_QUERY:
        if slot is None:
            return _message(stored, "Select a query to see its attention heatmaps.")
        heat = decoder_heatmap_view(result, [slot], options.layer, options.head)
        reference = sampling_view(result, slot, options.layer).reference_box
        return heatmap_figure(stored, heat, f"slot {slot}'s attention in {layer}", reference)
    slots = [int(s) for s in view.query_slots]
    if not slots:
        return _message(stored, "No detection above the threshold: lower it, or show the selected query.")
    heat = decoder_heatmap_view(result, slots, options.layer, options.head)
    return heatmap_figure(stored, heat, f"the attention of {heat.queries} detections in {layer}")


def layer_grid_image(stored: StoredResult, slot: int) -> np.ndarray:
    """Every decoder layer of query `slot`: reference box, sampling points, box after the layer."""
    result = stored.result
    k = stored.scale
    boxes = refinement_view(result, slot)
    scores = layer_scores(result, slot)
    panels = []
    for layer in range(result.num_layers):
        view = sampling_view(result, slot, layer)
        panels.append(LayerPanel(
            reference_box=view.reference_box * k, points=view.points * k, weights=view.weights,
            box=boxes[layer + 1] * k,
            title=f"layer {layer + 1}: {result.label(int(scores.labels[layer]))} {scores.scores[layer]:.2f}"))
    return render_layer_grid(stored.canvas, panels, columns=3 if result.num_layers % 3 == 0 else 2)


def refinement_panels(stored: StoredResult, slot: int):
    """(figure, table) of query `slot`'s box through the decoder, with the class after each layer."""
    result = stored.result
    boxes = refinement_view(result, slot)
    scores = layer_scores(result, slot)
    final_name = result.label(scores.final_label)
    lineage = None if unavailable(result, "proposals") else query_lineage(result, slot)
    rows = []
    for t, box in enumerate(boxes):
        if t == 0 and lineage is None:  # a learned query: its first reference has no encoder score
            label, score, final = "", float("nan"), None
        elif t == 0:
            label, score, final = result.label(lineage.encoder_label), lineage.encoder_score, None
        else:
            label, score, final = result.label(int(scores.labels[t - 1])), scores.scores[t - 1], scores.final_scores[t - 1]
        moved = float(np.abs(box - boxes[t - 1]).max()) if t else 0.0
        rows.append([("proposal" if lineage is not None else "first reference") if t == 0 else f"layer {t}", label, round(float(score), 3),
                     "" if final is None else round(float(final), 3), round(moved, 1),
                     *[round(float(v), 1) for v in box]])
    table = pd.DataFrame(rows, columns=["stage", "best class", "score", f"{final_name} score", "moved (px)",
                                        "x0", "y0", "x1", "y1"])
    return render_refinement(stored.canvas, boxes * stored.scale), table


def look_forward_panels(stored: StoredResult, slot: int):
    """(figure, table) of look forward twice for query `slot`: per decoder layer, the reference it
    starts from, the box the loss sees and the next layer's (detached) reference."""
    steps = look_forward_twice(stored.result, slot)
    return (render_look_forward_twice(stored.canvas, stored.scale, steps),
            pd.DataFrame(look_forward_rows(steps), columns=LOOK_FORWARD_COLUMNS))


def score_maps_image(stored: StoredResult) -> np.ndarray:
    """Mixed query selection, the same for every query: the encoder's class score of every token as
    a map per level, with the top-k picks (or why this model has none)."""
    reason = unavailable(stored.result, "proposals")
    if reason:
        return _message(stored, reason)
    return render_score_maps(stored.canvas, stored.scale, level_scores(stored.result))


def selection_panels(stored: StoredResult, slot: int) -> tuple[np.ndarray, str]:
    """Mixed query selection for query `slot`: (its token's cell next to the fixed proposal and the
    encoder box made of it, a Markdown line on where its query came from); for a model without
    query selection, why not."""
    reason = unavailable(stored.result, "proposals")
    if reason:
        return _message(stored, reason), f"**Query slot {slot}**: {reason}."
    step = selection_step(stored.result, slot)
    lineage = step.lineage
    info = (f"**Query slot {slot}**: token {lineage.token} (level {lineage.level + 1}, cell {lineage.cell}) ranked "
            f"{lineage.rank + 1} of {lineage.num_queries} by encoder score ({lineage.encoder_score:.3f}). Its decoder "
            f"query = content `tgt_embed[{slot}]` (learned, image-independent) + position: the encoder box "
            f"(detached), the first reference.")
    return render_selection_step(stored.canvas, stored.scale, step), info


def encoder_prompt(stored: StoredResult) -> np.ndarray:
    """The encoder view before a token is picked (or why this model has none)."""
    reason = unavailable(stored.result, "encoder")
    if reason:
        return _message(stored, reason)
    return _message(stored, "Click anywhere on the image to pick an encoder token of the chosen level.")


def token_markdown(stored: StoredResult, token: EncoderToken) -> str:
    """What an encoder token is: its cell, encoder score, and the query slot it seeded, if any."""
    result = stored.result
    out = result.internals
    rows, cols, valid_rows, valid_cols = level_grid(result, token.level)
    if out.selection is None:
        return (f"**Encoder token {token.index}**: level {token.level + 1} ({cols}×{rows} cells), row "
                f"{token.cell[0]}, col {token.cell[1]}; {unavailable(result, 'proposals')}.")
    score = float(out.selection.max_logit[0, token.index].sigmoid())
    better = int((out.selection.max_logit[0] > out.selection.max_logit[0, token.index]).sum())
    seeded = np.flatnonzero(out.selection.topk_indices[0].numpy() == token.index)
    link = (f"it seeded **query slot {int(seeded[0])}** (select it to follow it through the decoder)" if seeded.size
            else f"not among the {result.num_queries} tokens selected as queries")
    return (f"**Encoder token {token.index}**: level {token.level + 1} ({cols}×{rows} cells, "
            f"{valid_cols}×{valid_rows} on the image), row {token.cell[0]}, col {token.cell[1]}; encoder score "
            f"{score:.3f}, rank {better + 1} of {out.selection.max_logit.shape[1]} tokens; {link}.")


def _message(stored: StoredResult, text: str) -> np.ndarray:
    return with_legend(dim(stored.canvas, 0.6), Legend(note=text))



def listed_slot(result, view: DetectionView, slot: int | None) -> int | None:
    """The query the page shows selected: `slot`, else the first of `query_choices` (None when
    the result has no detection at all)."""
    if slot is not None:
        return slot
    listed = query_choices(result, view, None)
    return listed[0][1] if listed else None


def query_choices(result, view: DetectionView, slot: int | None) -> list[tuple[str, int]]:
    """(label, query slot) of the queries shown, one per query (its classes together); the best
    ones below the threshold when none is above it; and the selected slot, whatever it is, so that
    the list always shows the selection."""
    rows = query_rows(view)
    listed = [(f"{caption} (slot {s})", int(s)) for caption, s in zip(rows.captions, rows.query_slots)]
    if not listed:
        below = query_rows(detection_view(result, 0.0, 10))
        listed = [(f"{caption} (slot {s}, below threshold)", int(s)) for caption, s in zip(below.captions,
                                                                                          below.query_slots)]
    if slot is not None and slot not in [value for _, value in listed]:
        listed.append((f"slot {slot}", int(slot)))
    return listed


def notice_markdown(stored: StoredResult, view: DetectionView, threshold: float, reused: bool) -> str:
    """What the person should know about this result: the stored notes (a model of synthetic shapes
    on a photo), nothing above the threshold, a reused example result, the op's slower reference path."""
    lines = list(stored.notes)
    if len(view) == 0:
        best = stored.result.detections.scores
        best_score = float(best[0]) if len(best) else 0.0
        lines.append(f"No detection reaches the score threshold {threshold_text(threshold)} (the best score is "
                     f"{score_text(best_score, threshold)}): lower it to see more. The query list offers the best "
                     f"ones anyway.")
    if reused:
        lines.append("This example's result was computed earlier and reused: the timings in the Runtime tab "
                     "are from that run.")
    backend, reason = stored.result.backend
    if backend == "reference" and not reason.startswith("disabled"):  # not when chosen on purpose
        lines.append(f"This run used the deformable-attention op's pure-PyTorch reference, slower than the "
                     f"compiled kernel: {reason}.")
    return "\n\n".join(lines)


def runtime_markdown(stored: StoredResult, reused: bool) -> str:
    """The Runtime tab: model, device, op, precision (and what the device offers), sizes and the time
    of each stage."""
    result = stored.result
    t = result.timings
    backend, reason = result.backend
    h, w = result.size
    in_h, in_w = result.input_size
    rows = "\n".join(f"| {stage} | {t.get(stage, 0.0) * 1000:.1f} ms |"
                     for stage in ("preprocess", "backbone", "encoder", "decoder", "model", "postprocess", "total")
                     if stage != "model" or stage in t)  # "model": a transformers detector's one stage
    m, l, p = result.attention_shape
    cached = " (an earlier run's, reused for this example)" if reused else ""
    return (
        f"**Model** {result.model_id} · **device** `{result.device}` · **deformable-attention op** "
        f"`{backend}` ({reason})\n\n"
        f"**Precision** {result.precision}: {support(result.device).note(result.precision)}\n\n"
        f"**Image** {w}x{h} px → **model input** {in_w}x{in_h} px (padded {result.padded_size[1]}x"
        f"{result.padded_size[0]}) · {result.num_queries} queries, {result.num_layers} decoder layers, "
        f"{m} heads × {l} levels × {p} points\n\n| stage | time{cached} |\n|---|---|\n{rows}"
    )
