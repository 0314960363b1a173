"""Ground-truth boxes given by a user: the BOXES.json document of `python -m dino_demo denoise`, a
COCO annotation file, or lines typed on the page.

BOXES.json is ``{"boxes": [{"bbox": [x, y, w, h], "category_id": k}, ...]}`` in the image's pixels
(COCO's convention: top-left corner, width, height). `category_id` is a category of the model's
numbering (`io.labels.category_ids`: for the released COCO models the COCO category id, which is
also the class id). A COCO annotation file (``{"images": [...], "annotations": [...]}``) gives
the annotations of the image whose `file_name` matches, or of its only image. Typed lines read
``x y w h category_id`` (commas allowed), or are a BOXES.json text.

`GroundTruth.targets` turns them into the official targets: class ids, and boxes normalized cxcywh
by the image's own width and height.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

MAX_BOXES = 500
MAX_DOCUMENT_BYTES = 20_000_000


@dataclass(frozen=True)
class GroundTruth:
    """labels: [n] int64 class ids of the model; boxes_xywh: [n, 4] float64 (x, y, w, h) in the
    pixels of an image of `image_size` (H, W), clipped to it."""

    labels: np.ndarray
    boxes_xywh: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def targets(self) -> dict[str, torch.Tensor]:
        """The official target of the image: `labels` [n] int64, `boxes` [n, 4] float32 normalized
        (cx, cy, w, h) by the image's own width and height."""
        height, width = self.image_size
        x, y, w, h = self.boxes_xywh.T if len(self) else np.zeros((4, 0))
        boxes = np.stack([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height], -1)
        return {"labels": torch.from_numpy(self.labels.astype(np.int64)),
                "boxes": torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4)}

    def boxes_xyxy(self) -> np.ndarray:
        """[n, 4] (x0, y0, x1, y1) pixels."""
        b = self.boxes_xywh.reshape(-1, 4)
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], -1)


def ground_truth(entries: list[tuple[list[float], int]], image_size: tuple[int, int],
                 category_ids: tuple[int, ...]) -> GroundTruth:
    """GroundTruth of (bbox [x, y, w, h] pixels, category id) pairs for an image of `image_size`
    (H, W), with `category_ids` the model's category id of each class id."""
    if len(entries) > MAX_BOXES:
        raise ValueError(f"at most {MAX_BOXES} boxes per image, got {len(entries)}")
    class_of = {int(c): i for i, c in enumerate(category_ids)}
    height, width = image_size
    labels, boxes = [], []
    for n, (bbox, category) in enumerate(entries):
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise ValueError(f"box {n}: bbox must be four numbers [x, y, w, h], got {bbox!r:.80}")
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise ValueError(f"box {n}: width and height must be >= 0, got {w}, {h}")
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if isinstance(category, bool) or not isinstance(category, int) or category not in class_of:
            raise ValueError(f"box {n}: category_id {category!r:.40} is not one of the model's "
                             f"({min(class_of)}..{max(class_of)})")
        labels.append(class_of[category])
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    return GroundTruth(np.array(labels, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4),
                       (int(height), int(width)))


def boxes_from_document(document, image_size: tuple[int, int], category_ids: tuple[int, ...],
                        file_name: str = "") -> GroundTruth:
    """GroundTruth of a parsed BOXES.json or COCO annotation document (see the module docstring)."""
    if not isinstance(document, dict):
        raise ValueError("a boxes document must be a JSON object with 'boxes' (or a COCO file with 'annotations')")
    if "boxes" in document:
        items = document["boxes"]
    elif "annotations" in document:
        items = _coco_annotations(document, file_name)
    else:
        raise ValueError("a boxes document needs a 'boxes' list (or 'images' and 'annotations', COCO)")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("'boxes' must be a list of {\"bbox\": [x, y, w, h], \"category_id\": k}")
    try:
        entries = [(item["bbox"], item["category_id"]) for item in items]
    except KeyError as missing:
        raise ValueError(f"every box needs 'bbox' and 'category_id' (missing {missing})") from None
    return ground_truth(entries, image_size, category_ids)


def read_boxes_text(text: str, image_size: tuple[int, int], category_ids: tuple[int, ...],
                    file_name: str = "") -> GroundTruth:
    """GroundTruth of a BOXES.json / COCO text, or of lines ``x y w h category_id``."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"the boxes text is larger than {MAX_DOCUMENT_BYTES} bytes")
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"the boxes are not valid JSON: {error}") from None
        return boxes_from_document(document, image_size, category_ids, file_name)
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            x, y, w, h = (float(v) for v in fields[:4])
            category = int(fields[4])
        except (ValueError, IndexError):
            raise ValueError(f"line {number}: expected 'x y w h category_id', got {line!r:.80}") from None
        if len(fields) != 5:
            raise ValueError(f"line {number}: expected 5 values 'x y w h category_id', got {len(fields)}")
        entries.append(([x, y, w, h], category))
    return ground_truth(entries, image_size, category_ids)


def boxes_text(truth: GroundTruth, category_ids: tuple[int, ...]) -> str:
    """`truth` as typed lines (``x y w h category_id``, one decimal)."""
    return "\n".join(f"{x:.1f} {y:.1f} {w:.1f} {h:.1f} {category_ids[int(label)]}"
                     for (x, y, w, h), label in zip(truth.boxes_xywh, truth.labels))


def _coco_annotations(document: dict, file_name: str) -> list:
    images = document.get("images") or []
    annotations = document.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError("a COCO file needs 'images' and 'annotations' lists")
    matching = [im for im in images if isinstance(im, dict) and file_name and im.get("file_name") == file_name]
    if not matching and len(images) == 1 and isinstance(images[0], dict):
        matching = images
    if not matching:
        raise ValueError(f"the COCO file has {len(images)} images and none is named {file_name!r}: "
                         "name the image as in its 'file_name'")
    image_id = matching[0].get("id")
    return [a for a in annotations if isinstance(a, dict) and a.get("image_id") == image_id]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
