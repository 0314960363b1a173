"""The denoising run, its file and command, the boxes it reads; the forward-pass trace against the
model's tensors; the query-selection and look-forward-twice views."""
import json

import numpy as np
import pytest
import torch

from dino_demo.cli import main
from dino_demo.explore.denoising import run_denoising
from dino_demo.explore.denoising_figures import mask_picture, render_attention_mask, render_denoising_group
from dino_demo.explore.models import load
from dino_demo.explore.refinement import look_forward_twice, render_look_forward_twice
from dino_demo.explore.selection import level_scores, render_score_maps, render_selection_step, selection_step
from dino_demo.explore.trace import traced_run
from dino_demo.explore.draw.pixels import display_canvas
from dino_demo.io.boxes import boxes_from_document, read_boxes_text
from dino_demo.io.denoising import MEANINGS, read_denoising
from dino_demo.io.images import load_image
from dino_demo.io.labels import category_ids, class_names
from dino_demo.io.preprocess import prepare_batch
from dino_demo.model.denoising import make_denoising_queries
from dino_demo.model.detector import build_model
from dino_demo.paths import PROJECT_ROOT
from dino_demo.runtime.speed import optimize_for_inference

IMAGE = PROJECT_ROOT / "examples" / "shapes-90210-9.png"
BOXES = {"boxes": [{"bbox": [40, 60, 120, 90], "category_id": 1}, {"bbox": [200, 30, 0, 50], "category_id": 3},
                   {"bbox": [150, 150, 80, 80], "category_id": 8}]}


@pytest.fixture(scope="module")
def tiny():
    detector = load("untrained:dino-tiny")
    return detector.model, detector.config


@pytest.fixture(scope="module")
def image():
    return load_image(IMAGE).array


# -- boxes ---------------------------------------------------------------------------------------------

def test_boxes_are_normalized_by_the_images_own_size_and_mapped_to_class_ids():
    truth = boxes_from_document(BOXES, (200, 400), (1, 2, 3, 4, 5, 6, 7, 8))
    target = truth.targets()
    assert target["labels"].tolist() == [0, 2, 7]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([100 / 400, 105 / 200, 120 / 400, 90 / 200]))
    assert target["boxes"][1, 2] == 0  # a degenerate box stays one
    # clipped to the image
    clipped = boxes_from_document({"boxes": [{"bbox": [380, -10, 40, 30], "category_id": 2}]}, (200, 400), (1, 2))
    np.testing.assert_allclose(clipped.boxes_xywh, [[380, 0, 20, 20]])


def test_coco_files_and_typed_lines():
    coco = {"images": [{"id": 4, "file_name": "a.png"}, {"id": 7, "file_name": "b.png"}],
            "annotations": [{"image_id": 7, "bbox": [1, 2, 3, 4], "category_id": 2},
                            {"image_id": 4, "bbox": [5, 5, 5, 5], "category_id": 1}]}
    truth = boxes_from_document(coco, (100, 100), (1, 2), "b.png")
    assert truth.labels.tolist() == [1] and truth.boxes_xywh.tolist() == [[1, 2, 3, 4]]
    with pytest.raises(ValueError, match="none is named"):
        boxes_from_document(coco, (100, 100), (1, 2), "c.png")
    typed = read_boxes_text("# a comment\n1, 2, 3, 4, 2\n10 10 5 5 1\n", (100, 100), (1, 2))
    assert typed.labels.tolist() == [1, 0]
    assert read_boxes_text(json.dumps(BOXES), (300, 300), tuple(range(1, 9))).labels.tolist() == [0, 2, 7]


@pytest.mark.parametrize("text,message", [
    ("1 2 3 4", "expected"), ("1 2 -3 4 1", ">= 0"), ("1 2 3 4 99", "category_id"), ("{nope", "not valid JSON"),
    ('{"boxes": [{"bbox": [1, 2, 3]}]}', "category_id"), ('{"boxes": [{"bbox": [1, 2, 3], "category_id": 1}]}',
                                                          "four numbers"),
    ('{"boxes": [{"bbox": [1, 2, NaN, 3], "category_id": 1}]}', "four numbers"),
    ("\n".join(["1 1 1 1 1"] * 501), "at most 500"),
])
def test_bad_boxes_are_refused_with_a_message(text, message):
    with pytest.raises(ValueError, match=message):
        read_boxes_text(text, (100, 100), (1, 2))


