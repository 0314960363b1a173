"""MMDetection's DINO-4scale converted and run here, against MMDetection's own outputs.

fixtures/mmdet_dino/ holds what scripts/mmdet_reference.py recorded with MMDetection 3.3 (its
configs/dino/dino-4scale_r50_8xb2-12e_coco.py, the parity recipe's weights over MMDetection's key
names, examples/chelsea.png at its own 451x300 size). Here the same weights are saved in
MMDetection's checkpoint format (`meta` with its config text and class names, `state_dict`),
loaded through the converter, and run on the same input.

Measured (CPU, float32): encoder output 4.8e-6, encoder class scores 4.1e-6, top-900 the same set
(99.3% the same slot: random weights put encoder scores within 2.4e-7 of each other), final logits
5.7e-6 and boxes 1.1e-6 teacher-forced with MMDetection's selection.
"""
import json

import numpy as np
import pytest
import torch

from dino_demo.sources.checkpoint import load_model
from dino_demo.io.images import load_image
from dino_demo.sources.layouts import ABSENT_CLASS_LOGIT, COCO80_IDS
from dino_demo.io.preprocess import to_tensor_normalized
from dino_demo.parity.recipe import recipe_tensor

from conftest import FIXTURES, ROOT, npz_arrays

pytestmark = pytest.mark.slow  # an official-size R50 model

REFERENCE = FIXTURES / "mmdet_dino"
ENCODER_ATOL = 5e-5
LOGIT_ATOL = 1e-4
BOX_ATOL = 2e-5


@pytest.fixture(scope="module")
def recorded():
    return npz_arrays(REFERENCE / "reference.npz"), json.loads((REFERENCE / "meta.json").read_text())


@pytest.fixture(scope="module")
def mmdet_file(tmp_path_factory, recorded):
    """The checkpoint as MMDetection saves it (mmengine's save_checkpoint: meta + state_dict)."""
    _, info = recorded
    state = {}
    for line in (FIXTURES / "layouts" / "mmdet_dino-4scale_r50.tsv").read_text().splitlines():
        key, shape, dtype, _ = line.split("\t")
        shape = tuple(json.loads(shape))
        state[key] = recipe_tensor(key, shape, info["salt"]) if dtype == "float32" else torch.zeros(shape, dtype=torch.int64)
    path = tmp_path_factory.mktemp("mmdet") / "dino-4scale_r50_mmdet.pth"
    torch.save({"meta": info["meta"], "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def runs(mmdet_file, recorded):
    arrays, info = recorded
    model, cfg = load_model(mmdet_file)
    images = to_tensor_normalized(load_image(ROOT / "examples" / info["image"]).array)[None]
    assert tuple(images.shape[-2:]) == tuple(arrays["image_hw"])
    masks = torch.zeros(1, *images.shape[-2:], dtype=torch.bool)
    with torch.inference_mode():
        # One pass: the decoder runs on MMDetection's selection; the encoder (and so the model's own
        # selection, the top-900 of `max_logit`) does not depend on it.
        forced = model(images, masks, topk_indices=torch.from_numpy(arrays["topk_indices"]))
    return cfg, forced


def close(actual, expected, atol):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=0, atol=atol)


def test_converted_config_computes_as_mmdetection(runs):
    cfg, _ = runs
    assert cfg.name == "dino-4scale-r50" and cfg.num_classes == 91 and not cfg.shared_heads
    assert (cfg.pe_temperature, cfg.pe_offset, cfg.box_eps) == (20.0, 0.0, 1e-5)


def test_encoder_output_and_scores(runs, recorded):
    arrays, _ = recorded
    _, out = runs
    close(out.memory[:, arrays["memory_token_index"]], arrays["memory_sample"], ENCODER_ATOL)
    close(out.selection.max_logit, arrays["enc_max_logit"], ENCODER_ATOL)


def test_top900_selection(runs, recorded):
    arrays, _ = recorded
    ours = torch.topk(runs[1].selection.max_logit[0], 900).indices.numpy()  # the model's own selection rule
    theirs = arrays["topk_indices"][0]
    assert set(ours) == set(theirs)
    assert (ours == theirs).mean() > 0.98  # near-tied random scores may swap a few slots


def test_final_layer_teacher_forced(runs, recorded):
    arrays, _ = recorded
    _, forced = runs
    close(forced.pred_logits[..., list(COCO80_IDS)], arrays["pred_logits"], LOGIT_ATOL)
    absent = [i for i in range(91) if i not in COCO80_IDS]
    assert (forced.pred_logits[..., absent] == ABSENT_CLASS_LOGIT).all()
    close(forced.pred_boxes, arrays["pred_boxes"], BOX_ATOL)
