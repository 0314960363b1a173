"""DINO's set criterion on hand-made outputs."""
import pytest
import torch

from dino_demo.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from dino_demo.model.outputs import DenoisingOutput, DINOOutput, EncoderSelection
from dino_demo.train.criterion import SetCriterion, build_criterion, sigmoid_focal_loss
from dino_demo.train.matcher import HungarianMatcher

C = 3


def _output(logits: torch.Tensor, boxes: torch.Tensor, denoising: DenoisingOutput | None = None) -> DINOOutput:
    """A DINOOutput whose every layer and the encoder selection carry the same prediction."""
    k, b, q, _ = logits.shape
    selection = EncoderSelection(
        topk_indices=torch.zeros(b, q, dtype=torch.int64), levels=torch.zeros(b, q, dtype=torch.int64),
        cells=torch.zeros(b, q, 2, dtype=torch.int64), proposals=boxes[0], boxes=boxes[0], logits=logits[0],
        max_logit=torch.zeros(b, q))
    empty = torch.zeros(0)
    return DINOOutput(logits=logits, boxes=boxes, references=empty, decoder_features=empty, memory=empty,
                      spatial_shapes=empty, level_start_index=empty, valid_ratios=empty, padding_mask=empty,
                      selection=selection, denoising=denoising)


def _targets():
    return [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.1], [0.6, 0.7, 0.3, 0.4]])},
            {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


def _perfect(targets, num_queries=5, layers=2):
    logits = torch.full((layers, len(targets), num_queries, C), -10.0)
    boxes = torch.full((layers, len(targets), num_queries, 4), 0.05)
    boxes[..., :2] = 0.9
    for i, t in enumerate(targets):
        n = len(t["labels"])
        logits[:, i, torch.arange(n), t["labels"]] = 10.0
        boxes[:, i, :n] = t["boxes"]
    return logits, boxes


def test_perfect_prediction_has_zero_box_loss_and_tiny_class_loss():
    targets = _targets()
    logits, boxes = _perfect(targets)
    losses = build_criterion(C)(_output(logits, boxes), targets)
    assert set(losses) == {f"loss_{t}{s}" for t in ("ce", "bbox", "giou") for s in ("", "_0", "_interm")}
    # The official GIoU keeps 1e-6 in its denominators: a perfect box loses 1 - a / (a + 1e-6).
    areas = [0.2 * 0.1, 0.3 * 0.4, 0.4 * 0.4]
    giou_loss = sum(1 - a / (a + 1e-6) for a in areas) / len(areas)
    for key, value in losses.items():
        if "ce" in key:
            assert value.item() < 1e-3, key
        elif "giou" in key:
            assert value.item() == pytest.approx(giou_loss, rel=0.02), key
        else:
            assert abs(value.item()) < 1e-6, key


def test_giou_loss_is_the_official_formula():
    """1 - GIoU with the official 1e-6 in both denominators, hand-computed in float64."""
    prediction = torch.tensor([[0.02, 0.02, 0.04, 0.04]])  # cxcywh: x 0..0.04
    target = torch.tensor([[0.03, 0.03, 0.04, 0.04]])      # x 0.01..0.05: overlap 0.03 x 0.03
    inter, area = 0.03 * 0.03, 0.04 * 0.04
    union, enclosing = 2 * area - inter, 0.05 * 0.05
    official = inter / (union + 1e-6) - (enclosing - union) / (enclosing + 1e-6)
    without_eps = inter / union - (enclosing - union) / enclosing
    assert abs(official - without_eps) > 1e-4  # the term matters at this box size
    targets = [{"labels": torch.tensor([0]), "boxes": target}]
    logits = torch.full((1, 1, 1, C), -10.0)
    logits[..., 0] = 10.0
    losses = build_criterion(C)(_output(logits, prediction[None, None]), targets)
    assert losses["loss_giou"].item() == pytest.approx(1 - official, abs=1e-6)


def test_zero_area_boxes_are_matched_and_score_giou_zero():
    """A zero-area prediction equal to a zero-area target is 0/0 without the official 1e-6."""
    point = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert generalized_box_iou(box_cxcywh_to_xyxy(point), box_cxcywh_to_xyxy(point)).item() == 0.0
    targets = [{"labels": torch.tensor([1]), "boxes": point}]
    boxes = torch.tensor([[[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.0, 0.0]]]])
    logits = torch.zeros(1, 1, 2, C)
    assert HungarianMatcher()(logits[0], boxes[0], targets)[0][0].tolist() == [1]
    losses = build_criterion(C)(_output(logits, boxes), targets)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == pytest.approx(1.0)


