"""Converting detrex and MMDetection checkpoints to the official layout.

The foreign key sets and shapes are the manifests in fixtures/layouts/ (MMDetection's built from
its own configs, detrex's rebuilt from its source; see scripts/layout_manifests.py); weights are
the parity recipe over the foreign names, so every value can be traced through the conversion.
"""
import json
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dino_demo.sources import layouts
from dino_demo.sources.checkpoint import (CheckpointError, check_fits, convert_checkpoint, infer_config, load_model,
                                     mismatch_report, read_checkpoint, save_checkpoint)
from dino_demo.io.labels import COCO_NAMES
from dino_demo.model.backbone import PatchMerging
from dino_demo.model.config import FLAVOURS, get_config
from dino_demo.model.detector import build_model
from dino_demo.parity.recipe import recipe_tensor

from conftest import FIXTURES, OFFICIAL

LAYOUTS = FIXTURES / "layouts"
SALT = "layout-test"
FOREIGN = [  # manifest, layout, variant
    ("detrex_dino_r50_4scale", "detrex", "dino-4scale-r50"),
    ("detrex_dino_r50_5scale", "detrex", "dino-5scale-r50"),
    ("detrex_dino_swin_large_384_4scale", "detrex", "dino-4scale-swinl"),
    ("detrex_dino_swin_large_384_5scale", "detrex", "dino-5scale-swinl"),
    ("mmdet_dino-4scale_r50", "mmdet", "dino-4scale-r50"),
    ("mmdet_dino-5scale_swin-l", "mmdet", "dino-5scale-swinl"),
]


def manifest(path) -> dict[str, tuple[list[int], str]]:
    rows = {}
    for line in path.read_text().splitlines():
        key, shape, dtype, _ = line.split("\t")
        rows[key] = (json.loads(shape), dtype)
    return rows


