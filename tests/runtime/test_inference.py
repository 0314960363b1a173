import dataclasses
import json

import numpy as np
import pytest
import torch

from dino_demo import get_config
from dino_demo.runtime.dino import run, run_batch
from dino_demo.explore.models import ModelCache, load
from dino_demo.explore.draw.data import (
    DetectionView,
    detection_at,
    detection_view,
    proposal_view,
    refinement_view,
    sampling_view,
)
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
from dino_demo.io.preprocess import model_input_size
from dino_demo.io.results import (
    coco_results,
    detection_records,
    detections_document,
    image_record,
)
from dino_demo.model.detector import build_model


@pytest.fixture(scope="module")
def tiny():
    detector = load("untrained:dino-tiny")
    return detector.model, detector.config


@pytest.fixture(scope="module")
def result(tiny):
    model, cfg = tiny
    image = np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    return run(model, cfg, image, model_id="test")


def test_run_keeps_what_the_explorer_needs(tiny, result):
    _, cfg = tiny
    k, q, m, l, p = cfg.dec_layers, cfg.num_queries, cfg.num_heads, cfg.num_feature_levels, cfg.dec_points
    assert result.size == (64, 96)
    assert result.input_size == model_input_size(cfg, 64, 96) == result.padded_size
    assert len(result.detections) == cfg.num_select
    out = result.output
    assert out.sampling_locations.shape == (k, 1, q, m, l, p, 2)
    assert out.attention_weights.shape == (k, 1, q, m, l, p)
    assert out.references.shape == (k + 1, 1, q, 4)
    assert all(t.device.type == "cpu" for t in (out.logits, out.memory, result.detections.boxes))
    assert set(result.timings) >= {"preprocess", "backbone", "encoder", "decoder", "postprocess", "total"}
    assert result.attention_shape == (m, l, p) and result.num_layers == k
    assert isinstance(result.backend[0], str) and result.backend[1]
    assert result.category_ids == tuple(range(1, 9)) and result.model_id == "test"


def test_model_input_size_follows_the_official_rule():
    r50 = get_config("dino-4scale-r50")
    assert model_input_size(r50, 480, 640) == (800, 1066)
    assert model_input_size(r50, 1000, 4000) == (333, 1332)  # DETR rounding
    assert model_input_size(r50, 480, 640, max_size=512) == (384, 512)
    assert model_input_size(r50, 480, 640, max_size=5000) == (800, 1066)
    tiny = get_config("dino-tiny")
    assert max(model_input_size(tiny, 3000, 4000)) <= tiny.max_size
    with pytest.raises(ValueError, match="aspect ratio"):
        model_input_size(r50, 10, 3000)
    with pytest.raises(ValueError, match="at least"):
        model_input_size(r50, 100, 100, max_size=8)


def test_detections_are_in_original_pixels(result):
    det = result.detections
    q = int(det.query_slot[0])
    cx, cy, w, h = result.output.pred_boxes[0, q].double().tolist()
    height, width = result.size
    expected = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    np.testing.assert_allclose(det.boxes[0].double().numpy(), expected, rtol=1e-5, atol=1e-3)


def test_sampling_points_are_converted_to_original_pixels(result):
    out = result.output
    locations = torch.empty_like(out.sampling_locations)
    locations[..., 0], locations[..., 1] = 0.5, 0.25
    fake = dataclasses.replace(
        result, output=dataclasses.replace(out, sampling_locations=locations),
        image=None, image_size=(100, 200), input_size=(200, 400), padded_size=(300, 400))
    view = sampling_view(fake, query_slot=3, layer=1)
    m, l, p = result.attention_shape
    assert view.points.shape == (m, l, p, 2) and view.weights.shape == (m, l, p)
    # x: 0.5 * padded 400 px -> 200 input px -> 100 original px; y: 0.25 * 300 = 75 -> 37.5.
    np.testing.assert_allclose(view.points[..., 0], 100.0)
    np.testing.assert_allclose(view.points[..., 1], 37.5)


def test_sampling_view_selects_heads_and_levels(result):
    m, l, p = result.attention_shape
    full = sampling_view(result, query_slot=5, layer=2)
    one = sampling_view(result, query_slot=5, layer=2, head=1, level=2)
    assert one.points.shape == (1, 1, p, 2) and one.heads == (1,) and one.levels == (2,)
    np.testing.assert_array_equal(one.points[0, 0], full.points[1, 2])
    np.testing.assert_array_equal(one.weights[0, 0], full.weights[1, 2])
    assert full.mass.shape == (m, l)
    np.testing.assert_allclose(full.mass.sum(1), 1.0, atol=1e-6)
    weights = result.output.attention_weights[2, 0, 5].double()
    np.testing.assert_allclose(full.weights, weights.numpy())
    for bad in ({"slot": 10_000}, {"layer": 3}, {"head": 8}, {"level": -1}, {"slot": 1.5}):
        args = {"slot": 0, "layer": 0, **bad}
        with pytest.raises(ValueError):
            sampling_view(result, args["slot"], args["layer"], args.get("head"), args.get("level"))


