"""Detections above a score threshold, as drawn and written to results files: numpy only, shared
by the PyTorch path (`views.detection_view`) and the ONNX Runtime path (`export.runtime`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.labels import label_name


@dataclass(frozen=True)
class DetectionView:
    """Detections above a threshold, best first: boxes [N, 4] xyxy pixels, scores [N],
    labels [N] class ids, categories [N] COCO category ids, query_slots [N] the decoder query
    slot each came from, names [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    categories: np.ndarray
    query_slots: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def captions(self) -> list[str]:
        """The label drawn on each box: class name and score."""
        return [f"{name} {score:.2f}" for name, score in zip(self.names, self.scores)]


def select_detections(scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray, query_slots: np.ndarray, *,
                      threshold: float, max_detections: int | None, class_names: tuple[str, ...],
                      category_ids: tuple[int, ...]) -> DetectionView:
    """The view of post-processed detections (best first: scores [N], labels [N], boxes [N, 4]
    xyxy pixels, query_slots [N]) that score at least `threshold`, at most `max_detections`."""
    keep = np.flatnonzero(scores >= threshold)
    if max_detections is not None:
        keep = keep[: max(int(max_detections), 0)]
    kept_labels = labels[keep].astype(np.int64)
    return DetectionView(
        boxes=boxes[keep].astype(np.float64), scores=scores[keep].astype(np.float64), labels=kept_labels,
        categories=np.array([category_ids[int(c)] for c in kept_labels], dtype=np.int64),
        query_slots=query_slots[keep].astype(np.int64),
        names=tuple(label_name(class_names, int(c)) for c in kept_labels))