def assert_values_land(official: dict[str, torch.Tensor], foreign: dict[str, torch.Tensor], layout: str) -> None:
    """Each row of fixtures/key_places/<layout>.tsv (foreign key, tab, official key): the converted state
    holds the foreign value under the official key."""
    lines = (FIXTURES / "key_places" / f"{layout}.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    assert len(rows) >= 20
    for theirs, ours in rows:
        assert torch.equal(official[ours], foreign[theirs]), (theirs, ours)


_HEADS = re.compile(r"(transformer\.decoder\.)?(class_embed|bbox_embed|bbox_head\.(cls|reg)_branches)\.")


def meta_weights(name: str) -> dict[str, torch.Tensor]:
    """The manifest's keys as shape-only tensors (no memory), except the small per-layer heads,
    which get recipe values (detrex's aliases the values of the heads they alias)."""
    state = {}
    for key, (shape, dtype) in manifest(LAYOUTS / f"{name}.tsv").items():
        if _HEADS.match(key):
            state[key] = recipe_tensor(f"{name}/{key.removeprefix('transformer.decoder.')}", tuple(shape), SALT)
        else:
            state[key] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
    return state


def recipe_weights(name: str) -> dict[str, torch.Tensor]:
    """Recipe values for the manifest's float keys (zeros for integer buffers); detrex's duplicated
    decoder heads get the values of the heads they alias."""
    state = {}
    for key, (shape, dtype) in manifest(LAYOUTS / f"{name}.tsv").items():
        if dtype != "float32":
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        alias = key.startswith(("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed."))
        # Keyed by "<manifest>/<key>": the recipe would give all official per-layer heads one value.
        state[key] = recipe_tensor(f"{name}/{key.removeprefix('transformer.decoder.') if alias else key}", tuple(shape), SALT)
    return state


@pytest.fixture(scope="module")
def detrex_r50():
    return recipe_weights("detrex_dino_r50_4scale")


@pytest.fixture(scope="module")
def mmdet_r50():
    return recipe_weights("mmdet_dino-4scale_r50")


def converted_fits(state: dict, checkpoint: dict | None = None):
    converted = layouts.to_official(checkpoint or {"state_dict": state})
    cfg = infer_config(converted.state_dict, None, converted.config_changes)
    with torch.device("meta"):
        model = build_model(cfg)
    return converted, cfg, mismatch_report(model, converted.state_dict)


@pytest.mark.parametrize("name,layout,variant", FOREIGN)
def test_foreign_manifest_converts_to_exactly_the_official_keys_and_shapes(name, layout, variant):
    converted, cfg, report = converted_fits(meta_weights(name))
    assert report == ""
    assert converted.layout == layout and converted.flavour == layout and cfg.name == variant
    assert cfg.num_classes == 91 and not cfg.shared_heads
    expected = {**FLAVOURS[layout], "shared_heads": False}
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize("name,variant", [("manifest_DINO_4scale.tsv", "dino-4scale-r50"),
                                          ("manifest_DINO_5scale.tsv", "dino-5scale-r50"),
                                          ("manifest_DINO_4scale_swin.tsv", "dino-4scale-swinl")])
def test_official_manifests_pass_through_unchanged(name, variant):
    state = {k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, (shape, dtype) in manifest(OFFICIAL / name).items()}
    converted, cfg, report = converted_fits(state, {"model": {f"module.{k}": v for k, v in state.items()}})
    assert report == "" and cfg.name == variant and cfg.shared_heads and converted.layout == "official"
    assert list(converted.state_dict) == list(state)


@pytest.mark.slow  # R50-size weights
def test_detrex_values_land_in_their_official_places(detrex_r50):
    d, o = detrex_r50, layouts.to_official({"model": detrex_r50}).state_dict
    assert_values_land(o, d, "detrex")
    # Per-layer heads stay distinct; the decoder lists the same ones.
    assert not torch.equal(o["class_embed.0.weight"], o["class_embed.1.weight"])
    assert torch.equal(o["transformer.decoder.bbox_embed.5.layers.0.weight"], d["bbox_embed.5.layers.0.weight"])


@pytest.mark.slow  # R50-size weights
def test_mmdet_values_land_in_their_official_places(mmdet_r50):
    m, o = mmdet_r50, layouts.to_official({"state_dict": mmdet_r50}).state_dict
    assert_values_land(o, m, "mmdet")
    assert torch.equal(o["input_proj.3.0.bias"], torch.zeros(256))  # mmdet's projections have no bias
    assert not any(k.endswith("num_batches_tracked") for k in o)


@pytest.mark.slow  # R50-size weights
def test_80_classes_become_the_91_coco_category_ids(mmdet_r50):
    o = layouts.to_official({"state_dict": mmdet_r50}).state_dict
    ids = torch.tensor(layouts.COCO80_IDS)
    absent = torch.tensor([i for i in range(91) if i not in layouts.COCO80_IDS])
    assert len(absent) == 11 and [COCO_NAMES[i] for i in absent.tolist()] == ["N/A"] * 11
    for ours, theirs in [("class_embed.5", "bbox_head.cls_branches.5"), ("transformer.enc_out_class_embed", "bbox_head.cls_branches.6")]:
        assert torch.equal(o[f"{ours}.weight"][ids], mmdet_r50[f"{theirs}.weight"])
        assert torch.equal(o[f"{ours}.bias"][ids], mmdet_r50[f"{theirs}.bias"])
        assert (o[f"{ours}.weight"][absent] == 0).all() and (o[f"{ours}.bias"][absent] == layouts.ABSENT_CLASS_LOGIT).all()
    # person is contiguous class 0 and category id 1; toothbrush 79 and 90.
    assert torch.equal(o["class_embed.0.bias"][1], mmdet_r50["bbox_head.cls_branches.0.bias"][0])
    assert torch.equal(o["class_embed.0.bias"][90], mmdet_r50["bbox_head.cls_branches.0.bias"][79])
    label = o["label_enc.weight"]
    assert label.shape == (92, 256) and torch.equal(label[ids], mmdet_r50["dn_query_generator.label_embedding.weight"])
    assert (label[absent] == 0).all() and (label[91] == 0).all()
    back = layouts.coco91_to_80(o)
    assert torch.equal(back["class_embed.2.weight"], mmdet_r50["bbox_head.cls_branches.2.weight"])


def test_absent_classes_are_never_selected_or_detected():
    """A converted 80-class model scores the 11 unused ids 0: top-k never picks them."""
    assert torch.sigmoid(torch.tensor(layouts.ABSENT_CLASS_LOGIT)) < 1e-40
    assert torch.sigmoid(torch.tensor(layouts.ABSENT_CLASS_LOGIT, dtype=torch.bfloat16)) == 0


@pytest.mark.slow  # R50-size weights
def test_other_class_lists_keep_their_size_and_names(mmdet_r50):
    names = ("cat", "dog", "eye")
    state = {k: (v[:3] if k.startswith("bbox_head.cls_branches") or k.startswith("dn_query_generator") else v)
             for k, v in mmdet_r50.items()}
    converted = layouts.to_official({"state_dict": state, "meta": {"dataset_meta": {"classes": names}}})
    assert converted.config_changes["class_names"] == names
    assert converted.state_dict["class_embed.0.weight"].shape == (3, 256)
    assert converted.state_dict["label_enc.weight"].shape == (4, 256)  # the official spare row, zero
    cfg = infer_config(converted.state_dict, None, converted.config_changes)
    assert cfg.num_classes == 3 and cfg.class_names == names


def test_unknown_key_is_reported_by_name():
    detrex, mmdet = meta_weights("detrex_dino_r50_4scale"), meta_weights("mmdet_dino-4scale_r50")
    with pytest.raises(layouts.LayoutError, match=r"1 detrex keys .*transformer\.encoder\.layers\.0\.bogus\.weight"):
        layouts.to_official({"model": {**detrex, "transformer.encoder.layers.0.bogus.weight": torch.zeros(1)}})
    with pytest.raises(layouts.LayoutError, match=r"mmdet keys .*neck\.fpn\.0\.weight"):
        layouts.to_official({"state_dict": {**mmdet, "neck.fpn.0.weight": torch.zeros(1)}})


def test_missing_key_is_reported_by_name():
    state = {k: v for k, v in meta_weights("mmdet_dino-4scale_r50").items() if k != "memory_trans_norm.weight"}
    converted = convert_checkpoint({"meta": {}, "state_dict": state})
    cfg = infer_config(converted.state_dict, None, converted.config_changes)
    with pytest.raises(CheckpointError, match=r"1 missing: transformer\.enc_output_norm\.weight"):
        check_fits(cfg, converted.state_dict, "mmdet_missing.pth")


def test_detrex_decoder_heads_must_be_the_models():
    state = meta_weights("detrex_dino_r50_4scale")
    state["transformer.decoder.class_embed.2.bias"] = state["class_embed.2.bias"] + 1
    with pytest.raises(layouts.LayoutError, match="transformer.decoder.class_embed.2.bias"):
        layouts.to_official({"model": state})


def test_weights_are_found_inside_wrappers_and_behind_prefixes():
    detrex_r50 = meta_weights("detrex_dino_r50_4scale")
    wrapped = {"format": "some-library", "names": {0: "person"}, "epoch": 3,
               "checkpoint": {"ema": {"model.x": torch.zeros(1)}, "weights": {f"model.{k}": v for k, v in detrex_r50.items()}}}
    layout, state = layouts.find_weights(wrapped)
    assert layout == "detrex" and "transformer.level_embeds" in state
    with pytest.raises(layouts.LayoutError, match="outside the model's prefix 'model.'"):
        layouts.find_weights({"model": {**{f"model.{k}": v for k, v in detrex_r50.items()}, "other.x": torch.zeros(1)}})


def test_mmdet_stored_config_picks_the_flavour():
    mmdet_r50 = meta_weights("mmdet_dino-4scale_r50")
    improved = "model = dict(type='DINO', positional_encoding=dict(num_feats=128, normalize=True, offset=-0.5, temperature=10000))"
    standard = "positional_encoding=dict(\n        num_feats=128, normalize=True, offset=0.0, temperature=20)"
    for text, flavour, pe in [(improved, "mmdet-improved", (10000.0, -0.5)), (standard, "mmdet", (20.0, 0.0)), (None, "mmdet", (20.0, 0.0))]:
        converted = layouts.to_official({"meta": {"cfg": text} if text else {}, "state_dict": mmdet_r50})
        cfg = infer_config(converted.state_dict, None, converted.config_changes)
        assert converted.flavour == flavour and (cfg.pe_temperature, cfg.pe_offset) == pe and cfg.box_eps == 1e-5
    forced = layouts.to_official({"meta": {"cfg": improved}, "state_dict": mmdet_r50}, flavour="mmdet")
    assert forced.flavour == "mmdet" and forced.config_changes.get("pe_temperature", 20.0) == 20.0


def test_patch_merging_weights_follow_the_unfold_order():
    """MMDetection merges 2x2 patches with nn.Unfold; converted weights make the official merge equal."""
    torch.manual_seed(0)
    dim, h, w = 8, 6, 10
    x = torch.randn(2, h * w, dim)
    norm, reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    grid = x.view(2, h, w, dim).permute(0, 3, 1, 2)
    merged = F.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)  # what mmdet's PatchMerging does
    theirs = reduction(norm(merged))
    ours = PatchMerging(dim)
    with torch.no_grad():
        ours.norm.weight.copy_(layouts.unfold_to_official_order(norm.weight))
        ours.norm.bias.copy_(layouts.unfold_to_official_order(norm.bias))
        ours.reduction.weight.copy_(layouts.unfold_to_official_order(reduction.weight))
        torch.testing.assert_close(ours(x, h, w), theirs, rtol=0, atol=1e-5)
    weight = torch.randn(16, 32)
    assert torch.equal(layouts.official_to_unfold_order(layouts.unfold_to_official_order(weight)), weight)


