"""The families' inference fast paths (dino_demo.families.fast) against transformers' own modules,
on tiny models of every family (tests/support/family_models.py) and on the replaced modules alone."""
from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn
from PIL import Image

from dino_demo.families import fast
from dino_demo.families.inference import run
from dino_demo.families.load import load

from family_models import FAMILY_NAMES, TEXT_PROMPTED, folders, image  # noqa: F401 (fixtures)

PROMPT = "cat . remote control ."
REPLACED = ("PackedLinear", "BlockedFeedForward", "FoldedBiAttention")


def _outputs(handle, image, prompt):
    kwargs = {"text": prompt} if prompt else {}
    inputs = handle.processor(images=Image.fromarray(image), return_tensors="pt", **kwargs)
    with torch.inference_mode():
        return handle.model(**inputs)


def _close_where_finite(actual, expected, atol):
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(actual))
    torch.testing.assert_close(actual[finite], expected[finite], atol=atol, rtol=0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_fast_path_equals_transformers_modules(folders, image, name):
    prompt = PROMPT if name in TEXT_PROMPTED else None
    stock, quick = load(folders[name], fast=False), load(folders[name])
    assert not any(type(m).__name__ in REPLACED for m in stock.model.modules())
    assert any(type(m).__name__ in REPLACED for m in quick.model.modules())
    expected, actual = _outputs(stock, image, prompt), _outputs(quick, image, prompt)
    _close_where_finite(actual.logits, expected.logits, 1e-5)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-5, rtol=0)
    ours, theirs = run(quick, image, prompt=prompt), run(stock, image, prompt=prompt)
    torch.testing.assert_close(ours.detections.scores, theirs.detections.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.detections.boxes, theirs.detections.boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.internals.sampling_locations, theirs.internals.sampling_locations, atol=1e-5,
                               rtol=0, equal_nan=True)


def test_batch_norms_fold_into_the_convolutions(folders, image):
    stock, quick = load(folders["deformable-detr"], fast=False), load(folders["deformable-detr"])
    norms = [m for m in stock.model.modules() if type(m).__name__.endswith("FrozenBatchNorm2d")]
    assert norms and not any(type(m).__name__.endswith("FrozenBatchNorm2d") for m in quick.model.modules())


def _bi_attention(batch=2, length=50, tokens=7):
    config = transformers.GroundingDinoConfig(d_model=32, encoder_ffn_dim=64, encoder_attention_heads=4)
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoBiMultiHeadAttention

    torch.manual_seed(0)
    module = GroundingDinoBiMultiHeadAttention(config).eval()
    vision, text = torch.randn(batch, length, 32), torch.randn(batch, tokens, 32)
    vision_mask = torch.zeros(batch, length, dtype=torch.bool)
    vision_mask[1, -9:] = True
    text_mask = torch.zeros(batch, tokens, dtype=torch.bool)
    text_mask[0, -2:] = True
    return module, (vision, text, vision_mask, text_mask)


@pytest.mark.parametrize("masked", [False, True])
def test_folded_fusion_attention_equals_transformers(masked):
    module, (vision, text, vision_mask, text_mask) = _bi_attention()
    masks = (vision_mask, text_mask) if masked else (None, None)
    with torch.no_grad():
        (v_expected, vw_expected), (t_expected, tw_expected) = module(vision, text, *masks)
        (v_actual, vw_actual), (t_actual, tw_actual) = fast.FoldedBiAttention(module)(vision, text, *masks)
    torch.testing.assert_close(v_actual, v_expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t_actual, t_expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vw_actual, vw_expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tw_actual, tw_expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_blocked_feed_forward_equals_the_layers(packed):
    if packed and not fast.onednn_available():
        pytest.skip("this PyTorch has no oneDNN packed linear")
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(16, 40), nn.Linear(40, 16)
    x = torch.randn(3, 23, 16)
    expected = fc2(torch.relu(fc1(x)))
    ffn = fast.BlockedFeedForward(fc1, fc2, packed, block=8)  # 69 tokens: 9 blocks, the last one short
    with torch.inference_mode():
        torch.testing.assert_close(ffn(x), expected.detach(), atol=1e-5, rtol=0)


def test_packed_linear_runs_in_autocasts_dtype():
    if not fast.onednn_available():
        pytest.skip("this PyTorch has no oneDNN packed linear")
    linear = nn.Linear(8, 4)
    packed = fast.PackedLinear(linear, relu=True)
    x = torch.randn(5, 8)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), torch.relu(linear(x)), atol=1e-5, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert packed(x).dtype == torch.bfloat16


@pytest.mark.parametrize("precast", [False, True])
def test_bfloat16_weights_cast_once_give_autocasts_numbers(precast):
    if not fast.onednn_available():
        pytest.skip("this PyTorch has no oneDNN packed linear")
    torch.manual_seed(0)
    linear = nn.Linear(8, 4)
    packed = fast.PackedLinear(linear, precast=precast)
    x = torch.randn(5, 8)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = linear(x)
        actual = packed(x)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)
    assert (packed._bfloat16 is not None) == precast


@pytest.mark.parametrize("native", [False, True])
def test_the_cpus_bfloat16_support_chooses_pre_cast_weights(folders, monkeypatch, native):
    if not fast.onednn_available():
        pytest.skip("this PyTorch has no oneDNN packed linear")
    monkeypatch.setattr(fast.speed, "native_bfloat16", lambda: native)
    handle = load(folders["deformable-detr"])
    layers = [m for m in handle.model.modules() if isinstance(m, fast.PackedLinear)]
    assert layers and all(layer.precast == native for layer in layers)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_bfloat16_runs_with_internals_on_both_paths(folders, image, name):
    """A bfloat16 run re-applies the heads per layer for the internals in the forward's precision:
    transformers' own modules (plain linears, as on a GPU or without oneDNN) and the fast path."""
    prompt = PROMPT if name in TEXT_PROMPTED else None
    for handle in (load(folders[name], our_op=False, fast=False), load(folders[name])):
        result = run(handle, image, prompt=prompt, precision="bfloat16")
        assert result.precision == "bfloat16"
        assert result.output.pred_logits.dtype == torch.float32
        assert torch.isfinite(result.output.pred_boxes).all()


@pytest.mark.parametrize("name", ["deformable-detr", "rt-detr", "d-fine"])
def test_convolutional_backbones_compute_channels_last_under_autocast_only(folders, image, name):
    handle = load(folders[name])
    encoder = next(m for m in handle.model.modules() if type(m).__name__ in fast.CONV_BACKBONES)
    first_conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    seen = []
    first_conv.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                         and not args[0].is_contiguous()))
    for precision in ("float32", "bfloat16"):
        run(handle, image, precision=precision, internals=False)
    assert seen == [False, True]


def test_bfloat16_weights_fall_back_to_plain_products_where_onednn_refuses_them(monkeypatch):
    """A CPU or build whose oneDNN has no bfloat16 products (AVX2 machines) keeps a plain
    bfloat16 copy of the weight for F.linear: the same numbers as autocast's."""
    if not fast.onednn_available():
        pytest.skip("this PyTorch has no oneDNN packed linear")
    torch.manual_seed(0)
    linear = nn.Linear(8, 4)
    packed = fast.PackedLinear(linear, precast=True)
    reorder = torch.ops.mkldnn._reorder_linear_weight

    def refuse_bfloat16(weight, *args):
        if weight.dtype == torch.bfloat16:
            raise RuntimeError("no bfloat16 products here")
        return reorder(weight, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse_bfloat16)
    x = torch.randn(5, 8)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, actual = linear(x), packed(x)
    assert not packed.bfloat16_weights().packed
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)
