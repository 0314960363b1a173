"""A whole COCO-format data set through the model: COCO AP (pycocotools, `train.evaluate`), the
detections above a threshold matched to the ground truth (`explore.diagnosis.match`), every miss
with its nearest query and verdict, every false alarm with its kind, per category, per size and
per image (worst first). This is the document `python -m dino_demo analyze` writes as
`analysis.json` and the page's Data set tab reads.

analysis.json (schema "dino-explorer/analysis/1"):

    {
      "schema": "dino-explorer/analysis/1",
      "model": {"id": "dino-tiny.pth", "variant": "dino-tiny"},
      "settings": {"threshold": 0.3, "match_iou": 0.5, "annotations": "val.json", "images": "val/"},
      "summary": {"images": 50, "ground_truth": 210, "detections": 205,
                  "AP": 0.61, "AP50": 0.83, "AP75": ..., "APs": ..., "APm": ..., "APl": ...,
                  "true_positives": 190, "false_positives": 15, "false_negatives": 20,
                  "precision": 0.93, "recall": 0.90,
                  "misses_by_verdict": {"low_score": 8, ...}, "false_alarms_by_kind": {"duplicate": 3, ...}},
      "per_category": [{"category_id": 1, "name": "circle", "ground_truth": 30, "detections": 29,
                        "true_positives": 28, "false_positives": 1, "false_negatives": 2,
                        "precision": 0.97, "recall": 0.93, "AP": 0.7, "AP50": 0.9}, ...],
      "per_size": [{"size": "small", "ground_truth": ..., "detections": ..., "true_positives": ...,
                    "false_positives": ..., "false_negatives": ..., "recall": ...}, ...],
      "images": [                                    # worst first: most misses + false alarms
        {"file_name": "000012.png", "image_id": 13, "width": 256, "height": 256,
         "true_positives": 3,
         "false_negatives": [{"annotation_id": 41, "category_id": 3, "box_xyxy": [x0, y0, x1, y1],
                              "nearest_query": {"query_slot": 17, "iou": 0.62, "score": 0.12},
                              "verdict": "low_score", "explanation": "proposals near but low ..."}],
         "false_positives": [{"query_slot": 4, "category_id": 1, "score": 0.41, "box_xyxy": [...],
                              "kind": "duplicate",
                              "best_ground_truth": {"annotation_id": 40, "category_id": 1, "iou": 0.71},
                              "explanation": "duplicate of a detected object: ..."}]}
      ]
    }

Boxes are in image pixels (xyxy); sizes are COCO's (the annotation's `area`, small < 32², large
>= 96²; a detection's size is its box's area): in `per_size`, `ground_truth`, `true_positives`,
`false_negatives` and `recall` count ground truths by their area, `detections` and
`false_positives` count detections by their box's area (so there is no per-size precision). Crowd annotations (`iscrowd` 1) take no part in
the matching (they are neither found nor missed); COCO AP treats them as pycocotools does.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..io.labels import category_ids
from ..train import distributed
from ..train.data import DetectionSet
from ..train.evaluate import METRIC_NAMES, coco_entries, coco_evaluation
from .diagnosis import FALSE_ALARM_KINDS, MATCH_IOU, VERDICTS, diagnose_image
from ..runtime import Detector, InferenceResult

SCHEMA = "dino-explorer/analysis/1"
SIZES = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, math.inf))


@dataclass(frozen=True)
class GroundTruth:
    """One image's non-crowd annotations: annotation_ids [G], boxes [G, 4] xyxy pixels,
    categories [G] COCO ids, areas [G] (the annotation's `area`, else its box's)."""

    annotation_ids: np.ndarray
    boxes: np.ndarray
    categories: np.ndarray
    areas: np.ndarray

    @classmethod
    def of(cls, annotations: list[dict]) -> "GroundTruth":
        kept = [a for a in annotations if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in kept], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        areas = np.array([float(a.get("area", w * h)) for a, (w, h) in
                          zip(kept, (a["bbox"][2:] for a in kept))], dtype=np.float64)
        return cls(np.array([int(a["id"]) for a in kept], dtype=np.int64), boxes,
                   np.array([int(a["category_id"]) for a in kept], dtype=np.int64), areas)


def annotations_by_image(ground_truth: dict) -> dict[int, list[dict]]:
    """COCO annotations grouped by image id."""
    grouped: dict[int, list[dict]] = {}
    for annotation in ground_truth.get("annotations", []):
        grouped.setdefault(int(annotation["image_id"]), []).append(annotation)
    return grouped


def size_name(area: float) -> str:
    return next(name for name, lo, hi in SIZES if lo <= area < hi)


@dataclass(frozen=True)
class ImageAnalysis:
    """One image's entry of `images` (`record`) and its outcomes for the tables: (category id,
    size name, "tp" / "fn" for a ground truth, "tp" / "fp" for a detection, and whether the item is
    a ground truth)."""

    record: dict
    outcomes: tuple[tuple[int, str, str, bool], ...]


def analyze_image(result: InferenceResult, truth: GroundTruth, threshold: float, *, file_name: str, image_id: int,
                  names: dict[int, str]) -> ImageAnalysis:
    """The entry of one image (`result` with internals) against its ground truth."""
    diagnosis = diagnose_image(result, truth.boxes, truth.categories, threshold,
                               tuple(names.get(int(c), str(int(c))) for c in truth.categories))
    view, matching = diagnosis.view, diagnosis.matching
    misses = []
    for g, region in zip(diagnosis.missed, diagnosis.misses):
        nearest = region.nearest
        misses.append({
            "annotation_id": int(truth.annotation_ids[g]), "category_id": int(truth.categories[g]),
            "box_xyxy": _box(truth.boxes[g]),
            "nearest_query": {"query_slot": nearest.query_slot, "iou": _round(nearest.iou),
                              "score": None if nearest.class_score is None else _round(nearest.class_score)},
            "verdict": region.verdict, "explanation": region.summary,
        })
    alarms = []
    for alarm in diagnosis.false_alarms:
        d = alarm.detection
        best = None if alarm.truth is None else {
            "annotation_id": int(truth.annotation_ids[alarm.truth]),
            "category_id": int(truth.categories[alarm.truth]), "iou": _round(alarm.iou)}
        alarms.append({"query_slot": alarm.query_slot, "category_id": int(view.categories[d]),
                       "score": _round(view.scores[d]), "box_xyxy": _box(view.boxes[d]), "kind": alarm.kind,
                       "best_ground_truth": best, "explanation": alarm.summary})
    height, width = result.size
    record = {"file_name": file_name, "image_id": int(image_id), "width": width, "height": height,
              "true_positives": matching.true_positives, "false_negatives": misses, "false_positives": alarms}
    outcomes = [(int(c), size_name(a), "tp" if matching.truth_detection[g] >= 0 else "fn", True)
                for g, (c, a) in enumerate(zip(truth.categories, truth.areas))]
    box_areas = (view.boxes[:, 2] - view.boxes[:, 0]) * (view.boxes[:, 3] - view.boxes[:, 1])
    outcomes += [(int(c), size_name(float(a)), "tp" if matching.detection_truth[d] >= 0 else "fp", False)
                 for d, (c, a) in enumerate(zip(view.categories, box_areas))]
    return ImageAnalysis(record, tuple(outcomes))


def analyze(detector: Detector, dataset: DetectionSet, *, threshold: float,
            file_names: Callable[[int], str], model_id: str = "", settings: dict | None = None,
            batch_size: int = 1, max_size: int | None = None,
            on_image: Callable[[int, int], None] | None = None) -> dict | None:
    """The analysis document of `detector` (a `runtime.Detector`) on `dataset` (a COCO-format set: `image(i)` HxWx3 uint8,
    `image_id(i)`, `ground_truth()`), `file_names(i)` naming image i. Under torch.distributed each
    process runs its share of the images and the main process gets the document (the others None);
    every process must call it. `on_image(done, total)` hears of this process's progress.

    Up to `batch_size` consecutive images of one size run as a batch (default 1, as the official
    evaluation: the numbers then do not depend on how the images are split between processes).
    `settings` are written into the document's settings beside the threshold.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    cfg = detector.config
    ground_truth = dataset.ground_truth()
    grouped = annotations_by_image(ground_truth)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in ground_truth.get("categories", [])}
    if not set(names) & set(category_ids(cfg)):
        raise ValueError(f"none of the data set's category ids {sorted(names)[:10]} is one the model predicts "
                         f"({sorted(set(category_ids(cfg)))[:10]}...)")
    detector.model.eval()
    share = distributed.shard(len(dataset))
    analyses, entries = [], []
    for start in range(0, len(share), batch_size):
        chunk = [(i, dataset.image(i)) for i in share[start:start + batch_size]]
        for _, group in itertools.groupby(chunk, key=lambda item: item[1].shape):
            indices, images = zip(*group)
            results = detector.named(model_id).run_batch(list(images), max_size=max_size, internals=True)
            ids = [dataset.image_id(i) for i in indices]
            entries += coco_entries(results, ids)
            for i, image_id, result in zip(indices, ids, results):
                analyses.append(analyze_image(result, GroundTruth.of(grouped.get(image_id, [])), threshold,
                                              file_name=file_names(i), image_id=image_id, names=names))
        if on_image is not None:
            on_image(min(start + batch_size, len(share)), len(share))
    analyses, entries = distributed.gather(analyses), distributed.gather(entries)
    if not distributed.is_main():
        return None
    return document(analyses, entries, ground_truth, names, threshold=threshold, model_id=model_id,
                    variant=cfg.name, settings=settings or {})


