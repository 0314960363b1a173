"""The shipped offline model (weights/dino-tiny.pth) finds the objects of fresh synthetic scenes
through the normal inference path (checkpoint loader -> resize/normalize -> DINO -> top-k)."""
from pathlib import Path

import pytest
import torch

from dino_demo.runtime.dino import run
from dino_demo.sources.checkpoint import load_model
from dino_demo.model.box_ops import box_iou
from dino_demo.train.synthetic import CLASS_NAMES, SceneSpec, generate_scene

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "dino-tiny.pth"
# Scenes of a seed used neither for training (0), model selection (1000) nor the held-out AP (2000).
TEST_SEED = 4242
NUM_SCENES = 16
# The focal-loss scores of this small model are low; 0.2 keeps recall high with about one
# unmatched detection (mostly a second class on a found object) per four objects.
SCORE_THRESHOLD = 0.2

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="weights/dino-tiny.pth is not in this checkout")


@pytest.fixture(scope="module")
def shipped():
    return load_model(WEIGHTS)


def test_checkpoint_is_small_and_plain_data():
    assert WEIGHTS.stat().st_size <= 15 * 1024 * 1024
    checkpoint = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert checkpoint["variant"] == "dino-tiny"
    assert isinstance(checkpoint["model"], dict) and "transformer.level_embed" in checkpoint["model"]
    assert tuple(checkpoint["config"]["class_names"]) == CLASS_NAMES


def test_loads_as_float32_dino_tiny(shipped):
    model, cfg = shipped
    assert cfg.name == "dino-tiny" and cfg.class_names == CLASS_NAMES
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not model.training


@pytest.mark.slow
def test_finds_the_objects_of_unseen_scenes(shipped):
    model, cfg = shipped
    found = total = false_positives = 0
    for index in range(NUM_SCENES):
        scene = generate_scene(TEST_SEED, index, SceneSpec(size=cfg.min_size))
        detections = run(model, cfg, scene.image).detections.above(SCORE_THRESHOLD)
        truth = torch.as_tensor(scene.boxes)
        total += len(truth)
        if len(detections) == 0:
            continue
        iou = box_iou(truth, detections.boxes.float())[0]
        same_class = torch.as_tensor(scene.labels)[:, None] == detections.labels[None, :]
        hits = (iou >= 0.5) & same_class
        found += int(hits.any(dim=1).sum())
        false_positives += int((~hits.any(dim=0)).sum())
    recall = found / total
    assert total >= 2 * NUM_SCENES
    assert recall >= 0.9, f"recall {recall:.3f} ({found}/{total}) at IoU 0.5, score >= {SCORE_THRESHOLD}"
    assert false_positives <= total, f"{false_positives} unmatched detections for {total} objects"


def test_inference_fast_path_keeps_the_shipped_models_outputs(shipped):
    """The app's fast path (trainable BatchNorm folded into the tiny ResNet, blocked FFNs, packed
    linears) on the shipped model itself, not only on the official R50 layout."""
    from dino_demo.runtime.speed import optimize_for_inference

    model, cfg = shipped
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    for index in range(3):
        image = generate_scene(TEST_SEED, index, SceneSpec(size=256)).image
        plain, quick = run(model, cfg, image), run(fast, cfg, image)
        torch.testing.assert_close(quick.output.memory, plain.output.memory, atol=5e-5, rtol=0)
        assert torch.equal(quick.output.selection.topk_indices, plain.output.selection.topk_indices)
        torch.testing.assert_close(quick.output.pred_logits, plain.output.pred_logits, atol=2e-4, rtol=0)
        torch.testing.assert_close(quick.output.pred_boxes, plain.output.pred_boxes, atol=2e-5, rtol=0)
        top = plain.detections.scores > 0.2
        assert torch.equal(quick.detections.query_slot[top], plain.detections.query_slot[top])
