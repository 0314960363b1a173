"""Track ids for a clip's detections, frame after frame: ByteTrack (Zhang et al., 2022) as the
`supervision` package ships it (`sv.ByteTrack`: Kalman-filtered boxes matched by IoU, first with
the confident detections, then with the weak ones).

DINO's post-processing can list one query's box under two classes; the tracker sees each query
once (its best score), and every record of that query gets its track id. A detection the tracker
matched to no track (a new object not yet confirmed, or one too weak to start a track) has track
id None.
"""
from __future__ import annotations

import warnings

import numpy as np


class Tracker:
    """Track ids for one clip's frames, given in order.

    threshold: the detections' score threshold; a detection at or above it may start a track
        (ByteTrack starts tracks 0.1 above its activation threshold, which is set accordingly).
    frame_rate: frames per second of the frames given (the clip's, divided by the step between
        detected frames); lost_seconds: how long a track that lost its object waits for it.
    """

    def __init__(self, threshold: float, frame_rate: float, lost_seconds: float = 1.0):
        import supervision as sv

        if frame_rate <= 0:
            raise ValueError(f"frame_rate must be positive, got {frame_rate}")
        with warnings.catch_warnings():  # supervision >= 0.28 marks it deprecated (its successor is `trackers`)
            warnings.simplefilter("ignore", FutureWarning)
            self._tracker = sv.ByteTrack(track_activation_threshold=max(float(threshold) - 0.1, 0.0),
                                         lost_track_buffer=max(int(round(30 * lost_seconds)), 1),
                                         minimum_matching_threshold=0.8, frame_rate=frame_rate,
                                         minimum_consecutive_frames=1)
        self._sv = sv

    def update(self, boxes: np.ndarray, scores: np.ndarray, query_slots: np.ndarray) -> list[int | None]:
        """Track id (or None) of each of one frame's detections: boxes [N, 4] xyxy pixels, scores
        [N], query_slots [N] (detections of one slot share its box and track)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores, slots = np.asarray(scores, dtype=np.float64), np.asarray(query_slots)
        unique = [i for i in range(len(slots)) if slots[i] not in slots[:i]]  # best first: each slot's best
        detections = self._sv.Detections(xyxy=boxes[unique].reshape(-1, 4), confidence=scores[unique],
                                         class_id=np.zeros(len(unique), dtype=int),
                                         data={"row": np.asarray(unique, dtype=int)})
        tracked = self._tracker.update_with_detections(detections)
        if len(tracked) == 0:
            return [None] * len(slots)
        by_slot = {int(slots[row]): int(track) for row, track in zip(tracked.data["row"], tracked.tracker_id)}
        return [by_slot.get(int(slot)) for slot in slots]