def document(analyses: list[ImageAnalysis], entries: list[dict], ground_truth: dict, names: dict[int, str], *,
             threshold: float, model_id: str, variant: str, settings: dict) -> dict:
    """The analysis document from every image's analysis and COCO results (any order)."""
    evaluator = coco_evaluation(ground_truth, entries)
    metrics = ({name: 0.0 for name in METRIC_NAMES} if evaluator is None else
               {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6])})
    outcomes = [o for a in analyses for o in a.outcomes]
    records = sorted((a.record for a in analyses),
                     key=lambda r: (-(len(r["false_negatives"]) + len(r["false_positives"])), r["file_name"],
                                    r["image_id"]))
    totals = _tally(outcomes)
    verdicts = Counter(m["verdict"] for r in records for m in r["false_negatives"])
    kinds = Counter(f["kind"] for r in records for f in r["false_positives"])
    summary = {
        "images": len(records), "ground_truth": totals["ground_truth"], "detections": totals["detections"],
        **{name: _round(value) for name, value in metrics.items()},
        "true_positives": totals["true_positives"], "false_positives": totals["false_positives"],
        "false_negatives": totals["false_negatives"],
        "precision": _ratio(totals["true_positives"], totals["detections"]),
        "recall": _ratio(totals["true_positives"], totals["ground_truth"]),
        "misses_by_verdict": {v: verdicts[v] for v in VERDICTS if verdicts[v]},
        "false_alarms_by_kind": {k: kinds[k] for k in FALSE_ALARM_KINDS if kinds[k]},
    }
    category_ap = _category_ap(evaluator)
    per_category = []
    for category in sorted(names):
        tally = _tally([o for o in outcomes if o[0] == category])
        per_category.append({"category_id": category, "name": names[category], **tally,
                             "precision": _ratio(tally["true_positives"], tally["detections"]),
                             "recall": _ratio(tally["true_positives"], tally["ground_truth"]),
                             "AP": category_ap.get(category, (None, None))[0],
                             "AP50": category_ap.get(category, (None, None))[1]})
    per_size = []
    for name, _, _ in SIZES:
        tally = _tally([o for o in outcomes if o[1] == name])
        per_size.append({"size": name, **tally, "recall": _ratio(tally["true_positives"], tally["ground_truth"])})
    return {"schema": SCHEMA, "model": {"id": model_id, "variant": variant},
            "settings": {"threshold": float(threshold), "match_iou": MATCH_IOU, **settings},
            "summary": summary, "per_category": per_category, "per_size": per_size, "images": records}


