"""The video results file: `detections.json` of `python -m dino_demo video` (schema
"dino-explorer/video/1").

    {
      "schema": "dino-explorer/video/1",
      "model": {"id": "dino-tiny (shipped)", "variant": "dino-tiny"},
      "settings": {"threshold": 0.3, "max_detections": null, "max_input_side": null, "every": 1,
                   "max_frames": null, "precision": "float32", "prompt": null},
      "video": {"fps": 25.0, "frames": 250, "width": 640, "height": 360, "source": "clips/street.mp4"},
      "annotated": "street.annotated.mp4",
      "frames": [
        {"index": 0, "time_s": 0.0,
         "detections": [
           {"label": "car", "category_id": 3, "score": 0.87012, "box_xyxy": [x0, y0, x1, y1],
            "bbox": [x, y, w, h], "query_slot": 412, "track_id": 1}, ...],
         "internals": "street.000000.internals.npz"}, ...
      ]
    }

Each frame's detections are the records of the image results format (`dino_demo.io.results`,
the same writer as `detect`'s), in the pixels of the frame, best first, each with the id of the
track it belongs to (`dino_demo.video.tracking`; null when the tracker matched it to no track,
e.g. an object in the first frame it appears in after the clip's first frame). `frames` lists the
detected frames in order (`index` counts from 0 in the clip; `time_s` is index / fps); `internals`
(with `--save-internals`) names the frame's internals file (`dino_demo.io.internals`).
"""
from __future__ import annotations

from typing import Any

from .clip import ClipInfo

SCHEMA = "dino-explorer/video/1"


def frame_record(index: int, time_s: float, detections: list[dict[str, Any]], track_ids: list[int | None],
                 internals: str | None = None) -> dict[str, Any]:
    """One detected frame: its detection records (`io.results.detection_records`) with their track ids."""
    if len(detections) != len(track_ids):
        raise ValueError(f"{len(detections)} detections but {len(track_ids)} track ids")
    record = {"index": int(index), "time_s": float(time_s),
              "detections": [{**d, "track_id": track} for d, track in zip(detections, track_ids)]}
    if internals is not None:
        record["internals"] = internals
    return record


def video_document(info: ClipInfo, frames: list[dict[str, Any]], *, model_id: str, variant: str,
                   settings: dict[str, Any], annotated: str | None) -> dict[str, Any]:
    """The whole file from `frame_record` entries (in clip order) and the settings that made them."""
    indices = [frame["index"] for frame in frames]
    if indices != sorted(set(indices)):
        raise ValueError("frames must be in clip order, each once")
    document = {"schema": SCHEMA, "model": {"id": model_id, "variant": variant}, "settings": dict(settings),
                "video": info.as_json()}
    if annotated is not None:
        document["annotated"] = annotated
    document["frames"] = frames
    return document
