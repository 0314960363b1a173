"""Misses and false alarms explained (explore/diagnosis.py, explore/compare.py): the matching rule
and every verdict and kind on results built by hand, tensor by tensor."""
import math

import numpy as np
import pytest
import torch

from dino_demo.explore.analysis import GroundTruth
from dino_demo.explore.compare import compare_detections
from dino_demo.explore.diagnosis import diagnose_image, diagnose_region, match
from dino_demo.runtime import InferenceResult
from dino_demo.explore.draw.data import detection_view
from dino_demo.model.outputs import DINOOutput, EncoderSelection
from dino_demo.model.postprocess import postprocess

SIZE = 100            # square images of 100 x 100 pixels
CLASSES = ("a", "b", "c")
CATEGORIES = (1, 2, 3)
FAR = [95.0, 95.0, 99.0, 99.0]   # where unused queries sit, with scores near 0
LAYERS = 2


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _cxcywh(box) -> list[float]:
    x0, y0, x1, y1 = (v / SIZE for v in box)
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


def make_result(queries: list[tuple[list[float], dict[int, float]]], anchors: list[list[float]] | None = None,
                encoder_scores: list[float] | None = None) -> InferenceResult:
    """A result whose query q ends with box queries[q][0] (xyxy pixels) and class probabilities
    queries[q][1] ({class: p}, others 0.001), starting from anchors[q] (default: its final box)
    with encoder score encoder_scores[q]; earlier layers' boxes are halfway from the anchor."""
    q = len(queries)
    final = torch.tensor([_cxcywh(box) for box, _ in queries], dtype=torch.float32)
    anchor = torch.tensor([_cxcywh(a) for a in (anchors or [box for box, _ in queries])], dtype=torch.float32)
    probabilities = torch.full((q, len(CLASSES)), 0.001)
    for i, (_, scores) in enumerate(queries):
        for c, p in scores.items():
            probabilities[i, c] = p
    logits = torch.log(probabilities / (1 - probabilities))
    boxes = torch.stack([(anchor + final) / 2, final])[:, None]                  # [K, 1, Q, 4]
    enc = torch.tensor(encoder_scores or [0.5] * q)
    enc_logits = torch.log(enc / (1 - enc))[:, None].expand(q, len(CLASSES)).clone()
    output = DINOOutput(
        logits=torch.stack([logits, logits])[:, None], boxes=boxes,
        references=torch.stack([anchor, (anchor + final) / 2, final])[:, None],
        decoder_features=torch.zeros(1, q, 8), memory=torch.zeros(1, 4, 8),
        spatial_shapes=torch.tensor([[2, 2]]), level_start_index=torch.tensor([0]),
        valid_ratios=torch.ones(1, 1, 2), padding_mask=torch.zeros(1, 4, dtype=torch.bool),
        selection=EncoderSelection(
            topk_indices=torch.arange(q)[None] % 4, levels=torch.zeros(1, q, dtype=torch.int64),
            cells=torch.zeros(1, q, 2, dtype=torch.int64), proposals=anchor[None], boxes=anchor[None],
            logits=enc_logits[None], max_logit=torch.zeros(1, 4)))
    detections = postprocess(output.pred_logits, output.pred_boxes, torch.tensor([[SIZE, SIZE]]), 300)[0]
    return InferenceResult(image=None, image_size=(SIZE, SIZE), input_size=(SIZE, SIZE), padded_size=(SIZE, SIZE),
                           detections=detections, output=output, timings={}, backend=("reference", ""), device="cpu",
                           class_names=CLASSES, category_ids=CATEGORIES)


def unused(n: int) -> list[tuple[list[float], dict[int, float]]]:
    return [(FAR, {})] * n