# -- the run ---------------------------------------------------------------------------------------------

def test_run_uses_the_official_queries_for_the_seed_and_leaves_the_callers_random_state(tiny, image):
    model, cfg = tiny
    truth = boxes_from_document(BOXES, image.shape[:2], category_ids(cfg))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run = run_denoising(model, cfg, image, truth, 42, class_names=class_names(cfg))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(42)
    with torch.no_grad():
        dn = make_denoising_queries([truth.targets()], model.label_enc, cfg.num_classes, cfg.num_queries,
                                    cfg.dn_number, cfg.dn_label_noise_ratio, cfg.dn_box_noise_scale)
    np.testing.assert_array_equal(run.dn_labels, dn.labels[0].numpy())
    np.testing.assert_array_equal(run.dn_boxes, dn.boxes[0].numpy())
    np.testing.assert_array_equal(run.attn_mask, dn.attn_mask.numpy())
    k, pad, q = cfg.dec_layers, dn.pad_size, cfg.num_queries
    assert run.dn_pred_boxes.shape == (k, pad, 4) and run.dn_pred_logits.shape == (k, pad, cfg.num_classes)
    assert run.attn_mask.shape == (pad + q, pad + q) and run.dn_references.shape == (k + 1, pad, 4)
    # the first reference is the anchor after the inverse sigmoid (clamped at 1e-3) and the sigmoid
    np.testing.assert_allclose(run.dn_references[0][run.dn_target >= 0], run.dn_boxes[run.dn_target >= 0], atol=1.1e-3)
    # positives have box losses, negatives and padding none; padding has no class loss either
    real = run.dn_target >= 0
    assert np.isfinite(run.loss_bbox[:, run.dn_positive & real]).all()
    assert np.isnan(run.loss_bbox[:, ~run.dn_positive]).all() and np.isnan(run.loss_class[:, ~real]).all()
    slot = int(np.flatnonzero(run.dn_positive & real)[0])
    target = run.gt_boxes[run.dn_target[slot]]
    np.testing.assert_allclose(run.loss_bbox[-1, slot], np.abs(run.dn_pred_boxes[-1, slot] - target).sum(), rtol=1e-5)


