"""Detections above a score threshold, as drawn and written to results files: numpy only, shared
by the PyTorch path (`detection_view` of an `InferenceResult`) and the ONNX Runtime path
(`export.runtime`)."""
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


@dataclass(frozen=True)
class QueryRows:
    """A DetectionView with one row per query slot. The official post-processing keeps the top-k
    (query, class) pairs, so one query's box can be listed under two classes; the page shows it
    once. index [R] the row's best detection (an index into the view, best first), query_slots [R],
    captions [R] every class of the query with its score, best first ("cat 0.81 · dog 0.12")."""

    index: np.ndarray
    query_slots: np.ndarray
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.index)

    def row_of(self, slot: int | None) -> int | None:
        """The row of query `slot`, None when it has none."""
        hits = np.flatnonzero(self.query_slots == slot) if slot is not None else ()
        return int(hits[0]) if len(hits) else None


def query_rows(view: DetectionView) -> QueryRows:
    """`view`'s detections grouped by query slot, in the order of each query's best detection."""
    members: dict[int, list[int]] = {}
    for i, slot in enumerate(view.query_slots):
        members.setdefault(int(slot), []).append(i)
    captions = tuple(" · ".join(f"{view.names[i]} {view.scores[i]:.2f}" for i in group) for group in members.values())
    return QueryRows(index=np.array([group[0] for group in members.values()], dtype=np.int64),
                     query_slots=np.array(list(members), dtype=np.int64), captions=captions)


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


def detection_view(result, threshold: float, max_detections: int | None = None) -> DetectionView:
    """The detections of an `InferenceResult` above `threshold`, best first, at most `max_detections`."""
    det = result.detections
    return select_detections(det.scores.numpy(), det.labels.numpy(), det.boxes.numpy(), det.query_slot.numpy(),
                             threshold=threshold, max_detections=max_detections, class_names=result.class_names,
                             category_ids=result.category_ids)
