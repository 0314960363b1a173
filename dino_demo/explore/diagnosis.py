"""Why this box, why not that one: a region of an image asked about against a stored
`InferenceResult`, detections matched to ground truth, misses given a verdict and false alarms a
kind. Pure functions of the result's tensors (no model run); boxes are xyxy in the original
image's pixels.

Matching (the rule `analyze` counts with): per image and category, the detections scoring at least
the threshold, best first, each take the unmatched ground-truth box of their category with the
highest IoU, if that IoU is at least `MATCH_IOU`. Crowd boxes are left out by the caller.

Verdicts of a region (a ground-truth box, or any box drawn on the page), first that applies:
- "detected": a detection of its class above the threshold, not taken by another object,
  overlaps it at IoU >= MATCH_IOU;
- "no_proposal" (no proposal near it): neither an encoder proposal (the decoder's first box) nor
  a query's final box reaches IoU NEAR_IOU with it;
- "duplicate" (suppressed by a stronger duplicate): a stronger detection of its class overlapping
  it at IoU >= NEAR_IOU was taken by another object, and none is left for it;
- "box_off" (right query but box off): no query's final box reaches IoU MATCH_IOU, or a query
  near it scores its class above the threshold with a box under MATCH_IOU;
- "below_threshold": a query has the box (IoU >= MATCH_IOU) and scores its class at least
  BELOW_THRESHOLD_FRACTION of the threshold, but under it;
- "low_score" (proposals near but low class score): a query has the box, its class score is lower;
- "unknown_class": the model has no such class (a ground truth of a category it never predicts).

Kinds of a false alarm (a detection above the threshold matched to no ground truth), first that applies:
- "duplicate": it overlaps, at IoU >= MATCH_IOU, a ground truth of its class that a stronger
  detection already took;
- "confused_class": it overlaps a ground truth of another class at IoU >= MATCH_IOU;
- "poor_localisation": it overlaps a ground truth of its class at IoU >= BACKGROUND_IOU;
- "confused_class" also when it overlaps only other classes' boxes at IoU >= BACKGROUND_IOU;
- "background": no ground truth reaches IoU BACKGROUND_IOU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.box_ops import box_cxcywh_to_xyxy, box_iou
from ..runtime.detections import DetectionView
from ..runtime.result import InferenceResult
from ..runtime.detections import detection_view
from .score_text import score_text, threshold_text

MATCH_IOU = 0.5
NEAR_IOU = 0.3
BACKGROUND_IOU = 0.1
BELOW_THRESHOLD_FRACTION = 0.5
NEAREST = 5   # queries and proposals listed per region

VERDICTS = {
    "detected": "detected",
    "no_proposal": "no proposal near it",
    "low_score": "proposals near but low class score",
    "box_off": "right query but box off",
    "duplicate": "suppressed by a stronger duplicate",
    "below_threshold": "below the threshold",
    "unknown_class": "a class the model does not know",
}
FALSE_ALARM_KINDS = {
    "duplicate": "duplicate of a detected object",
    "poor_localisation": "poor localisation",
    "confused_class": "confused class",
    "background": "background",
}


def _pixels(boxes: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Normalized cxcywh boxes [..., 4] as float64 xyxy pixels of an image of `size` (H, W)."""
    height, width = size
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    return (box_cxcywh_to_xyxy(boxes.double()) * scale).numpy()