def test_run_equals_a_training_forward_with_the_same_seed(tiny, image):
    """Given queries in eval mode = the queries a training-mode forward draws itself (dropout 0)."""
    model, cfg = tiny
    truth = boxes_from_document(BOXES, image.shape[:2], category_ids(cfg))
    run = run_denoising(model, cfg, image, truth, 7)
    batch = prepare_batch([image], cfg)
    model.train()
    try:
        torch.manual_seed(7)
        with torch.no_grad():
            out = model(batch.images, batch.masks, [truth.targets()])
    finally:
        model.eval()
    np.testing.assert_allclose(run.dn_pred_boxes, out.denoising.boxes[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(run.dn_pred_logits, out.denoising.logits[:, 0].numpy(), atol=1e-4)


def test_an_image_without_boxes(tiny, image):
    model, cfg = tiny
    run = run_denoising(model, cfg, image, boxes_from_document({"boxes": []}, image.shape[:2], category_ids(cfg)), 0)
    assert run.pad_size == 0 and run.num_groups == 1
    assert run.attn_mask.shape == (cfg.num_queries, cfg.num_queries) and not run.attn_mask.any()
    assert render_denoising_group(image, run, 0).dtype == np.uint8


def test_figures(tiny, image):
    model, cfg = tiny
    run = run_denoising(model, cfg, image, boxes_from_document(BOXES, image.shape[:2], category_ids(cfg)), 1)
    picture = mask_picture(run.attn_mask, run.pad_size, run.num_groups)
    assert (picture[run.attn_mask] == 30).all()
    assert render_attention_mask(run.attn_mask, run.pad_size, run.num_groups).shape[1] == 560
    with pytest.raises(ValueError, match="group"):
        render_denoising_group(image, run, run.num_groups)
    positives = render_denoising_group(image, run, 0, kinds=("positive",))
    both = render_denoising_group(image, run, 0)
    assert positives.shape == both.shape and (positives != both).any()


# -- the command and its file --------------------------------------------------------------------------

def test_denoise_command_writes_the_documented_arrays(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(BOXES))
    out = tmp_path / "out"
    assert main(["denoise", str(IMAGE), "--boxes", str(boxes), "--checkpoint", "untrained:dino-tiny", "--seed", "3",
                 "--out", str(out)]) == 0
    index, arrays = read_denoising(out / "denoising.npz")
    assert set(arrays) == set(MEANINGS) and (out / "denoising.png").is_file()
    pad, q = index["denoising"]["pad_size"], index["sizes"]["Q matching queries"]
    k, c = index["sizes"]["K decoder layers"], index["sizes"]["C classes"]
    h, w = arrays["input_image"].shape[1:]
    assert arrays["input_image"].shape == (3, h, w) and arrays["input_image"].dtype == np.float32
    assert arrays["dn_labels"].shape == (pad,) and arrays["dn_boxes"].shape == (pad, 4)
    assert arrays["attn_mask"].shape == (pad + q, pad + q) and arrays["attn_mask"].dtype == bool
    assert arrays["dn_pred_boxes"].shape == (k, pad, 4) and arrays["dn_pred_logits"].shape == (k, pad, c)
    for name, entry in index["arrays"].items():
        assert entry["shape"] == list(arrays[name].shape)
    # seed 3 in the file = seed 3 in the library
    detector = load("untrained:dino-tiny")
    model, cfg = detector.model, detector.config
    image = load_image(IMAGE).array
    run = run_denoising(model, cfg, image, boxes_from_document(BOXES, image.shape[:2], category_ids(cfg)), 3)
    np.testing.assert_array_equal(arrays["dn_labels"], run.dn_labels)
    np.testing.assert_array_equal(arrays["dn_boxes"], run.dn_boxes)
    np.testing.assert_allclose(arrays["dn_pred_boxes"], run.dn_pred_boxes, atol=1e-6)


def test_denoise_command_refuses_bad_boxes(tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"boxes": [{"bbox": [1, 2, 3, 4], "category_id": 77}]}')
    assert main(["denoise", str(IMAGE), "--boxes", str(boxes), "--checkpoint", "untrained:dino-tiny", "--seed", "0",
                 "--out", str(tmp_path / "o")]) == 1
    assert "category_id 77" in capsys.readouterr().err


# -- the forward pass, walked --------------------------------------------------------------------------

def test_trace_shapes_are_the_models_tensors(tiny, image):
    model, cfg = tiny
    result, stages = traced_run(model, cfg, image)
    by_name = {s.name: s for s in stages}
    out = result.internals
    tokens, levels = out.memory.shape[1], len(out.spatial_shapes)
    q, k, d, c = result.num_queries, result.num_layers, cfg.hidden_dim, cfg.num_classes
    assert by_name["memory"].shape == tuple(out.memory.shape) == (1, tokens, d)
    assert by_name["spatial_shapes"].preview["first"] == out.spatial_shapes.flatten()[:6].tolist()
    assert by_name["level_start_index"].preview["first"] == out.level_start_index.tolist()
    for level, (rows, cols) in enumerate(out.spatial_shapes.tolist()):
        assert by_name[f"srcs[{level}]"].shape == (1, d, rows, cols)
    assert sum(by_name[f"srcs[{i}]"].shape[2] * by_name[f"srcs[{i}]"].shape[3] for i in range(levels)) == tokens
    assert by_name["src_flatten"].shape == by_name["lvl_pos_embed_flatten"].shape == (1, tokens, d)
    assert by_name["mask_flatten"].shape == tuple(out.padding_mask.shape)
    assert by_name["valid_ratios"].shape == tuple(out.valid_ratios.shape) == (1, levels, 2)
    assert by_name["reference_points"].shape == (1, tokens, levels, 2)
    assert by_name["enc_outputs_class_unselected"].shape == (1, tokens, c)
    assert by_name["topk_proposals"].shape == tuple(out.selection.topk_indices.shape) == (1, q)
    assert by_name["topk_proposals"].preview["first"] == out.selection.topk_indices[0, :6].tolist()
    assert by_name["tgt"].shape == by_name["hs"].shape[1:] == (1, q, d)
    assert by_name["hs"].shape == (k, 1, q, d)
    assert by_name["references"].shape == tuple(out.references.shape) == (k + 1, 1, q, 4)
    assert by_name["outputs_coord_list"].shape == tuple(out.boxes.shape)
    assert by_name["pred_logits"].shape == (1, q, c)
    assert by_name["scores"].shape == (cfg.num_select,)
    assert "attn_mask" not in by_name  # no denoising queries at inference
    # the hooks are gone afterwards
    transformer = model.transformer
    assert not model.backbone._forward_hooks and not transformer.encoder._forward_hooks
    assert not transformer.decoder._forward_hooks


def test_detect_trace_writes_one_file_per_image(tmp_path):
    out = tmp_path / "out"
    assert main(["detect", str(IMAGE), "--checkpoint", "untrained:dino-tiny", "--trace", "--out", str(out)]) == 0
    document = json.loads((out / "detections.json").read_text())
    trace = json.loads((out / document["images"][0]["trace"]).read_text())
    assert trace["schema"] == "dino-explorer/trace/1"
    names = [s["name"] for s in trace["stages"]]
    for name in ("spatial_shapes", "level_start_index", "valid_ratios", "reference_points", "memory",
                 "topk_proposals", "references", "pred_boxes"):
        assert name in names


# -- query selection and look forward twice ---------------------------------------------------------------

def test_selection_views_follow_the_stored_selection(tiny, image):
    model, cfg = tiny
    result, _ = traced_run(model, cfg, image)
    maps = level_scores(result)
    selection = result.internals.selection
    assert sum(len(m.picks) for m in maps) == result.num_queries
    for m in maps:
        np.testing.assert_array_equal(m.picks, selection.cells[0][selection.levels[0] == m.level].numpy())
    step = selection_step(result, 5)
    assert step.proposal_size == 0.05 * 2 ** int(selection.levels[0, 5])
    cx, cy = (step.cell_box[:2] + step.cell_box[2:]) / 2
    proposal = step.lineage.proposal_box
    np.testing.assert_allclose([cx, cy], (proposal[:2] + proposal[2:]) / 2, atol=1e-3)
    canvas, scale = display_canvas(image)
    assert render_score_maps(canvas, scale, maps, step=step).dtype == np.uint8
    assert render_selection_step(canvas, scale, step).dtype == np.uint8


def test_look_forward_twice_tells_the_two_boxes_apart(image):
    cfg = load("untrained:dino-tiny").config
    model = build_model(cfg).eval()
    with torch.no_grad():  # an untrained box head predicts no change at all: give it some
        head = model.bbox_embed[0].layers[-1]
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    model = optimize_for_inference(model)  # as the app runs it (the copy packs the changed head)
    result, _ = traced_run(model, cfg, image)
    out = result.internals
    steps = look_forward_twice(result, 3)
    assert len(steps) == result.num_layers
    h, w = result.size
    for s in steps:
        for box, source in ((s.reference_in, out.references[s.layer]), (s.loss_box, out.boxes[s.layer]),
                            (s.next_reference, out.references[s.layer + 1])):
            cx, cy, bw, bh = source[0, 3].double().tolist()
            np.testing.assert_allclose(box, [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                                             (cy + bh / 2) * h], atol=1e-6)
    # the LayerNorm between them: the box the loss sees is not the next reference
    assert max(s.gap for s in steps) > 0
    canvas, scale = display_canvas(image)
    assert render_look_forward_twice(canvas, scale, steps).dtype == np.uint8