@pytest.mark.slow  # R50-size weights
def test_converted_file_round_trip(tmp_path, mmdet_r50):
    """mmdet file -> convert -> official file (weights_only) -> load; converting it again changes nothing."""
    from dino_demo.cli import main

    source = tmp_path / "mmdet.pth"
    meta = {"dataset_meta": {"classes": [COCO_NAMES[i] for i in layouts.COCO80_IDS]}, "cfg": "positional_encoding=dict(offset=-0.5, temperature=10000)"}
    torch.save({"meta": meta, "state_dict": mmdet_r50}, source)
    out = tmp_path / "official.pth"
    assert main(["convert", str(source), "--out", str(out)]) == 0
    stored = torch.load(out, weights_only=True)
    assert stored["source"]["layout"] == "mmdet" and stored["source"]["flavour"] == "mmdet-improved"
    assert stored["config"]["pe_temperature"] == 10000.0 and stored["config"]["shared_heads"] is False
    assert stored["class_names"] == list(COCO_NAMES)
    model, cfg = load_model(out)
    direct, direct_cfg = load_model(source)
    assert cfg == direct_cfg
    for key, value in direct.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    again = convert_checkpoint(read_checkpoint(out))
    assert again.layout == "official" and all(torch.equal(again.state_dict[k], v) for k, v in model.state_dict().items())
    # and back: the 80 class rows are the file's own
    assert torch.equal(layouts.coco91_to_80(again.state_dict)["class_embed.4.bias"], mmdet_r50["bbox_head.cls_branches.4.bias"])