def test_refinement_goes_from_the_proposal_to_the_final_box(result):
    det = result.detections
    slot = int(det.query_slot[0])
    stages = refinement_view(result, slot)
    assert stages.shape == (result.num_layers + 1, 4)
    np.testing.assert_allclose(stages[-1], det.boxes[0].double().numpy(), rtol=1e-5, atol=1e-3)
    cx, cy, w, h = result.output.selection.boxes[0, slot].double().tolist()
    height, width = result.size
    np.testing.assert_allclose(stages[0], [(cx - w / 2) * width, (cy - h / 2) * height,
                                           (cx + w / 2) * width, (cy + h / 2) * height], rtol=1e-5, atol=1e-3)


def test_proposals_are_ranked_by_encoder_score(result):
    view = proposal_view(result, 7)
    assert view.boxes.shape == (7, 4) and len(view.query_slots) == 7
    assert (np.diff(view.scores) <= 0).all()
    all_scores = result.output.selection.logits[0].max(-1).values.sigmoid()
    assert view.scores[0] == pytest.approx(float(all_scores.max()))
    assert len(proposal_view(result, 5000).query_slots) == result.num_queries


def test_detection_view_thresholds_and_caps(result):
    scores = result.detections.scores
    threshold = float(scores[4])
    view = detection_view(result, threshold)
    assert len(view) == int((scores >= threshold).sum())
    assert len(detection_view(result, 0.0, 3)) == 3
    records = detection_records(detection_view(result, 0.0, 2))
    assert set(records[0]) == {"label", "category_id", "score", "box_xyxy", "bbox", "query_slot"}
    assert records[0]["query_slot"] == int(result.detections.query_slot[0])


def _view(boxes):
    n = len(boxes)
    return DetectionView(boxes=np.array(boxes, dtype=float), scores=np.linspace(0.9, 0.5, n), labels=np.arange(n),
                         categories=np.arange(n) + 1, query_slots=np.arange(n) * 10, names=tuple("abcdefgh"[:n]))


def test_detection_at_prefers_the_smallest_box_containing_the_click():
    view = _view([[0, 0, 100, 100], [40, 40, 60, 60], [200, 200, 210, 210]])
    assert detection_at(view, 50, 50) == 1
    assert detection_at(view, 10, 10) == 0
    assert detection_at(view, 190, 195) == 2  # outside all: nearest centre
    assert detection_at(_view([]), 1, 1) is None


def test_coco_results_use_xywh_and_category_ids(result):
    entry = image_record(result, _view([[10, 20, 40, 60]]), image_id=7, file_name="a.png")
    document = detections_document([entry], model_id="m", variant="dino-tiny", threshold=0.5, max_detections=None,
                                   max_input_side=None)
    assert coco_results(document) == [{"image_id": 7, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0],
                                       "score": 0.9}]
    assert entry["detections"][0]["box_xyxy"] == [10.0, 20.0, 40.0, 60.0]
    with pytest.raises(ValueError, match="unique"):
        detections_document([entry, entry], model_id="m", variant="v", threshold=0, max_detections=None,
                            max_input_side=None)


def test_model_cache_loads_once_and_evicts():
    cache = ModelCache(capacity=1)
    first = cache.get("untrained:dino-tiny")
    assert cache.get("untrained:dino-tiny") is first
    assert not first.model.training
    with pytest.raises(ValueError, match="unknown variant"):
        cache.get("untrained:no-such-variant")


def test_checkpoint_that_does_not_fit_the_variant_is_refused(tiny, tmp_path):
    path = tmp_path / "tiny.pth"
    with pytest.raises(ValueError, match="inference-only"):
        save_checkpoint(tiny[0], path)  # the loaded model has its BatchNorms folded away
    save_checkpoint(build_model(get_config("dino-tiny")), path)
    with pytest.raises(ValueError, match="does not fit"):
        load(str(path), "dino-4scale-r50")
    detector = load(str(path))
    model, cfg = detector.model, detector.config
    assert cfg.name == "dino-tiny"


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped weights/dino-tiny.pth not present")
def test_shipped_model_finds_the_objects_of_a_synthetic_scene():
    from dino_demo.model.box_ops import box_iou
    from dino_demo.train.synthetic import SceneSpec, generate_scene

    detector = load(str(DEFAULT_CHECKPOINT))

    model, cfg = detector.model, detector.config
    found = total = 0
    for index in (0, 8, 9):
        scene = generate_scene(90210, index, SceneSpec(size=256))
        view = detection_view(run(model, cfg, scene.image), 0.3)
        iou, _ = box_iou(torch.as_tensor(scene.boxes, dtype=torch.float64), torch.as_tensor(view.boxes))
        for t, label in enumerate(scene.labels):
            total += 1
            found += bool(((iou[t] >= 0.5) & torch.as_tensor(view.labels == label)).any())
    assert found >= 0.8 * total, f"found {found} of {total} objects"


