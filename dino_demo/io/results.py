"""The one results format: `detections.json`, written by the command line, returned by the app's
`/detect` endpoint and offered as the page's download; plus the bare COCO results list derived from
it, which `pycocotools.COCO.loadRes` takes as it is.

detections.json (schema "dino-explorer/detections/1"):

    {
      "schema": "dino-explorer/detections/1",
      "model": {"id": "dino-tiny (shipped)", "variant": "dino-tiny"},
      "settings": {"threshold": 0.3, "max_detections": 100, "max_input_side": null},
      "images": [
        {"image_id": 1, "file_name": "cat.jpg", "source": "photos/cat.jpg",
         "width": 640, "height": 480, "input_size": {"width": 1066, "height": 800},
         "detections": [
           {"label": "cat", "category_id": 17, "score": 0.87012,
            "box_xyxy": [x0, y0, x1, y1], "bbox": [x, y, w, h], "query_slot": 412}, ...]}
      ]
    }

Boxes, `width` and `height` are in the pixels of each image as given (upright: after the EXIF
orientation; an image larger than the loader's limit is run downscaled and its boxes scaled back,
with `input_size` the model's input), `bbox` is COCO's [x, y, width, height] of the same box; `query_slot` is the decoder
query slot (0..num_queries-1) the detection came from; detections are best first. `source` is the
path as given on the command line (absent for uploads), `annotated` the file name of the drawn
copy the command line wrote; `image_id` is unique within the file. `notes`, present only when there
is something to say, lists sentences for the person about that image's result, e.g. that the
shipped model, which knows only eight synthetic shapes, ran on a photo.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA = "dino-explorer/detections/1"


def detection_records(view, scale: tuple[float, float] = (1.0, 1.0)) -> list[dict[str, Any]]:
    """One record per detection of an `runtime.detections.DetectionView` (any object with boxes,
    scores, categories, query_slots and names), boxes multiplied by `scale` (x, y)."""
    records = []
    sx, sy = scale
    for box, score, category, slot, name in zip(view.boxes, view.scores, view.categories, view.query_slots,
                                                view.names):
        x0, y0, x1, y1 = (float(v) * k for v, k in zip(box, (sx, sy, sx, sy)))
        records.append({
            "label": name, "category_id": int(category), "score": round(float(score), 5),
            "box_xyxy": [round(v, 2) for v in (x0, y0, x1, y1)],
            "bbox": [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)],
            "query_slot": int(slot),
        })
    return records


def image_record(result, view, *, image_id: int, file_name: str = "", source: str | None = None,
                 given_size: tuple[int, int] | None = None, notes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The entry of one image: its size as given, the model input size and its detections (`view`,
    an `runtime.detections.DetectionView` of `result`, a `runtime.InferenceResult` or
    `export.runtime.OnnxResult`), in the pixels of the image as given: `given_size` (H, W), else
    the result's `source_size`, is the size before the loader downscaled it (boxes are scaled back).
    `notes`: sentences for the person about this result (the entry's "notes", left out when empty)."""
    ran_h, ran_w = result.size
    height, width = given_size or getattr(result, "source_size", None) or result.size
    record = {"image_id": int(image_id), "file_name": file_name}
    if source is not None:
        record["source"] = source
    record.update({
        "width": width, "height": height,
        "input_size": {"width": int(result.input_size[1]), "height": int(result.input_size[0])},
        "detections": detection_records(view, (width / ran_w, height / ran_h)),
    })
    if notes:
        record["notes"] = list(notes)
    return record


def detections_document(images: list[dict[str, Any]], *, model_id: str, variant: str, threshold: float,
                        max_detections: int | None, max_input_side: int | None) -> dict[str, Any]:
    """The whole detections.json from `image_record` entries and the settings that made them."""
    ids = [image["image_id"] for image in images]
    if len(set(ids)) != len(ids):
        raise ValueError(f"image ids must be unique within a results file, got {ids}")
    return {
        "schema": SCHEMA,
        "model": {"id": model_id, "variant": variant},
        "settings": {"threshold": float(threshold), "max_detections": max_detections,
                     "max_input_side": max_input_side},
        "images": images,
    }


def coco_results(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The bare COCO results list of a detections document: one {"image_id", "category_id",
    "bbox", "score"} per detection, as `COCO.loadRes` takes it."""
    if document.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document (schema {document.get('schema')!r})")
    return [
        {"image_id": image["image_id"], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
        for image in document["images"] for d in image["detections"]
    ]


def coco_image_id(file_name: str, default: int) -> int:
    """COCO's own images are named by their id ("000000039769.jpg" is image 39769): use it, so
    that results line up with COCO annotations; any other name gets `default`."""
    stem = Path(file_name).stem
    return int(stem) if stem.isdigit() and len(stem) <= 12 else default