def test_unshared_heads_cannot_load_into_a_shared_model():
    """Loading per-layer heads into one shared head would silently keep the last layer's."""
    state = layouts.to_official({"state_dict": meta_weights("mmdet_dino-4scale_r50")}).state_dict
    with pytest.raises(CheckpointError, match="different class/box head per decoder layer"):
        check_fits(get_config("dino-4scale-r50"), state)


def test_sizes_read_from_the_tensors_are_bounded():
    """Without a stored config the sizes come from the tensors; they too must lie within the limits."""
    state = {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
             for k, (shape, dtype) in manifest(OFFICIAL / "manifest_DINO_4scale.tsv").items()}
    state["transformer.tgt_embed.weight"] = torch.empty(10**6, 256, device="meta")
    with pytest.raises(CheckpointError, match="beyond any DINO.*num_queries"):
        infer_config(state)


def test_foreign_metadata_objects_are_read_as_inert_placeholders(tmp_path, monkeypatch):
    """mmengine's message hub pickles its HistoryBuffer and numpy values: read, never run."""
    import numpy as np

    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))

    class HistoryBuffer:
        def __init__(self):
            self.values = np.arange(3.0)

        def __setstate__(self, state):
            raise AssertionError("a checkpoint's object ran code")

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = "mmengine.logging.history_buffer", "HistoryBuffer"
    sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer
    path = tmp_path / "mmdet_with_hub.pth"
    torch.save({"meta": {"seed": np.int64(3), "dataset_meta": {"classes": ("a",) * 80}},
                "state_dict": {"level_embed": torch.zeros(4, 256)},
                "message_hub": {"log_scalars": {"loss": HistoryBuffer()}}}, path)
    checkpoint = read_checkpoint(path)
    assert repr(checkpoint["message_hub"]["log_scalars"]["loss"]) == "<opaque metadata>"
    assert repr(checkpoint["meta"]["seed"]) == "<opaque metadata>"
    assert checkpoint["meta"]["dataset_meta"]["classes"] == ("a",) * 80