def test_matching_is_greedy_best_first_to_the_highest_iou():
    truth = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    # Detection 0 (0.9) overlaps truth 1 more than truth 0: it takes truth 1; detection 1 (0.8)
    # would prefer truth 1 too, but it is taken: truth 0.
    boxes = np.array([[1.5, 0, 11.5, 10], [1.8, 0, 11.8, 10], [0, 0, 10, 10]], float)
    matching = match(boxes, np.array([0.9, 0.8, 0.7]), np.array([1, 1, 1]), truth, np.array([1, 1]))
    assert matching.detection_truth.tolist() == [1, 0, -1]
    assert matching.truth_detection.tolist() == [1, 0]
    # Another category never matches; an IoU under 0.5 never matches; a lower score goes later.
    matching = match(boxes, np.array([0.7, 0.8, 0.9]), np.array([2, 1, 1]), truth, np.array([1, 1]))
    assert matching.detection_truth.tolist() == [-1, 1, 0]
    far = match(np.array([[6, 0, 16, 10]], float), np.array([0.9]), np.array([1]), truth[:1], np.array([1]))
    assert far.detection_truth.tolist() == [-1] and far.false_negatives.tolist() == [0]


def test_crowd_annotations_take_no_part():
    truth = GroundTruth.of([
        {"id": 5, "bbox": [0, 0, 10, 20], "category_id": 1, "iscrowd": 0, "area": 150.0},
        {"id": 6, "bbox": [0, 0, 50, 50], "category_id": 1, "iscrowd": 1}])
    assert truth.annotation_ids.tolist() == [5]
    assert truth.boxes.tolist() == [[0, 0, 10, 20]] and truth.areas.tolist() == [150.0]


def test_a_box_no_proposal_comes_near():
    result = make_result([([10, 10, 30, 30], {0: 0.9})] + unused(3))
    region = diagnose_region(result, [60, 10, 80, 30], 0, 0.3)
    assert region.verdict == "no_proposal"
    assert region.summary.startswith("no proposal near it")
    assert region.proposals[0].iou < 0.3 and region.queries[0].iou < 0.3


def test_detected_region_and_its_nearest_queries():
    result = make_result([([10, 10, 30, 30], {0: 0.9}), ([12, 10, 32, 30], {0: 0.2})] + unused(2),
                         encoder_scores=[0.4, 0.7, 0.1, 0.1])
    region = diagnose_region(result, [10, 10, 30, 30], 0, 0.3)
    assert region.verdict == "detected" and region.detection == 0
    assert [q.query_slot for q in region.queries[:2]] == [0, 1]
    assert region.queries[0].iou == pytest.approx(1.0, abs=1e-6)
    assert region.queries[1].class_score == pytest.approx(0.2, abs=1e-6)
    assert region.queries[0].layer_boxes.shape == (LAYERS + 1, 4)
    # Slot 1's proposal has the best encoder score: rank 0 of the four.
    assert {p.query_slot: p.rank for p in region.proposals}[1] == 0
    assert {p.query_slot: p.rank for p in region.proposals}[0] == 1


def test_a_duplicate_suppresses_a_neighbour_and_is_a_duplicate_false_alarm():
    # Two objects of class a side by side; one strong query covers the first and half the second;
    # the query sitting on the second scores low. A second, weaker detection on the first object
    # is a duplicate false alarm.
    truth = np.array([[10, 10, 40, 40], [25, 10, 55, 40]], float)
    result = make_result([([10, 10, 45, 40], {0: 0.9}), ([26, 10, 55, 40], {0: 0.05}),
                          ([11, 10, 40, 41], {0: 0.6})] + unused(1))
    diagnosis = diagnose_image(result, truth, np.array([1, 1]), 0.3)
    assert diagnosis.missed == (1,)
    assert diagnosis.misses[0].verdict == "duplicate"
    assert [(a.kind, a.query_slot, a.truth) for a in diagnosis.false_alarms] == [("duplicate", 2, 0)]


def test_a_wrong_class_is_a_confused_false_alarm_and_a_low_score_miss():
    truth = np.array([[10, 10, 40, 40]], float)
    result = make_result([([10, 10, 40, 40], {1: 0.8, 0: 0.02})] + unused(3))
    diagnosis = diagnose_image(result, truth, np.array([1]), 0.3, ("a",))
    assert diagnosis.misses[0].verdict == "low_score"
    assert diagnosis.misses[0].nearest.query_slot == 0
    alarm = diagnosis.false_alarms[0]
    assert alarm.kind == "confused_class" and alarm.truth == 0 and alarm.iou == pytest.approx(1.0, abs=1e-6)
    assert "best overlap: a at IoU 1.00" in alarm.summary