def pairwise_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU [N, M] of xyxy boxes [N, 4] and [M, 4] (`model.box_ops.box_iou`, in float64)."""
    a = torch.as_tensor(np.asarray(boxes1, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(boxes2, dtype=np.float64).reshape(-1, 4))
    return box_iou(a, b)[0].numpy()


# -- matching ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Matching:
    """detection_truth: [N] index of the ground truth each detection took (-1: none);
    truth_detection: [G] index of the detection that took each ground truth (-1: missed);
    ious: [N, G] IoU of every detection with every ground truth."""

    detection_truth: np.ndarray
    truth_detection: np.ndarray
    ious: np.ndarray

    @property
    def true_positives(self) -> int:
        return int((self.detection_truth >= 0).sum())

    @property
    def false_positives(self) -> np.ndarray:
        """Indices of the unmatched detections."""
        return np.flatnonzero(self.detection_truth < 0)

    @property
    def false_negatives(self) -> np.ndarray:
        """Indices of the missed ground truths."""
        return np.flatnonzero(self.truth_detection < 0)


def match(boxes: np.ndarray, scores: np.ndarray, categories: np.ndarray, truth_boxes: np.ndarray,
          truth_categories: np.ndarray, iou_threshold: float = MATCH_IOU) -> Matching:
    """Greedy matching of detections (boxes [N, 4], scores [N], category ids [N], all already
    above the score threshold) to ground truth (boxes [G, 4], category ids [G]): best detection
    first, each to the unmatched ground truth of its category with the highest IoU >=
    `iou_threshold` (the first such on ties)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    truth_boxes = np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4)
    categories, truth_categories = np.asarray(categories).reshape(-1), np.asarray(truth_categories).reshape(-1)
    ious = pairwise_iou(boxes, truth_boxes)
    detection_truth = np.full(len(boxes), -1, dtype=np.int64)
    truth_detection = np.full(len(truth_boxes), -1, dtype=np.int64)
    for d in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        candidates = (truth_categories == categories[d]) & (truth_detection < 0) & (ious[d] >= iou_threshold)
        if candidates.any():
            g = int(np.argmax(np.where(candidates, ious[d], -1.0)))
            detection_truth[d], truth_detection[g] = g, d
    return Matching(detection_truth, truth_detection, ious)


# -- asking about a region ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NearQuery:
    """A decoder query near a region. iou: of its final box with the region; box: [4] final box;
    label / label_score: its best class after the last layer and that probability; class_score:
    its probability for the region's class (None when the region has none); layer_boxes:
    [K + 1, 4] its proposal then its box after each decoder layer; layer_ious: [K + 1] their IoUs
    with the region."""

    query_slot: int
    iou: float
    box: np.ndarray
    label: int
    label_score: float
    class_score: float | None
    layer_boxes: np.ndarray
    layer_ious: np.ndarray


@dataclass(frozen=True)
class NearProposal:
    """An encoder proposal near a region: the decoder's first box `box` [4] for `query_slot`, its
    IoU with the region, `rank` (0-based) of its encoder score among the model's `num_queries`
    selected proposals, `score` (best encoder class probability), `label` that class, `level`."""

    query_slot: int
    iou: float
    box: np.ndarray
    rank: int
    score: float
    label: int
    level: int


@dataclass(frozen=True)
class RegionDiagnosis:
    """What the model did about a region: `box` [4], `class_id` the class asked about (None: any),
    the `queries` whose final boxes overlap it most and the `proposals` closest to it (highest IoU
    first), the `verdict` (a key of VERDICTS), a one-line `summary`, and `detection`: the index in
    the thresholded view of the detection that found it (None: not found)."""

    box: np.ndarray
    class_id: int | None
    threshold: float
    queries: tuple[NearQuery, ...]
    proposals: tuple[NearProposal, ...]
    verdict: str
    summary: str
    detection: int | None = None

    @property
    def nearest(self) -> NearQuery:
        return self.queries[0]


@dataclass(frozen=True)
class _Tensors:
    """A result's per-query arrays in pixels: final boxes [Q, 4], probabilities [Q, C],
    proposals (anchors) [Q, 4], encoder scores [Q] and labels [Q], ranks [Q], levels [Q], and every
    stage's boxes [K + 1, Q, 4] (proposal, then after each layer)."""

    final: np.ndarray
    probabilities: np.ndarray
    anchors: np.ndarray
    encoder_scores: np.ndarray
    encoder_labels: np.ndarray
    ranks: np.ndarray
    levels: np.ndarray
    stages: np.ndarray


def _tensors(result: InferenceResult) -> _Tensors:
    out = result.internals
    selection = out.selection
    encoder = selection.logits[0].double().sigmoid()
    best, labels = encoder.max(-1)
    order = torch.argsort(best, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order))
    stages = torch.cat([out.references[0, 0][None], out.boxes[:, 0]], 0)    # [K + 1, Q, 4]
    return _Tensors(
        final=_pixels(out.boxes[-1, 0], result.size),
        probabilities=out.logits[-1, 0].double().sigmoid().numpy(),
        anchors=_pixels(selection.boxes[0], result.size),
        encoder_scores=best.numpy(), encoder_labels=labels.numpy(), ranks=ranks.numpy(),
        levels=selection.levels[0].numpy(), stages=_pixels(stages, result.size))