def _tally(outcomes: list[tuple[int, str, str, bool]]) -> dict[str, int]:
    truth = [o for o in outcomes if o[3]]
    detections = [o for o in outcomes if not o[3]]
    return {"ground_truth": len(truth), "detections": len(detections),
            "true_positives": sum(o[2] == "tp" for o in truth),
            "false_positives": sum(o[2] == "fp" for o in detections),
            "false_negatives": sum(o[2] == "fn" for o in truth)}


def _category_ap(evaluator) -> dict[int, tuple[float | None, float | None]]:
    """category id -> (AP, AP50) from pycocotools' precision curves (None where it has no
    ground truth)."""
    if evaluator is None:
        return {}
    precision = evaluator.eval["precision"]          # [T, R, K, A, M]: IoU, recall, category, area, max dets
    ap = {}
    for k, category in enumerate(evaluator.params.catIds):
        curves = precision[:, :, k, 0, -1]
        all_iou, at_50 = curves[curves > -1], curves[0][curves[0] > -1]
        ap[int(category)] = (_round(float(all_iou.mean())) if all_iou.size else None,
                             _round(float(at_50.mean())) if at_50.size else None)
    return ap


def _round(value: float) -> float:
    return round(float(value), 4)


def _ratio(numerator: int, denominator: int) -> float | None:
    return _round(numerator / denominator) if denominator else None


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in box]
