"""Output shapes on padded, non-square batches; small inputs; forced selections."""
import pytest
import torch

from dino_demo.io.preprocess import batch_images, resize_shape
from dino_demo.model.config import get_config
from dino_demo.model.detector import build_model
from dino_demo.model.postprocess import postprocess


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("dino-tiny")).eval()


@pytest.mark.parametrize("sizes", [[(200, 296)], [(256, 192), (160, 320)]])
def test_shapes_for_padded_batches(model, sizes):
    cfg = model.cfg
    images, masks = batch_images([torch.randn(3, h, w) for h, w in sizes])
    with torch.no_grad():
        out = model(images, masks, capture_attention=True, timings={})
    b, k, q, l, m, p = len(sizes), cfg.dec_layers, cfg.num_queries, cfg.num_feature_levels, cfg.num_heads, cfg.dec_points
    tokens = int(out.spatial_shapes.prod(1).sum())
    assert out.logits.shape == (k, b, q, cfg.num_classes)
    assert out.boxes.shape == (k, b, q, 4) and out.references.shape == (k + 1, b, q, 4)
    assert out.memory.shape == (b, tokens, cfg.hidden_dim) and out.padding_mask.shape == (b, tokens)
    assert out.selection.topk_indices.shape == (b, q) and out.selection.max_logit.shape == (b, tokens)
    assert out.selection.cells.shape == (b, q, 2) and out.selection.levels.max() < l
    assert out.sampling_locations.shape == (k, b, q, m, l, p, 2)
    assert out.attention_weights.shape == (k, b, q, m, l, p)
    torch.testing.assert_close(out.attention_weights.sum((-1, -2)), torch.ones(k, b, q, m))
    assert set(out.timings) == {"backbone", "encoder", "decoder"}
    assert ((out.boxes >= 0) & (out.boxes <= 1)).all()
    # the padded image's valid ratios are below 1 along the padded axis
    if b == 2:
        assert (out.valid_ratios[0, :, 0] < 1).all() and (out.valid_ratios[1, :, 1] < 1).all()
    detections = postprocess(out.pred_logits, out.pred_boxes, torch.tensor(sizes), cfg.num_select)
    assert len(detections) == b and all(len(d) == cfg.num_select for d in detections)


def test_batch_of_two_equals_two_batches_of_one(model):
    a, b = torch.randn(3, 192, 256), torch.randn(3, 192, 256)
    with torch.no_grad():
        both = model(*batch_images([a, b]))
        first = model(*batch_images([a]))
    torch.testing.assert_close(both.pred_logits[:1], first.pred_logits, atol=1e-4, rtol=1e-4)


def test_small_image_gets_fewer_queries(model):
    # 64x64 -> 8x8 + 4x4 + 2x2 + 1x1 = 85 tokens < 100 queries: the top-k keeps every token.
    with torch.no_grad():
        out = model(*batch_images([torch.randn(3, 64, 64)]))
    assert out.selection.topk_indices.shape == (1, 85)
    assert out.pred_logits.shape[1] == 85


def test_too_small_or_malformed_input_is_a_value_error(model):
    with pytest.raises(ValueError, match="at least 32x32"):
        model(*batch_images([torch.randn(3, 16, 40)]))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(1, 4, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match="masks"):
        model(torch.randn(1, 3, 64, 64), torch.zeros(1, 32, 64, dtype=torch.bool))


def test_forced_selection(model):
    images, masks = batch_images([torch.randn(3, 160, 160)])
    with torch.no_grad():
        free = model(images, masks)
        forced = model(images, masks, topk_indices=free.selection.topk_indices.flip(1))
    torch.testing.assert_close(forced.selection.boxes, free.selection.boxes.flip(1))
    with pytest.raises(ValueError, match="topk_indices must lie in"):
        model(images, masks, topk_indices=torch.full((1, 10), 10**6))
    with pytest.raises(ValueError, match="topk_indices must be"):
        model(images, masks, topk_indices=torch.zeros(2, 10, dtype=torch.long))


def test_official_resize_rule():
    assert resize_shape(480, 640) == (800, 1066)
    assert resize_shape(600, 2000) == (400, 1333)
    assert resize_shape(800, 1000) == (800, 1000)
    with pytest.raises(ValueError):
        resize_shape(0, 10)


@pytest.mark.slow
@pytest.mark.parametrize("variant,strides", [
    ("dino-5scale-r50", [4, 8, 16, 32, 64]),
    ("dino-4scale-swinl", [8, 16, 32, 64]),
    ("dino-5scale-swinl", [4, 8, 16, 32, 64]),
])
def test_official_variants_run_on_odd_sizes(variant, strides):
    """Sizes that are not multiples of the stride or of Swin's 12-token window (padding paths)."""
    torch.manual_seed(0)
    cfg = get_config(variant).replace(enc_layers=1, dec_layers=1, num_queries=50)
    model = build_model(cfg).eval()
    images, masks = batch_images([torch.randn(3, 100, 140), torch.randn(3, 84, 150)])
    with torch.no_grad():
        out = model(images, masks, capture_attention=True)
    expected = []
    h, w = 100, 150
    for s in strides:
        expected.append([-(-h // s), -(-w // s)])
    assert out.spatial_shapes.tolist() == expected
    assert torch.isfinite(out.pred_logits).all() and out.sampling_locations.shape[-3] == len(strides)