def check_box(box, size: tuple[int, int]) -> np.ndarray:
    """`box` as a float64 [4] xyxy array; ValueError unless it is four finite numbers with
    x0 < x1, y0 < y1 that overlap the image of `size` (H, W)."""
    try:
        b = np.asarray(box, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        raise ValueError(f"a box is four numbers x0, y0, x1, y1, got {box!r}") from None
    height, width = size
    if not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"a box needs x0 < x1 and y0 < y1, got {b.tolist()}")
    if b[2] <= 0 or b[3] <= 0 or b[0] >= width or b[1] >= height:
        raise ValueError(f"the box {b.round(1).tolist()} lies outside the {width}x{height} image")
    return b


def diagnose_region(result: InferenceResult, box, class_id: int | None, threshold: float, *,
                    claimed: frozenset[int] = frozenset(), nearest: int = NEAREST) -> RegionDiagnosis:
    """Ask about `box` ([4] xyxy pixels): the `nearest` queries by IoU of their final box, the
    `nearest` proposals by IoU of the decoder's first box, and the verdict for class `class_id`
    (None: any class; -1: a class the model does not know) at score `threshold`.

    claimed: indices, in `detection_view(result, threshold)`, of detections that other objects
    took (from `match`); they do not count as finding this region.
    """
    box = check_box(box, result.size)
    num_classes = int(result.internals.logits.shape[-1])
    if class_id is not None and class_id != -1 and not (isinstance(class_id, int) and 0 <= class_id < num_classes):
        raise ValueError(f"class id must be an integer in 0..{num_classes - 1} (or None, or -1), got {class_id!r}")
    t = _tensors(result)
    view = detection_view(result, threshold)
    final_iou = pairwise_iou(t.final, box[None])[:, 0]
    anchor_iou = pairwise_iou(t.anchors, box[None])[:, 0]
    known = class_id is None or class_id >= 0
    class_scores = (t.probabilities.max(-1) if class_id is None else
                    t.probabilities[:, class_id] if class_id >= 0 else np.zeros(len(final_iou)))

    queries = tuple(_near_query(t, int(q), box, final_iou, class_scores if known else None)
                    for q in np.argsort(-final_iou, kind="stable")[:nearest])
    proposals = tuple(NearProposal(int(q), float(anchor_iou[q]), t.anchors[q], int(t.ranks[q]),
                                   float(t.encoder_scores[q]), int(t.encoder_labels[q]), int(t.levels[q]))
                      for q in np.argsort(-anchor_iou, kind="stable")[:nearest])
    verdict, summary, found = _verdict(result, view, box, class_id, threshold, claimed, final_iou, anchor_iou,
                                       class_scores, proposals, queries)
    return RegionDiagnosis(box=box, class_id=class_id, threshold=float(threshold), queries=queries,
                           proposals=proposals, verdict=verdict, summary=f"{VERDICTS[verdict]}: {summary}",
                           detection=found)


def _near_query(t: _Tensors, q: int, box: np.ndarray, final_iou: np.ndarray, class_scores: np.ndarray | None
                ) -> NearQuery:
    stages = t.stages[:, q]
    return NearQuery(query_slot=q, iou=float(final_iou[q]), box=t.final[q], label=int(t.probabilities[q].argmax()),
                     label_score=float(t.probabilities[q].max()),
                     class_score=None if class_scores is None else float(class_scores[q]),
                     layer_boxes=stages, layer_ious=pairwise_iou(stages, box[None])[:, 0])


