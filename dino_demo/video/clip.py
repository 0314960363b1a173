"""A clip as the video engine reads it: `probe` checks it against `ClipLimits` and says what it is
(`ClipInfo`), `read_frames` decodes the frames asked for, in order, as [H, W, 3] uint8 RGB arrays
(`read_frame` one of them).

Decoding is OpenCV's (its FFmpeg back end reads MPEG-4 .mp4, FFV1 .mkv and most other
containers). Everything a clip can get wrong (not a video, no frames, no frame rate, too large a
frame, too long) is one `ValueError` line naming the file, never its folder.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import env
from ..io.images import MAX_SIDE

# FFmpeg's own complaints about a broken file would add lines to the one error line (0: panics only).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "0")

# A public server's limits (DINO_DEMO_VIDEO_MAX_SECONDS, _MAX_FRAMES, _MAX_SIDE override them).
PUBLIC_MAX_SECONDS = 20.0
PUBLIC_MAX_FRAMES = 60
PUBLIC_MAX_SIDE = 1280


@dataclass(frozen=True)
class ClipLimits:
    """What a clip may be: at most `max_seconds` long and `max_frames` frames in all, frames at
    most `max_side` pixels on their longer side; `max_processed`: how many frames one run may
    detect (None: no cap beyond the clip's)."""

    max_seconds: float = 3 * 3600.0
    max_frames: int = 324_000          # three hours at 30 frames per second
    max_side: int = MAX_SIDE
    max_processed: int | None = None

    def __post_init__(self) -> None:
        if self.max_seconds <= 0 or self.max_frames < 1 or self.max_side < 8:
            raise ValueError(f"clip limits must be positive, got {self}")
        if self.max_processed is not None and self.max_processed < 1:
            raise ValueError(f"max_processed must be at least 1, got {self.max_processed}")

    @classmethod
    def public(cls) -> "ClipLimits":
        """A public page's limits: short clips, few frames detected, at most HD frames; each can be
        set with DINO_DEMO_VIDEO_MAX_SECONDS, DINO_DEMO_VIDEO_MAX_FRAMES (frames detected) and
        DINO_DEMO_VIDEO_MAX_SIDE."""
        seconds = env.positive_number("DINO_DEMO_VIDEO_MAX_SECONDS", PUBLIC_MAX_SECONDS)
        processed = env.positive_number("DINO_DEMO_VIDEO_MAX_FRAMES", PUBLIC_MAX_FRAMES, integer=True)
        side = env.positive_number("DINO_DEMO_VIDEO_MAX_SIDE", PUBLIC_MAX_SIDE, integer=True)
        # Frames decoded: those of `seconds` at up to 60 frames per second.
        return cls(max_seconds=float(seconds), max_frames=max(int(math.ceil(seconds * 60)), 1),
                   max_side=int(side), max_processed=int(processed))


@dataclass(frozen=True)
class ClipInfo:
    """fps: frames per second; frames: frame count; width, height: frame size in pixels;
    source: the path as given."""

    fps: float
    frames: int
    width: int
    height: int
    source: str

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def time_of(self, index: int) -> float:
        """Seconds from the start to frame `index`, rounded to microseconds."""
        return round(index / self.fps, 6)

    def as_json(self) -> dict:
        return {"fps": round(self.fps, 6), "frames": self.frames, "width": self.width, "height": self.height,
                "source": self.source}


def probe(path: str | Path, limits: ClipLimits = ClipLimits()) -> ClipInfo:
    """What the clip at `path` is, checked against `limits` (ValueError otherwise)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise ValueError(f"{name}: no such file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"{name}: not a video that can be read, or one without frames (MPEG-4 .mp4, "
                             f"FFV1 .mkv, ...)")
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if width < 1 or height < 1:
            raise ValueError(f"{name}: not a video that can be read (no frame size)")
        if max(width, height) > limits.max_side:
            raise ValueError(f"{name}: frames of {width}x{height} pixels are larger than this allows "
                             f"({limits.max_side} pixels on the longer side)")
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            raise ValueError(f"{name}: the clip has no usable frame rate ({fps:g})")
        if count > limits.max_frames or count / fps > limits.max_seconds:
            raise ValueError(f"{name}: the clip is too long ({count} frames, {count / fps:.1f} s; at most "
                             f"{limits.max_frames} frames and {limits.max_seconds:g} s)")
        ok, _ = capture.read()
        if count < 1 or not ok:
            raise ValueError(f"{name}: the clip has no frames")
    finally:
        capture.release()
    return ClipInfo(fps=fps, frames=count, width=width, height=height, source=str(path))


def chosen_frames(info: ClipInfo, every: int = 1, max_frames: int | None = None,
                  limits: ClipLimits = ClipLimits()) -> list[int]:
    """The indices of the frames to detect: every `every`-th from the first, at most `max_frames`
    of them (and at most the limits' `max_processed`: ValueError beyond it)."""
    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, got {max_frames}")
    indices = list(range(0, info.frames, every))[:max_frames]
    if limits.max_processed is not None and len(indices) > limits.max_processed:
        raise ValueError(f"{Path(info.source).name}: {len(indices)} frames to detect, at most "
                         f"{limits.max_processed} here: detect every n-th frame or fewer frames")
    return indices


def read_frames(path: str | Path, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, [H, W, 3] uint8 RGB) of each frame in `indices` (increasing), decoded in order; the
    frames between are skipped without conversion. Stops early if the clip ends sooner than its
    header said."""
    wanted = sorted(set(indices))
    capture = cv2.VideoCapture(str(path))
    try:
        position = 0
        for index in wanted:
            while position < index:
                if not capture.grab():
                    return
                position += 1
            ok, frame = capture.read()
            if not ok:
                return
            position += 1
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def read_frame(path: str | Path, index: int) -> np.ndarray:
    """Frame `index` of the clip at `path` as [H, W, 3] uint8 RGB, decoded as `read_frames` does;
    ValueError (naming the file, not its folder) when the clip is gone or ends before it."""
    if not Path(path).is_file():
        raise ValueError(f"{Path(path).name}: the clip is no longer here: upload it and run it again")
    for _, frame in read_frames(path, [index]):
        return frame
    raise ValueError(f"{Path(path).name}: frame {index} cannot be decoded")
