"""COCO box AP of a DINO model (pycocotools) on a `train.data.DetectionSet` (a COCO-format folder
or held-out synthetic scenes), through the one inference path (`runtime.DINODetector.run_batch`) and
the one results format (`io.results`). Under data-parallel training each process predicts its
share of the images and the main process scores them all (the command: `dino_demo.cli.evaluate`).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..runtime import DINODetector, InferenceResult
from ..runtime.detections import detection_view
from ..io.results import coco_results, detections_document, image_record
from ..model.config import DINOConfig
from . import distributed
from .data import CocoDetectionSet, DetectionSet, SyntheticScenes
from .synthetic import SceneSpec

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def predict(model: torch.nn.Module, cfg: DINOConfig, images: list[np.ndarray], image_ids: list[int],
            batch_size: int = 8) -> list[dict]:
    """COCO results (all `num_select` detections per image, no threshold) for `images`."""
    entries = []
    for start in range(0, len(images), batch_size):
        results = DINODetector(model, cfg).run_batch(images[start:start + batch_size], internals=False)
        entries += coco_entries(results, image_ids[start:start + batch_size])
    return entries


def coco_entries(results: list[InferenceResult], image_ids: list[int]) -> list[dict]:
    """COCO results (all `num_select` detections of each result, no threshold) of inference
    results, through the one results format."""
    records = [image_record(result, detection_view(result, 0.0), image_id=image_id)
               for result, image_id in zip(results, image_ids)]
    document = detections_document(records, model_id="", variant="", threshold=0.0, max_detections=None,
                                   max_input_side=None)
    return coco_results(document)


def coco_box_ap(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of `results` against a COCO ground-truth dict."""
    evaluator = coco_evaluation(ground_truth, results)
    if evaluator is None:
        return {name: 0.0 for name in METRIC_NAMES}
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def coco_evaluation(ground_truth: dict, results: list[dict]) -> COCOeval | None:
    """pycocotools' evaluation of `results`, evaluated, accumulated and summarized (None when
    there are no results): `stats` holds the metrics, `eval["precision"]` the per-category curves."""
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def evaluate(model: torch.nn.Module, cfg: DINOConfig, dataset: DetectionSet, batch_size: int = 8) -> dict[str, float]:
    """COCO box metrics of `model` on `dataset`; the model is left in eval mode. Under
    torch.distributed, every process predicts its share and gets the same metrics back.

    Up to `batch_size` consecutive images of one size run as a batch; images of different sizes
    run apart, since padding them to a common size would change the features next to the padding
    (the official evaluation runs one image at a time)."""
    model.eval()
    share = distributed.shard(len(dataset))
    results = []
    for start in tqdm(range(0, len(share), batch_size), desc="evaluate", unit="batch", leave=False, mininterval=10,
                      disable=not distributed.is_main()):
        chunk = [(i, dataset.image(i)) for i in share[start:start + batch_size]]
        for _, group in itertools.groupby(chunk, key=lambda item: item[1].shape):
            indices, images = zip(*group)
            results += predict(model, cfg, list(images), [dataset.image_id(i) for i in indices], batch_size)
    results = distributed.gather(results)
    return distributed.from_main(coco_box_ap(dataset.ground_truth(), results) if distributed.is_main() else None)
