"""A clip's frames drawn with their tracked detections, and the annotated clip written as MPEG-4
(fourcc mp4v, which OpenCV's own FFmpeg writes everywhere).

Boxes take the colour of their track (a detection without a track: its class's), captions read
"#<track> <label> <score>".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..explore.draw.figures import render_detections

# Colours of detections without a track: past the palette's first entries, which tracks use most.
UNTRACKED_COLOR = 7


def draw_frame(frame: np.ndarray, detections: list[dict[str, Any]]) -> np.ndarray:
    """[H, W, 3] uint8 RGB `frame` with its detection records (with "track_id") drawn on a copy."""
    if not detections:
        return frame.copy()
    boxes = np.array([d["box_xyxy"] for d in detections], dtype=np.float64)
    captions = [("" if d["track_id"] is None else f"#{d['track_id']} ") + f"{d['label']} {d['score']:.2f}"
                for d in detections]
    colours = [UNTRACKED_COLOR if d["track_id"] is None else int(d["track_id"]) for d in detections]
    return render_detections(frame, boxes, captions, colours)


class ClipWriter:
    """Frames ([H, W, 3] uint8 RGB, all of one size) into an .mp4 at `fps`; a context manager."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        height, width = size
        self.path = Path(path)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not self._writer.isOpened():
            raise ValueError(f"{self.path.name}: OpenCV cannot write an MPEG-4 clip here")
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame of {frame.shape[:2]} in a clip of {self._size}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> "ClipWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
