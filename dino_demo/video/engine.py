"""A clip through the detector in three steps, each usable alone:

1. `detect_frames`: the chosen frames decoded in order and run through the one inference path
   (`Detector.run_batch`, called from `_infer` only), `batch_size` frames at a time; each frame's
   detections above the threshold as the records `detect` writes (`io.results.detection_records`),
   optionally its internals file. Under torchrun each process takes its share (`share`), and
   `distributed.gather` brings the frames together.
2. `track`: track ids for the frames in clip order (`video.tracking.Tracker`).
3. `write_annotated`: the clip decoded again and drawn with the tracked detections (`video.annotate`).

`timings` dicts collect seconds per step ("decode", "model", "track", "draw", "write").
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import Detector
from ..runtime.detections import detection_view
from ..io.results import detection_records
from .annotate import ClipWriter, draw_frame
from .clip import ClipInfo, read_frames
from .document import frame_record
from .tracking import Tracker

PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class VideoSettings:
    """threshold: minimum score; max_detections: per frame (None: all above the threshold);
    max_size: cap on the model input's longer side (None: the model's own resize); precision:
    float32, or bfloat16 / float16 under autocast; prompt: what to detect, for text-prompted
    models; every: detect every n-th frame; max_frames: at most this many frames detected;
    batch_size: frames per model run; internals: keep each frame's internals (its file, or the
    page's views)."""

    threshold: float = 0.3
    max_detections: int | None = None
    max_size: int | None = None
    precision: str = "float32"
    prompt: str | None = None
    every: int = 1
    max_frames: int | None = None
    batch_size: int = 1
    internals: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.max_detections is not None and self.max_detections < 1:
            raise ValueError(f"max detections must be at least 1, got {self.max_detections}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.every < 1 or self.batch_size < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ValueError("every, batch size and max frames must be at least 1")

    def as_json(self) -> dict[str, Any]:
        """The settings as the results file records them."""
        return {"threshold": float(self.threshold), "max_detections": self.max_detections,
                "max_input_side": self.max_size, "every": self.every, "max_frames": self.max_frames,
                "precision": self.precision, "prompt": self.prompt}


@dataclass
class DetectedFrame:
    """One detected frame: its `index` in the clip, `time_s`, its detection `records` (best first)
    and, for the tracker, their boxes [N, 4] xyxy pixels, scores [N] and query slots [N];
    `internals`: the name of its internals file, if one was written."""

    index: int
    time_s: float
    records: list[dict[str, Any]]
    boxes: np.ndarray
    scores: np.ndarray
    query_slots: np.ndarray
    internals: str | None = None


# Called with (frame index, [H, W, 3] frame, InferenceResult, DetectionView) as each frame is done.
OnFrame = Callable[[int, np.ndarray, Any, Any], None]


def _infer(detector: Detector, frames: list[np.ndarray], settings: VideoSettings) -> list:
    """The one call into the inference path: an `InferenceResult` per frame ([H, W, 3] uint8 RGB),
    the frames as one batch (`Detector.run_batch`: DINO pads and runs them together, a
    transformers detector runs them one by one, with the prompt)."""
    return detector.run_batch(frames, prompt=settings.prompt, max_size=settings.max_size,
                              internals=settings.internals, precision=settings.precision)


def internals_name(stem: str, index: int) -> str:
    """The internals file of frame `index` of a clip named `stem`."""
    return f"{stem}.{index:06d}.internals.npz"


def detect_frames(detector: Detector, info: ClipInfo, indices: list[int], settings: VideoSettings, *, model_id: str = "",
                  internals_dir: Path | None = None, on_frame: OnFrame | None = None,
                  timings: dict[str, float] | None = None) -> list[DetectedFrame]:
    """Frames `indices` (increasing) of the clip through the model; with `internals_dir` (and
    `settings.internals`) each frame's internals written there (`internals_name`)."""
    from ..io.internals import write_internals

    timings = {} if timings is None else timings
    detector = detector.named(model_id) if model_id else detector
    stem = Path(info.source).stem
    detected = []
    for batch in _batches(read_frames(info.source, indices), settings.batch_size, timings):
        start = time.perf_counter()
        results = _infer(detector, [frame for _, frame in batch], settings)
        _add(timings, "model", start)
        for (index, frame), result in zip(batch, results):
            view = detection_view(result, settings.threshold, settings.max_detections)
            name = None
            if internals_dir is not None and settings.internals:
                start = time.perf_counter()
                name = internals_name(stem, index)
                write_internals(result, internals_dir / name, source=f"{info.source}#frame={index}")
                _add(timings, "write", start)
            detected.append(DetectedFrame(index, info.time_of(index), detection_records(view),
                                          np.asarray(view.boxes, dtype=np.float64).reshape(-1, 4),
                                          np.asarray(view.scores, dtype=np.float64), np.asarray(view.query_slots),
                                          name))
            if on_frame is not None:
                on_frame(index, frame, result, view)
    return detected


def _decoded(frames: Iterator[tuple[int, np.ndarray]], timings: dict[str, float]):
    """The (index, frame) pairs of `frames`, the time spent decoding them added to timings["decode"]."""
    while True:
        start = time.perf_counter()
        item = next(frames, None)
        _add(timings, "decode", start)
        if item is None:
            return
        yield item


def _batches(frames: Iterator[tuple[int, np.ndarray]], size: int, timings: dict[str, float]):
    """Lists of up to `size` (index, frame) pairs, the decoding time added to timings["decode"]."""
    batch = []
    for item in _decoded(frames, timings):
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def track(frames: list[DetectedFrame], info: ClipInfo, settings: VideoSettings,
          timings: dict[str, float] | None = None) -> list[list[int | None]]:
    """Track ids of every frame's records, the frames taken in clip order."""
    start = time.perf_counter()
    tracker = Tracker(settings.threshold, info.fps / settings.every)
    ids = [tracker.update(f.boxes, f.scores, f.query_slots) for f in sorted(frames, key=lambda f: f.index)]
    if timings is not None:
        _add(timings, "track", start)
    order = {f.index: i for i, f in enumerate(sorted(frames, key=lambda f: f.index))}
    return [ids[order[f.index]] for f in frames]


def frame_records(frames: list[DetectedFrame], track_ids: list[list[int | None]]) -> list[dict[str, Any]]:
    """The results file's `frames` (`document.frame_record`), in clip order."""
    pairs = sorted(zip(frames, track_ids), key=lambda pair: pair[0].index)
    return [frame_record(f.index, f.time_s, f.records, ids, f.internals) for f, ids in pairs]


def write_annotated(info: ClipInfo, records: list[dict[str, Any]], path: Path,
                    timings: dict[str, float] | None = None) -> Path:
    """The detected frames (`frame_records`) drawn and written as an .mp4 at the rate they were
    detected at (the clip's fps divided by the step between them)."""
    timings = {} if timings is None else timings
    by_index = {r["index"]: r["detections"] for r in records}
    indices = sorted(by_index)
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    with ClipWriter(path, info.fps / step, (info.height, info.width)) as writer:
        for index, frame in _decoded(read_frames(info.source, indices), timings):
            start = time.perf_counter()
            drawn = draw_frame(frame, by_index[index])
            _add(timings, "draw", start)
            start = time.perf_counter()
            writer.write(drawn)
            _add(timings, "write", start)
    return path


def _add(timings: dict[str, float], step: str, start: float) -> None:
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


@dataclass
class FrameRate:
    """Frames per second of a run from its timings: `frames` detected in `seconds` of wall time."""

    frames: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(self.timings.items()))
        rate = self.frames / self.seconds if self.seconds > 0 else float("nan")
        return f"{self.frames} frames in {self.seconds:.1f} s: {rate:.2f} frames per second ({steps})"