def test_query_permutation_does_not_change_losses():
    torch.manual_seed(0)
    targets = _targets()
    logits = torch.randn(2, 2, 6, C)
    boxes = torch.rand(2, 2, 6, 4) * 0.4 + 0.2
    perm = torch.randperm(6)
    criterion = build_criterion(C)
    a = criterion(_output(logits, boxes), targets)
    b = criterion(_output(logits[:, :, perm], boxes[:, :, perm]), targets)
    for key in a:
        assert torch.isclose(a[key], b[key], atol=1e-5), key


def test_empty_targets_only_push_scores_down():
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    logits = torch.zeros(1, 1, 4, C, requires_grad=True)
    boxes = torch.rand(1, 1, 4, 4) * 0.3 + 0.3
    losses = build_criterion(C)(_output(logits, boxes), targets)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    # num_boxes clamps to 1: the focal loss of every logit at 0 against "no object", summed.
    expected = 0.75 * 0.25 * torch.log(torch.tensor(2.0)) * 4 * C
    assert torch.isclose(losses["loss_ce"], expected)
    build_criterion(C).total(losses).backward()
    assert (logits.grad > 0).all()


def test_focal_loss_matches_definition():
    logits = torch.tensor([1.5, -0.5])
    targets = torch.tensor([1.0, 0.0])
    p = logits.sigmoid()
    expected = torch.stack([0.25 * (1 - p[0]) ** 2 * -torch.log(p[0]), 0.75 * p[1] ** 2 * -torch.log(1 - p[1])])
    assert torch.allclose(sigmoid_focal_loss(logits, targets), expected)


def test_denoising_positives_use_their_own_target_and_negatives_no_object():
    targets = _targets()
    logits, boxes = _perfect(targets)
    groups, max_targets = 2, 2
    pad = groups * 2 * max_targets
    dn_logits = torch.full((2, 2, pad, C), -10.0)
    dn_boxes = torch.full((2, 2, pad, 4), 0.5)
    for i, t in enumerate(targets):
        for g in range(groups):
            for j, (label, box) in enumerate(zip(t["labels"], t["boxes"])):
                dn_logits[:, i, g * 2 * max_targets + j, label] = 10.0
                dn_boxes[:, i, g * 2 * max_targets + j] = box
    denoising = DenoisingOutput(dn_logits, dn_boxes, pad, groups, max_targets, torch.zeros(0, dtype=torch.bool),
                                references=dn_boxes, queries=None)
    criterion = build_criterion(C)
    matches = SetCriterion.denoising_matches(denoising, targets)
    assert matches[0][0].tolist() == [0, 1, 4, 5] and matches[0][1].tolist() == [0, 1, 0, 1]
    assert matches[1][0].tolist() == [0, 4] and matches[1][1].tolist() == [0, 0]
    losses = criterion(_output(logits, boxes, denoising), targets)
    for key in ("loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0"):
        assert losses[key].item() < 1e-3, key
    # A negative query (slot max_targets) that claims a class is penalised; its box is not.
    dn_logits[:, 0, max_targets, 1] = 10.0
    dn_boxes[:, 0, max_targets] = 0.9
    worse = criterion(_output(logits, boxes, denoising), targets)
    assert worse["loss_ce_dn"] > 1.0
    assert worse["loss_bbox_dn"].item() < 1e-6


def test_total_uses_official_weights():
    losses = {"loss_ce": torch.tensor(1.0), "loss_bbox_2": torch.tensor(1.0), "loss_giou_interm": torch.tensor(1.0),
              "loss_giou_dn_0": torch.tensor(1.0)}
    assert build_criterion(C).total(losses).item() == 1 + 5 + 2 + 2