def test_a_checkpoint_with_args_and_metadata_objects_reads_in_one_pass(tmp_path, monkeypatch):
    """argparse.Namespace (official `args`) next to numpy metadata: both are read, and the file is
    unpickled once (its globals come from the pickle's text, before any tensor is read)."""
    import argparse

    import numpy as np

    from dino_demo.sources import checkpoint as checkpoint_module

    path = tmp_path / "with_args.pth"
    torch.save({"model": {"level_embed": torch.zeros(4, 256)}, "args": argparse.Namespace(num_classes=91),
                "meta": {"seed": np.int64(3)}}, path)
    loads = []
    real_load = checkpoint_module._load
    monkeypatch.setattr(checkpoint_module, "_load", lambda *a: loads.append(a) or real_load(*a))
    checkpoint = read_checkpoint(path)
    assert checkpoint["args"].num_classes == 91 and repr(checkpoint["meta"]["seed"]) == "<opaque metadata>"
    assert len(loads) == 1


def test_position_encoding_of_each_flavour_is_its_sources():
    """The feature-map encoding as detrex and MMDetection write it (normalize=True, scale 2*pi,
    eps 1e-6): (cumsum + offset) / (last + eps) * scale / temperature ** (2 * (i // 2) / 128),
    sin on even and cos on odd features, y features before x. Padding on the right and bottom."""
    import math

    from dino_demo.model.position_encoding import PositionEmbeddingSine

    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, 3:, :] = True
    mask[1, :, 6:] = True
    for flavour in ("official", "detrex", "mmdet-improved"):
        cfg = get_config("dino-4scale-r50").replace(**FLAVOURS[flavour])
        ours = PositionEmbeddingSine(128, cfg.pe_temperature, cfg.pe_offset)(mask)
        not_mask = (~mask).float()
        y, x = not_mask.cumsum(1), not_mask.cumsum(2)
        y = (y + cfg.pe_offset) / (y[:, -1:, :] + 1e-6) * 2 * math.pi
        x = (x + cfg.pe_offset) / (x[:, :, -1:] + 1e-6) * 2 * math.pi
        dim_t = cfg.pe_temperature ** (2 * (torch.arange(128) // 2) / 128)
        px, py = x[..., None] / dim_t, y[..., None] / dim_t
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), 4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), 4).flatten(3)
        torch.testing.assert_close(ours, torch.cat((py, px), 3).permute(0, 3, 1, 2), rtol=0, atol=1e-6)


def test_per_layer_heads_are_distinct_modules_listed_twice():
    model = build_model(get_config("dino-tiny").replace(shared_heads=False))
    assert len({id(m) for m in model.class_embed}) == model.cfg.dec_layers
    assert model.transformer.decoder.class_embed is model.class_embed
    keys = set(model.state_dict())
    assert {"class_embed.2.weight", "transformer.decoder.bbox_embed.2.layers.0.weight"} <= keys
    assert set(build_model(get_config("dino-tiny")).state_dict()) == keys  # the same key layout as shared heads
