"""The state_dict of every variant is, key for key and shape for shape, the official one."""
import json

import pytest
from conftest import OFFICIAL

from dino_demo.model.config import VARIANTS, DINOConfig, get_config
from dino_demo.model.detector import build_model
from dino_demo.parity.recipe import recipe_state_dict, state_dict_sha256


def read_manifest(name: str) -> dict[str, tuple[list[int], str, str]]:
    rows = {}
    for line in (OFFICIAL / name).read_text().splitlines():
        key, shape, dtype, kind = line.split("\t")
        rows[key] = (json.loads(shape), dtype, kind)
    return rows


def ours(variant: str) -> dict[str, tuple[list[int], str, str]]:
    model = build_model(get_config(variant))
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return {k: (list(v.shape), str(v.dtype).removeprefix("torch."), "param" if k in params else "buffer")
            for k, v in model.state_dict().items()}


pytestmark = pytest.mark.slow  # official-size R50 / Swin-L models

@pytest.mark.parametrize("variant,manifest", [
    ("dino-4scale-r50", "manifest_DINO_4scale.tsv"),
    ("dino-5scale-r50", "manifest_DINO_5scale.tsv"),
    ("dino-4scale-swinl", "manifest_DINO_4scale_swin.tsv"),
])
def test_keys_shapes_dtypes_match_official_manifest(variant, manifest):
    expected, actual = read_manifest(manifest), ours(variant)
    assert sorted(actual) == sorted(expected)
    mismatched = {k: (actual[k], expected[k]) for k in expected if actual[k][:2] != expected[k][:2]}
    assert not mismatched


def test_5scale_swinl_combines_swin_backbone_and_5scale_transformer():
    swin, five = read_manifest("manifest_DINO_4scale_swin.tsv"), read_manifest("manifest_DINO_5scale.tsv")
    actual = ours("dino-5scale-swinl")
    backbone = {k: v[0] for k, v in actual.items() if k.startswith("backbone.")}
    expected_backbone = {k: v[0] for k, v in swin.items() if k.startswith("backbone.")}
    expected_backbone.update({"backbone.0.norm0.weight": [192], "backbone.0.norm0.bias": [192]})
    assert backbone == expected_backbone
    rest = {k: v[0] for k, v in actual.items() if not k.startswith(("backbone.", "input_proj."))}
    assert rest == {k: v[0] for k, v in five.items() if not k.startswith(("backbone.", "input_proj."))}
    assert [actual[f"input_proj.{i}.0.weight"][0] for i in range(5)] == [
        [256, 192, 1, 1], [256, 384, 1, 1], [256, 768, 1, 1], [256, 1536, 1, 1], [256, 1536, 3, 3]]


def test_heads_are_shared_across_layers_and_with_decoder():
    model = build_model(get_config("dino-tiny"))
    assert all(m is model.class_embed[0] for m in model.class_embed)
    assert all(m is model.bbox_embed[0] for m in model.bbox_embed)
    assert model.transformer.decoder.class_embed is model.class_embed
    assert model.transformer.decoder.bbox_embed is model.bbox_embed
    assert model.transformer.enc_out_class_embed is not model.class_embed[0]


def test_recipe_weights_hash_matches_official_meta():
    meta = json.loads((OFFICIAL / "DINO_4scale_meta.json").read_text())
    state = recipe_state_dict(build_model(get_config("dino-4scale-r50")).state_dict())
    assert state_dict_sha256(state) == meta["recipe_sha256"]


def test_config_rejects_impossible_combinations():
    with pytest.raises(ValueError, match="hidden_dim"):
        DINOConfig(name="x", hidden_dim=100)
    with pytest.raises(ValueError, match="num_feature_levels"):
        DINOConfig(name="x", backbone_levels=(0, 1, 2, 3), num_feature_levels=3)
    with pytest.raises(ValueError, match="backbone"):
        DINOConfig(name="x", backbone="vgg")
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("dino-7scale")
    for cfg in VARIANTS.values():  # every shipped default is valid
        assert cfg.replace() == cfg
