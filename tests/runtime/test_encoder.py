"""The encoder's attention of a chosen token, recomputed on demand, against what the encoder
computed in the full pass (captured here, for the test only, with forward hooks)."""
import functools
import gc

import numpy as np
import pytest
import torch

from dino_demo.explore import encoder
from dino_demo.runtime.dino import run
from dino_demo.explore.models import load
from dino_demo.runtime import dino_encoder
from dino_demo.runtime.speed import optimize_for_inference
from dino_demo.explore.draw.data import encoder_heatmap_view, encoder_sampling_view
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.model.config import get_config
from dino_demo.model.detector import build_model
from dino_demo.parity.recipe import recipe_state_dict


def _recipe_model(cfg):
    """A model with the parity kit's recipe weights (attention that is not uniform)."""
    model = build_model(cfg).eval()
    model.load_state_dict(recipe_state_dict(model.state_dict()))
    return optimize_for_inference(model), cfg


@pytest.fixture(scope="module", params=["shipped", "recipe-6-layers", pytest.param("recipe-r50", marks=pytest.mark.slow)])
def case(request):
    rng = np.random.default_rng(5)
    if request.param == "shipped":
        if not DEFAULT_CHECKPOINT.is_file():
            pytest.skip("shipped weights/dino-tiny.pth not present")
        detector = load(str(DEFAULT_CHECKPOINT))
        model, cfg = detector.model, detector.config
        image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    elif request.param == "recipe-6-layers":  # six encoder layers, as the released models, on a small model
        model, cfg = _recipe_model(get_config("dino-tiny").replace(name="dino-tiny-6", enc_layers=6, dec_layers=6))
        image = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    else:  # the released models' structure at a small input
        model, cfg = _recipe_model(get_config("dino-4scale-r50"))
        cfg = cfg.replace(min_size=96, max_size=128)
        image = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    captured = []

    def hook(module, inputs, output):
        _, locations, weights = output
        captured.append((locations.clone(), weights.clone()))

    handles = [layer.self_attn.register_forward_hook(hook) for layer in model.transformer.encoder.layers]
    try:
        result = run(model, cfg, image)
    finally:
        for handle in handles:
            handle.remove()
    return model, result, captured


def test_recomputed_token_attention_equals_the_encoders_own(case):
    model, result, captured = case
    out = result.output
    assert len(captured) == len(model.transformer.encoder.layers)
    tokens = []
    for level, (h, w) in enumerate(out.spatial_shapes.tolist()):
        tokens += [encoder.token(result, level, 0, 0), encoder.token(result, level, h - 1, w - 1),
                   encoder.token(result, level, h // 2, w // 3)]
    attention = dino_encoder.token_attention(model, result, tokens)
    for token, found in zip(tokens, attention):
        assert found.token == token
        for layer, (locations, weights) in enumerate(captured):
            torch.testing.assert_close(found.sampling_locations[layer], locations[0, token.index], atol=1e-5, rtol=0)
            torch.testing.assert_close(found.attention_weights[layer], weights[0, token.index], atol=1e-5, rtol=0)
    m, l, p = found.attention_weights.shape[1:]
    assert found.sampling_locations.shape == (len(captured), m, l, p, 2)
    # The same, one token at a time (as a click asks).
    alone = dino_encoder.token_attention(model, result, [tokens[4]])[0]
    torch.testing.assert_close(alone.attention_weights, attention[4].attention_weights, atol=1e-6, rtol=0)


def test_a_click_picks_the_token_whose_cell_holds_it(case):
    _, result, _ = case
    height, width = result.size
    for level in range(result.attention_shape[1]):
        rows, cols, valid_rows, valid_cols = encoder.level_grid(result, level)
        for x, y in [(0.2, 0.3), (width / 2, height / 3), (width - 0.5, height - 0.5)]:
            token = encoder.token_at(result, level, x, y)
            x0, y0, x1, y1 = encoder.cell_box(result, token)
            assert x0 <= x <= x1 and y0 <= y <= y1, (level, x, y, token)
            assert token.index == int(result.output.level_start_index[level]) + token.cell[0] * cols + token.cell[1]
        assert encoder.token_at(result, level, -50, 1e6).cell == (valid_rows - 1, 0)  # outside: the nearest cell
    with pytest.raises(ValueError, match="row"):
        encoder.token(result, 0, 10_000, 0)
    with pytest.raises(ValueError, match="level"):
        encoder.token(result, 9, 0, 0)


def test_views_of_a_token(case):
    model, result, _ = case
    token = encoder.token_at(result, 1, result.size[1] / 2, result.size[0] / 2)
    attention = dino_encoder.token_attention(model, result, [token])[0]
    layers, m, l, p = attention.attention_weights.shape
    view = encoder_sampling_view(result, attention, layers - 1)
    assert view.points.shape == (m, l, p, 2) and view.mass.shape == (m, l)
    np.testing.assert_allclose(view.mass.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(view.reference_box, encoder.cell_box(result, token))
    centre = (view.reference_box[:2] + view.reference_box[2:]) / 2
    np.testing.assert_allclose(view.reference_points, np.broadcast_to(centre, (l, 2)), atol=1.0)
    one = encoder_sampling_view(result, attention, 0, head=2, level=3)
    assert one.points.shape == (1, 1, p, 2)
    heat = encoder_heatmap_view(result, attention, layers - 1)
    assert len(heat.grids) == l and heat.mass.sum() == pytest.approx(1.0)
    # Each head's weights sum to 1; what falls outside the maps is dropped (the op reads zeros there).
    assert 0 < sum(g.sum() for g in heat.grids) <= m + 1e-9
    with pytest.raises(ValueError, match="encoder layer"):
        encoder_sampling_view(result, attention, layers)


def test_token_attention_needs_the_encoder_input():
    detector = load("untrained:dino-tiny")
    model, cfg = detector.model, detector.config
    result = run(model, cfg, np.zeros((64, 64, 3), np.uint8), internals=False)
    with pytest.raises(ValueError, match="internals"):
        dino_encoder.token_attention(model, result, [encoder.EncoderToken(0, 0, (0, 0))])


def test_the_cache_computes_a_token_once_and_lets_results_go():
    detector = load("untrained:dino-tiny")
    model, cfg = detector.model, detector.config
    result = run(model, cfg, np.zeros((64, 64, 3), np.uint8))
    cache = encoder.TokenAttentionCache(per_result=2)
    calls = []

    def compute(of, token):
        calls.append(token.index)
        return dino_encoder.token_attention(model, of, [token])[0]

    tokens = [encoder.token(result, 0, 0, c) for c in range(3)]
    for token in [tokens[0], tokens[0], tokens[1], tokens[2], tokens[0]]:
        assert cache.get(result, token, functools.partial(compute, result, token)).token == token
    assert calls == [tokens[0].index, tokens[1].index, tokens[2].index, tokens[0].index]  # 2 per result kept
    assert len(cache) == 1
    del result
    gc.collect()
    assert len(cache) == 0
