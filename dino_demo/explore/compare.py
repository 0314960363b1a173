"""Two models on the same image (before and after fine-tuning, R50 and Swin-L, 12 and 36 epochs):
their detections above a threshold matched to each other with the rule that matches detections
to ground truth (`diagnosis.match`: model A's detections, best first, each take the unmatched
detection of model B of the same category with the highest IoU >= MATCH_IOU), what one finds
and the other misses, and the same query slot in both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.detections import DetectionView
from .diagnosis import MATCH_IOU, match
from ..runtime.result import InferenceResult
from ..runtime.detections import detection_view


@dataclass(frozen=True)
class Comparison:
    """Detections of model A (`a`) and model B (`b`) above `threshold`, best first.

    pairs: (index in a, index in b, IoU) of the detections both models make (same category,
        IoU >= MATCH_IOU), in the order of a;
    only_a / only_b: indices of the detections that only A / only B makes;
    best_iou_a: [len(a)] each A detection's highest IoU with any B detection (any category), and
    best_iou_b the same for B (0 when the other has none): "only A, but B has a box of another class
    there" reads from them.
    """

    a: DetectionView
    b: DetectionView
    threshold: float
    pairs: tuple[tuple[int, int, float], ...]
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]
    best_iou_a: np.ndarray
    best_iou_b: np.ndarray


def compare_results(a: InferenceResult, b: InferenceResult, threshold: float) -> Comparison:
    """Compare two results of the same image (same size) at `threshold`."""
    if a.size != b.size:
        raise ValueError(f"the two results are of different images ({a.size} and {b.size} pixels)")
    return compare_detections(detection_view(a, threshold), detection_view(b, threshold), threshold)


def compare_detections(a: DetectionView, b: DetectionView, threshold: float = 0.0) -> Comparison:
    """Match two models' detections of one image (both best first, already thresholded)."""
    matching = match(a.boxes, a.scores, a.categories, b.boxes, b.categories, MATCH_IOU)
    pairs = tuple((int(i), int(j), float(matching.ious[i, j])) for i, j in enumerate(matching.detection_truth)
                  if j >= 0)
    ious = matching.ious
    return Comparison(
        a=a, b=b, threshold=float(threshold), pairs=pairs,
        only_a=tuple(int(i) for i in matching.false_positives), only_b=tuple(int(j) for j in matching.false_negatives),
        best_iou_a=ious.max(1) if ious.shape[1] else np.zeros(len(a)),
        best_iou_b=ious.max(0) if ious.shape[0] else np.zeros(len(b)))


def shared_slots(a: InferenceResult, b: InferenceResult) -> int:
    """How many query slots both results have (a slot below it exists in both)."""
    return min(a.num_queries, b.num_queries)