def test_a_shifted_box_is_poor_localisation_and_a_box_off_miss():
    truth = np.array([[10, 10, 40, 40]], float)
    result = make_result([([24, 10, 54, 40], {0: 0.8})] + unused(3), anchors=[[12, 10, 42, 40]] + [FAR] * 3)
    diagnosis = diagnose_image(result, truth, np.array([1]), 0.3)
    assert 0.3 <= diagnosis.matching.ious[0, 0] < 0.5
    assert diagnosis.misses[0].verdict == "box_off"
    alarm = diagnosis.false_alarms[0]
    assert alarm.kind == "poor_localisation"
    # The per-layer view: the proposal fit the object, the layers moved the box off it.
    assert alarm.layer_ious[0] > 0.8 > alarm.layer_ious[1] > alarm.layer_ious[2]


def test_right_box_below_the_threshold_and_background_false_alarms():
    truth = np.array([[10, 10, 40, 40]], float)
    result = make_result([([10, 10, 40, 40], {0: 0.2}), ([70, 70, 90, 90], {2: 0.7})] + unused(2))
    diagnosis = diagnose_image(result, truth, np.array([1]), 0.3)
    assert diagnosis.misses[0].verdict == "below_threshold"
    assert [a.kind for a in diagnosis.false_alarms] == ["background"]
    assert diagnosis.false_alarms[0].truth is None
    # A category the model does not know.
    unknown = diagnose_image(result, truth, np.array([99]), 0.3)
    assert unknown.misses[0].verdict == "unknown_class"


def test_a_query_with_the_class_but_a_poor_box_is_box_off_even_when_a_box_fits():
    truth = np.array([[10, 10, 40, 40]], float)
    result = make_result([([10, 10, 40, 40], {0: 0.05}), ([22, 10, 52, 40], {0: 0.9})] + unused(2))
    diagnosis = diagnose_image(result, truth, np.array([1]), 0.3)
    assert diagnosis.misses[0].verdict == "box_off"
    assert "slot 1 scores" in diagnosis.misses[0].summary


def test_region_boxes_are_checked():
    result = make_result([([10, 10, 30, 30], {0: 0.9})] + unused(1))
    for bad in ([5, 5, 5, 9], [120, 0, 130, 10], [0, 0, float("nan"), 4], "x"):
        with pytest.raises(ValueError):
            diagnose_region(result, bad, 0, 0.3)
    with pytest.raises(ValueError):
        diagnose_region(result, [0, 0, 10, 10], 7, 0.3)


def test_two_models_matched_to_each_other():
    a = make_result([([10, 10, 40, 40], {0: 0.9}), ([60, 60, 90, 90], {1: 0.8})] + unused(2))
    b = make_result([([11, 10, 40, 41], {0: 0.7}), ([60, 60, 90, 90], {2: 0.6}), ([5, 60, 25, 90], {1: 0.5})]
                    + unused(1))
    comparison = compare_detections(detection_view(a, 0.3), detection_view(b, 0.3), 0.3)
    assert [(i, j) for i, j, _ in comparison.pairs] == [(0, 0)]
    assert comparison.only_a == (1,) and comparison.only_b == (1, 2)
    assert comparison.best_iou_a[1] == pytest.approx(1.0, abs=1e-6)   # B put another class there


def test_a_score_just_below_the_threshold_does_not_read_as_the_threshold():
    truth = np.array([[10, 10, 40, 40]], float)
    result = make_result([([10, 10, 40, 40], {0: 0.29996})] + unused(3))
    diagnosis = diagnose_image(result, truth, np.array([1]), 0.3)
    summary = diagnosis.misses[0].summary
    assert diagnosis.misses[0].verdict == "below_threshold" and "threshold 0.30" in summary
    assert "a 0.2999" in summary and "0.300" not in summary
