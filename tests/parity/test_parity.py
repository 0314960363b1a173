"""Numerical parity with the official DINO on the parity kit's batch (README in the fixture dir).

Tolerances: the official code agrees with itself (1 vs 2 threads) to about 1e-5 up to the encoder
output and 1e-4 in the decoder; random weights put encoder scores within 5e-7 of each other, so
the top-900 selection is compared as a set and the decoder is compared teacher-forced.
"""
import numpy as np
import pytest
import torch
from conftest import OFFICIAL, npz_arrays

from dino_demo.sources.checkpoint import load_model
from dino_demo.io.images import load_image
from dino_demo.io.preprocess import batch_images, to_tensor_normalized
from dino_demo.model.config import get_config
from dino_demo.model.detector import build_model
from dino_demo.cli import dump
from dino_demo.parity.recipe import recipe_state_dict

pytestmark = pytest.mark.slow  # official-size R50 / Swin-L models

ENCODER_ATOL = 5e-5     # measured 7.0e-6
DECODER_ATOL = 2e-4     # logits/features, measured 7.9e-6
BOX_ATOL = 2e-5         # sigmoid boxes and sampling geometry, measured 1.6e-6
SCORE_ATOL = 1e-4
# The proposals are sigmoid(log(p / (1 - p))) of exact grid values: equal up to the last bit of
# float32, which vectorized log/exp round differently on different CPUs (measured 6e-8 on Intel Xeon).
PROPOSAL_ATOL = 1.2e-7


@pytest.fixture(scope="module")
def reference():
    return npz_arrays(OFFICIAL / "DINO_4scale_reference.npz")


@pytest.fixture(scope="module")
def batch():
    images = [to_tensor_normalized(load_image(OFFICIAL / n).array) for n in ("input_a.png", "input_b.png")]
    return batch_images(images)


@pytest.fixture(scope="module")
def model():
    model = build_model(get_config("dino-4scale-r50")).eval()
    model.load_state_dict(recipe_state_dict(model.state_dict()), strict=True)
    return model


@pytest.fixture(scope="module")
def free_run(model, batch):
    with torch.inference_mode():
        return model(*batch)


@pytest.fixture(scope="module")
def forced_dump(tmp_path_factory, model):
    """The dump CLI on the fixture batch, recipe checkpoint file, reference top-k forced."""
    tmp = tmp_path_factory.mktemp("dump")
    checkpoint = tmp / "recipe.pth"
    torch.save({"model": model.state_dict(), "args": __import__("argparse").Namespace(lr=1e-4),
                "epoch": 11}, checkpoint)
    out = tmp / "ours.npz"
    assert dump.main(["--checkpoint", str(checkpoint), "--out", str(out),
                      "--images", str(OFFICIAL / "input_a.png"), str(OFFICIAL / "input_b.png"),
                      "--topk-indices", str(OFFICIAL / "DINO_4scale_reference.npz")]) == 0
    with np.load(out) as npz:
        return {k: npz[k] for k in npz.files}


def close(actual, expected, atol):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=atol)


def test_geometry_is_identical(free_run, reference):
    np.testing.assert_array_equal(free_run.spatial_shapes.numpy(), reference["spatial_shapes"])
    np.testing.assert_array_equal(free_run.level_start_index.numpy(), reference["level_start_index"])
    np.testing.assert_array_equal(free_run.valid_ratios.numpy(), reference["valid_ratios"])


def test_encoder_memory_and_scores_elementwise(free_run, reference):
    close(free_run.memory[:, reference["memory_token_index"]], reference["memory_sample"], ENCODER_ATOL)
    close(free_run.selection.max_logit, reference["enc_max_logit"], ENCODER_ATOL)


def test_top900_selection_as_a_set(free_run, reference):
    ours, theirs = free_run.selection.topk_indices.numpy(), reference["topk_indices"]
    for b in range(2):
        assert set(ours[b]) == set(theirs[b])
        assert (ours[b] == theirs[b]).mean() > 0.98  # near-ties may swap a few ranks


def test_selection_positions_match_token_indices(free_run):
    sel = free_run.selection
    shapes, starts = free_run.spatial_shapes, free_run.level_start_index
    rebuilt = starts[sel.levels] + sel.cells[..., 0] * shapes[sel.levels, 1] + sel.cells[..., 1]
    assert torch.equal(rebuilt, sel.topk_indices)


def test_dump_has_the_reference_arrays(forced_dump, reference):
    assert sorted(forced_dump) == sorted(reference)
    for key in reference:
        assert forced_dump[key].dtype == reference[key].dtype, key
        assert forced_dump[key].shape == reference[key].shape, key


@pytest.mark.parametrize("key,atol", [
    ("enc_topk_logits", ENCODER_ATOL), ("enc_topk_boxes", BOX_ATOL), ("init_box_proposal", PROPOSAL_ATOL),
    ("references", BOX_ATOL), ("hs_last", DECODER_ATOL), ("pred_logits", DECODER_ATOL),
    ("pred_boxes", BOX_ATOL), ("aux_pred_logits", DECODER_ATOL), ("aux_pred_boxes", BOX_ATOL),
    ("dec_sampling_locations", BOX_ATOL), ("dec_attention_weights", BOX_ATOL),
])
def test_teacher_forced_decoder_per_slot(forced_dump, reference, key, atol):
    close(forced_dump[key], reference[key], atol)


def test_final_detections_as_sets(forced_dump, reference):
    """Each official (label, box) has one of ours with the same label, the same box and score."""
    for b in range(2):
        ours = list(zip(forced_dump["post_labels"][b], forced_dump["post_boxes"][b], forced_dump["post_scores"][b]))
        for label, box, score in zip(reference["post_labels"][b], reference["post_boxes"][b], reference["post_scores"][b]):
            match = next((i for i, (l, bx, s) in enumerate(ours) if l == label and abs(s - score) <= SCORE_ATOL
                          and np.abs(bx - box).max() < 1e-2), None)
            assert match is not None, (b, label, box, score)
            ours.pop(match)


def test_official_shaped_file_loads_strictly(tmp_path, model):
    path = tmp_path / "checkpoint0011_4scale.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state, "args": __import__("argparse").Namespace(num_classes=91, dn_number=100),
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 11}, path)
    loaded, cfg = load_model(path)
    assert cfg.name == "dino-4scale-r50"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_inference_fast_path_stays_within_tolerances(model, batch, reference):
    from dino_demo.runtime.speed import optimize_for_inference

    fast = optimize_for_inference(model)
    forced = torch.from_numpy(reference["topk_indices"])
    with torch.inference_mode():
        out = fast(*batch, topk_indices=forced)
    close(out.memory[:, reference["memory_token_index"]], reference["memory_sample"], ENCODER_ATOL)
    close(out.selection.max_logit, reference["enc_max_logit"], ENCODER_ATOL)
    close(out.pred_logits, reference["pred_logits"], DECODER_ATOL)
    close(out.pred_boxes, reference["pred_boxes"], BOX_ATOL)
    close(out.references, reference["references"], BOX_ATOL)
    # the original model is untouched and still loads official checkpoints
    assert "backbone.0.body.bn1.running_var" in model.state_dict()