def test_detect_command_writes_annotated_images_and_json(tmp_path):
    from PIL import Image

    from dino_demo.cli.detect import main

    rng = np.random.default_rng(1)
    good = tmp_path / "scene.png"
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(good)
    (tmp_path / "other").mkdir()
    same_name = tmp_path / "other" / "scene.png"  # same file name, another folder
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(same_name)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    status = main([str(good), str(bad), str(same_name), "--checkpoint", "untrained:dino-tiny", "--threshold", "0",
                   "--max-detections", "5", "--out", str(out)])
    assert status == 1  # one input was skipped
    document = json.loads((out / "detections.json").read_text())
    assert document["schema"] == "dino-explorer/detections/1"
    assert document["model"] == {"id": "untrained:dino-tiny", "variant": "dino-tiny"}
    assert document["settings"] == {"threshold": 0.0, "max_detections": 5, "max_input_side": None}
    images = document["images"]
    assert [(i["file_name"], i["source"], i["annotated"]) for i in images] == [
        ("scene.png", str(good), "scene.png"), ("scene.png", str(same_name), "scene-1.png")]
    assert len({i["image_id"] for i in images}) == 2
    assert (images[0]["width"], images[0]["height"]) == (80, 48)
    first = images[0]["detections"][0]
    assert set(first) == {"label", "category_id", "score", "box_xyxy", "bbox", "query_slot"}
    assert len(images[0]["detections"]) == 5
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == 10 and set(coco[0]) == {"image_id", "category_id", "bbox", "score"}
    for name, size in (("scene.png", (80, 48)), ("scene-1.png", (40, 40))):
        with Image.open(out / name) as drawn:
            assert drawn.size == size


def test_a_batch_gives_each_image_what_it_gives_alone(tiny):
    model, cfg = tiny
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((64, 96, 3), (80, 48, 3))]
    together = run_batch(model, cfg, images)
    assert [r.size for r in together] == [(64, 96), (80, 48)]
    assert together[0].padded_size == together[1].padded_size == (max(r.input_size[0] for r in together),
                                                                   max(r.input_size[1] for r in together))
    for image, batched in zip(images, together):
        alone = run(model, cfg, image)
        assert batched.output.memory.shape[0] == 1 and batched.output.sampling_locations.shape[1] == 1
        # Padding to the batch size changes the numbers a little (as officially), not the shapes.
        assert batched.output.logits.shape == alone.output.logits.shape
    lean = run_batch(model, cfg, images, internals=False)
    assert lean[0].output is None and len(lean[0].detections) == cfg.num_select
    with pytest.raises(ValueError, match="without internals"):
        lean[0].num_layers


def test_synthetic_examples_are_the_scenes_their_names_say():
    from pathlib import Path

    from PIL import Image

    from dino_demo.train.synthetic import SceneSpec, generate_scene

    examples = Path(__file__).resolve().parents[2] / "examples"
    files = sorted(examples.glob("shapes-90210-*.png"))
    assert files
    for path in files:
        index = int(path.stem.rsplit("-", 1)[1])
        expected = generate_scene(90210, index, SceneSpec(size=256)).image
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), expected)


def test_half_precision_runs_give_float32_outputs_close_to_float32(tiny):
    model, cfg = tiny
    image = np.random.default_rng(5).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    full = run(model, cfg, image)
    half = run(model, cfg, image, precision="bfloat16")  # CPU autocast; on GPUs also float16
    assert half.output.pred_logits.dtype == torch.float32 and half.output.memory.dtype == torch.float32
    assert (half.output.memory - full.output.memory).abs().max() < 0.2
    with pytest.raises(ValueError, match="precision must be one of"):
        run(model, cfg, image, precision="float8")


def test_the_fast_copy_computes_its_resnet_channels_last_under_autocast_only(tiny):
    """The inference copy's ResNet takes channels-last pixels in bfloat16 runs (oneDNN's faster
    layout there) and the default layout in float32 (whose sums the parity tests hold)."""
    model, cfg = tiny
    trunk = model.backbone[0]
    assert trunk.channels_last_under_autocast
    first_conv = next(m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    handle = first_conv.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                         and not args[0].is_contiguous()))
    try:
        image = np.random.default_rng(6).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
        for precision in ("float32", "bfloat16"):
            run(model, cfg, image, precision=precision, internals=False)
    finally:
        handle.remove()
    assert seen == [False, True]