def _verdict(result: InferenceResult, view: DetectionView, box: np.ndarray, class_id: int | None, threshold: float,
             claimed: frozenset[int], final_iou: np.ndarray, anchor_iou: np.ndarray, class_scores: np.ndarray,
             proposals: tuple[NearProposal, ...], queries: tuple[NearQuery, ...]) -> tuple[str, str, int | None]:
    """(verdict, the rest of its line, index of the detection that found the region or None)."""
    name = "any class" if class_id is None else result.label(class_id) if class_id >= 0 else "its class"
    det_iou = pairwise_iou(view.boxes, box[None])[:, 0]
    same = np.ones(len(view), bool) if class_id is None else view.labels == class_id
    free = np.array([i not in claimed for i in range(len(view))], dtype=bool)
    found = np.flatnonzero(same & free & (det_iou >= MATCH_IOU))
    if class_id == -1:
        return "unknown_class", "the model never predicts this category", None
    if found.size:
        i = int(found[np.argmax(det_iou[found])])
        return ("detected", f"slot {view.query_slots[i]} scores {view.names[i]} {view.scores[i]:.2f} "
                            f"at IoU {det_iou[i]:.2f}", i)
    if not (anchor_iou >= NEAR_IOU).any() and not (final_iou >= NEAR_IOU).any():
        p = proposals[0]
        return ("no_proposal", f"the closest of the {len(anchor_iou)} proposals (slot {p.query_slot}, rank "
                               f"{p.rank + 1}) reaches IoU {p.iou:.2f} and the closest final box "
                               f"{queries[0].iou:.2f}, under {NEAR_IOU}", None)
    stronger = np.flatnonzero(same & ~free & (det_iou >= NEAR_IOU))
    if stronger.size:
        i = int(stronger[np.argmax(view.scores[stronger])])
        return ("duplicate", f"slot {view.query_slots[i]} ({view.names[i]} {view.scores[i]:.2f}) overlaps it at "
                             f"IoU {det_iou[i]:.2f} and was taken by another object", None)
    right = final_iou >= MATCH_IOU
    if not right.any():
        q = queries[0]
        return ("box_off", f"no final box reaches IoU {MATCH_IOU}: the closest, slot {q.query_slot}, "
                           f"reaches {q.iou:.2f} (its proposal {q.layer_ious[0]:.2f})", None)
    best = int(np.flatnonzero(right)[np.argmax(class_scores[right])])
    strong_off = np.flatnonzero((final_iou >= NEAR_IOU) & ~right & (class_scores >= threshold))
    if class_scores[best] < threshold and strong_off.size:
        q = int(strong_off[np.argmax(class_scores[strong_off])])
        return ("box_off", f"slot {q} scores {name} {class_scores[q]:.2f} but its box reaches IoU "
                           f"{final_iou[q]:.2f} only", None)
    line = (f"slot {best} has the box (IoU {final_iou[best]:.2f}) and scores {name} "
            f"{score_text(class_scores[best], threshold, 3)}, threshold {threshold_text(threshold)}")
    if class_scores[best] >= BELOW_THRESHOLD_FRACTION * threshold:
        return "below_threshold", line, None
    return "low_score", line, None


# -- false alarms ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FalseAlarm:
    """A detection above the threshold that matched no ground truth: `detection` its index in the
    thresholded view, `kind` (a key of FALSE_ALARM_KINDS), `truth` the index of the
    best-overlapping ground truth (any class; None when none overlaps) and `iou` with it,
    `layer_boxes` [K + 1, 4] its query's proposal and box after each layer and `layer_ious`
    [K + 1] their IoUs with that ground truth (zeros without one), and a one-line `summary`."""

    detection: int
    query_slot: int
    kind: str
    truth: int | None
    iou: float
    layer_boxes: np.ndarray
    layer_ious: np.ndarray
    summary: str


def false_alarm_kind(detection: int, categories: np.ndarray, truth_categories: np.ndarray, matching: Matching
                     ) -> str:
    """The kind of unmatched detection `detection` (categories [N] of the detections,
    truth_categories [G], `matching` of the two)."""
    ious = matching.ious[detection]
    same = np.asarray(truth_categories) == categories[detection]
    taken = matching.truth_detection >= 0
    if (same & taken & (ious >= MATCH_IOU)).any():
        return "duplicate"
    if (~same & (ious >= MATCH_IOU)).any():
        return "confused_class"
    if (same & (ious >= BACKGROUND_IOU)).any():
        return "poor_localisation"
    if (ious >= BACKGROUND_IOU).any():
        return "confused_class"
    return "background"


def explain_false_alarm(result: InferenceResult, view: DetectionView, detection: int, truth_boxes: np.ndarray,
                        truth_categories: np.ndarray, matching: Matching, truth_names: tuple[str, ...] = ()
                        ) -> FalseAlarm:
    """`FalseAlarm` of detection `detection` of `view` (the thresholded detections of `result`),
    against ground truth boxes [G, 4] with category ids [G] (names optional, for the summary)."""
    kind = false_alarm_kind(detection, view.categories, truth_categories, matching)
    ious = matching.ious[detection]
    truth = int(np.argmax(ious)) if len(ious) and ious.max() > 0 else None
    slot = int(view.query_slots[detection])
    stages = _tensors(result).stages[:, slot]
    layer_ious = (pairwise_iou(stages, np.asarray(truth_boxes)[truth][None])[:, 0] if truth is not None
                  else np.zeros(len(stages)))
    what = f"{view.names[detection]} {view.scores[detection]:.2f} (slot {slot})"
    if truth is None:
        about = "overlaps no ground truth"
    else:
        label = truth_names[truth] if truth < len(truth_names) else f"category {int(truth_categories[truth])}"
        about = f"best overlap: {label} at IoU {ious[truth]:.2f}"
    return FalseAlarm(detection=detection, query_slot=slot, kind=kind, truth=truth,
                      iou=float(ious[truth]) if truth is not None else 0.0, layer_boxes=stages,
                      layer_ious=layer_ious, summary=f"{FALSE_ALARM_KINDS[kind]}: {what}, {about}")


# -- one image against its ground truth --------------------------------------------------------------

@dataclass(frozen=True)
class ImageDiagnosis:
    """One image's detections above the threshold (`view`) against its ground truth (`truth_boxes`
    [G, 4], `truth_categories` [G]): the `matching`, a `RegionDiagnosis` per missed ground truth
    (`misses`, in ground-truth order, with `missed` their indices) and a `FalseAlarm` per
    unmatched detection (`false_alarms`, best first)."""

    view: DetectionView
    truth_boxes: np.ndarray
    truth_categories: np.ndarray
    matching: Matching
    missed: tuple[int, ...]
    misses: tuple[RegionDiagnosis, ...]
    false_alarms: tuple[FalseAlarm, ...]


def diagnose_image(result: InferenceResult, truth_boxes: np.ndarray, truth_categories: np.ndarray, threshold: float,
                   truth_names: tuple[str, ...] = ()) -> ImageDiagnosis:
    """Match `result`'s detections above `threshold` to the ground truth (boxes [G, 4] xyxy pixels,
    COCO category ids [G]; crowd boxes left out by the caller) and explain every miss and false
    alarm. A ground truth of a category the model does not predict gets "unknown_class"."""
    truth_boxes = np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4)
    truth_categories = np.asarray(truth_categories, dtype=np.int64).reshape(-1)
    view = detection_view(result, threshold)
    matching = match(view.boxes, view.scores, view.categories, truth_boxes, truth_categories)
    class_of = {int(c): i for i, c in enumerate(result.category_ids)}
    taken = frozenset(int(d) for d in matching.truth_detection if d >= 0)
    missed = tuple(int(g) for g in matching.false_negatives)
    misses = tuple(diagnose_region(result, _inside(truth_boxes[g], result.size),
                                   class_of.get(int(truth_categories[g]), -1), threshold, claimed=taken)
                   for g in missed)
    alarms = tuple(explain_false_alarm(result, view, int(d), truth_boxes, truth_categories, matching, truth_names)
                   for d in matching.false_positives)
    return ImageDiagnosis(view, truth_boxes, truth_categories, matching, missed, misses, alarms)


def _inside(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth box clipped to the image, widened to at least a hundredth of a pixel (a
    degenerate annotation can still be asked about)."""
    height, width = size
    x0, y0, x1, y1 = np.clip(box, 0, [width, height, width, height])
    return np.array([min(x0, width - 0.01), min(y0, height - 0.01), max(x1, min(x0, width - 0.01) + 0.01),
                     max(y1, min(y0, height - 0.01) + 0.01)])
