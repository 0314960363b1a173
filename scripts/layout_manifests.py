"""Write the key manifests of detrex's and MMDetection's DINO into tests/fixtures/layouts/.

    python scripts/layout_manifests.py [--mmdet] [--detrex] [--out tests/fixtures/layouts]

Each line: `key<TAB>[shape]<TAB>dtype<TAB>param|buffer`, as the official manifests.

MMDetection (`--mmdet`, needs mmdet 3.x, mmengine and mmcv-lite installed): builds the model of
MMDetection's own DINO configs (configs/dino/*.py shipped inside the mmdet package) and lists its
state_dict. mmcv-lite lacks the compiled `mmcv._ext`; a stand-in module that refuses every call is
registered under that name so that `mmcv.ops` imports (building the model calls none of it).

detrex (`--detrex`): detrex needs detectron2, which does not install here, so its layout is
rebuilt from detrex's source as a tree of plain PyTorch modules with detrex's module names and
shapes (projects/dino/configs/models/dino_r50.py and dino_swin_large_384.py for the sizes,
projects/dino/modeling/dino.py and dino_transformer.py, detrex/layers/{transformer,attention,
mlp,multi_scale_deform_attn}.py, detrex/modeling/neck/channel_mapper.py, detectron2's
modeling/backbone/{resnet,swin}.py and layers/batch_norm.py). Each class below names the source
it mirrors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "layouts"

MMDET_CONFIGS = {  # manifest name -> MMDetection config
    "mmdet_dino-4scale_r50": "dino-4scale_r50_8xb2-12e_coco.py",
    "mmdet_dino-5scale_swin-l": "dino-5scale_swin-l_8xb2-12e_coco.py",
}


def write_manifest(model: nn.Module, path: Path) -> int:
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    lines = [f"{k}\t{json.dumps(list(v.shape))}\t{str(v.dtype).removeprefix('torch.')}\t"
             f"{'param' if k in params else 'buffer'}" for k, v in model.state_dict().items()]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


# -- MMDetection ---------------------------------------------------------------------------------
def register_mmcv_ext_stand_in() -> None:
    """mmcv-lite has no compiled `mmcv._ext`: register a module whose every function refuses to run."""

    class MissingExtension(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)

            def refuse(*args, **kwargs):
                raise RuntimeError(f"mmcv._ext.{name} is not available in mmcv-lite")

            return refuse

    sys.modules.setdefault("mmcv._ext", MissingExtension("mmcv._ext"))


def mmdet_model(config_name: str, overrides: dict | None = None) -> nn.Module:
    """MMDetection's DINO from one of its own configs (with `overrides`, dotted keys under `model.`),
    pretrained-weight loading switched off."""
    register_mmcv_ext_stand_in()
    import mmdet
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "dino", config_name))
    cfg.model.backbone.init_cfg = None
    if overrides:
        cfg.merge_from_dict({f"model.{k}": v for k, v in overrides.items()})
    return MODELS.build(cfg.model)


# -- detrex, rebuilt from its source -------------------------------------------------------------
class FrozenBN(nn.Module):
    """detectron2/layers/batch_norm.py FrozenBatchNorm2d: four buffers, no num_batches_tracked."""

    def __init__(self, n: int):
        super().__init__()
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, torch.zeros(n))


class D2Conv(nn.Conv2d):
    """detectron2/layers/wrappers.py Conv2d: a convolution with its norm as a child `norm`."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.norm = FrozenBN(cout)


class Bottleneck(nn.Module):
    """detectron2/modeling/backbone/resnet.py BottleneckBlock: shortcut (when shapes change),
    conv1 1x1, conv2 3x3 (stride here: stride_in_1x1=False), conv3 1x1."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        if cin != cout:
            self.shortcut = D2Conv(cin, cout, 1, stride)
        self.conv1 = D2Conv(cin, mid, 1)
        self.conv2 = D2Conv(mid, mid, 3, stride)
        self.conv3 = D2Conv(mid, cout, 1)


class D2ResNet50(nn.Module):
    """detectron2 ResNet(BasicStem, make_default_stages(depth=50)): `stem.conv1`, `res2`..`res5`."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv1 = D2Conv(3, 64, 7, 2)
        cin = 64
        for stage, (blocks, mid) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=2):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(cin, mid, mid * 4, 2 if b == 0 and stage > 2 else 1))
                cin = mid * 4
            self.add_module(f"res{stage}", nn.Sequential(*layers))


class SwinBlock(nn.Module):
    """detectron2/modeling/backbone/swin.py SwinTransformerBlock (with WindowAttention, Mlp)."""

    def __init__(self, dim: int, heads: int, window: int = 12):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.attn.register_buffer("relative_position_index", torch.zeros(window * window, window * window, dtype=torch.long))
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = nn.Linear(4 * dim, dim)


class D2SwinLarge(nn.Module):
    """detectron2 SwinTransformer(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48),
    window_size=12): `patch_embed`, `layers.i.blocks.j`, `layers.i.downsample` (PatchMerging),
    `norm{i}` for the out_indices only."""

    def __init__(self, out_indices: tuple[int, ...]):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 192, 4, 4)
        self.patch_embed.norm = nn.LayerNorm(192)
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip((2, 2, 18, 2), (6, 12, 24, 48))):
            dim = 192 * 2**i
            stage = nn.Module()
            stage.blocks = nn.ModuleList(SwinBlock(dim, heads) for _ in range(depth))
            if i < 3:
                stage.downsample = nn.Module()
                stage.downsample.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
                stage.downsample.norm = nn.LayerNorm(4 * dim)
            self.layers.append(stage)
        for i in out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(192 * 2**i))


class ConvNormAct(nn.Module):
    """detrex/layers/conv.py ConvNormAct: `conv` (with bias, the default) and `norm` (GroupNorm)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2)
        self.norm = nn.GroupNorm(32, cout)


class ChannelMapper(nn.Module):
    """detrex/modeling/neck/channel_mapper.py: 1x1 `convs`, 3x3 stride-2 `extra_convs` (the first on
    the last backbone level's raw output)."""

    def __init__(self, channels: list[int], num_outs: int, dim: int = 256):
        super().__init__()
        self.convs = nn.ModuleList(ConvNormAct(c, dim, 1) for c in channels)
        self.extra_convs = nn.ModuleList(ConvNormAct(channels[-1] if i == 0 else dim, dim, 3, 2)
                                         for i in range(num_outs - len(channels)))


class MSDeformAttn(nn.Module):
    """detrex/layers/multi_scale_deform_attn.py MultiScaleDeformableAttention (8 heads, 4 points)."""

    def __init__(self, levels: int, dim: int = 256, heads: int = 8, points: int = 4):
        super().__init__()
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)


class MultiheadAttention(nn.Module):
    """detrex/layers/attention.py MultiheadAttention: nn.MultiheadAttention as `attn`."""

    def __init__(self, dim: int = 256, heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)


class FFN(nn.Module):
    """detrex/layers/mlp.py FFN(num_fcs=2): layers = [Sequential(Linear, ReLU, Dropout), Linear, Dropout]."""

    def __init__(self, dim: int = 256, hidden: int = 2048):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout()),
                                    nn.Linear(hidden, dim), nn.Dropout())


class TransformerLayer(nn.Module):
    """detrex/layers/transformer.py BaseTransformerLayer: `attentions`, `ffns`, `norms` lists."""

    def __init__(self, attentions: list[nn.Module], norms: int):
        super().__init__()
        self.attentions = nn.ModuleList(attentions)
        self.ffns = nn.ModuleList([FFN()])
        self.norms = nn.ModuleList(nn.LayerNorm(256) for _ in range(norms))


class MLP(nn.Module):
    """detrex/layers/mlp.py MLP: `layers.i` linears."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))


class DetrexDINO(nn.Module):
    """projects/dino/modeling/dino.py DINO with DINOTransformer (dino_transformer.py): per-layer heads
    `class_embed.0..6` / `bbox_embed.0..6` (the last for the encoder's proposals), also registered as
    `transformer.decoder.class_embed` / `bbox_embed`; `label_enc` with one row per class."""

    def __init__(self, swin: bool, levels: int, num_classes: int = 80, queries: int = 900):
        super().__init__()
        five = levels == 5
        if swin:
            self.backbone = D2SwinLarge((0, 1, 2, 3) if five else (1, 2, 3))
            channels = [192, 384, 768, 1536] if five else [384, 768, 1536]
        else:
            self.backbone = D2ResNet50()
            channels = [256, 512, 1024, 2048] if five else [512, 1024, 2048]
        self.neck = ChannelMapper(channels, levels)
        self.transformer = nn.Module()
        t = self.transformer
        t.encoder = nn.Module()
        t.encoder.layers = nn.ModuleList(TransformerLayer([MSDeformAttn(levels)], 2) for _ in range(6))
        t.decoder = nn.Module()
        t.decoder.layers = nn.ModuleList(
            TransformerLayer([MultiheadAttention(), MSDeformAttn(levels)], 3) for _ in range(6))
        t.decoder.ref_point_head = MLP([512, 256, 256])
        t.decoder.norm = nn.LayerNorm(256)
        t.level_embeds = nn.Parameter(torch.zeros(levels, 256))
        t.tgt_embed = nn.Embedding(queries, 256)
        t.enc_output = nn.Linear(256, 256)
        t.enc_output_norm = nn.LayerNorm(256)
        self.class_embed = nn.ModuleList(nn.Linear(256, num_classes) for _ in range(7))
        self.bbox_embed = nn.ModuleList(MLP([256, 256, 256, 4]) for _ in range(7))
        self.label_enc = nn.Embedding(num_classes, 256)
        t.decoder.class_embed = self.class_embed
        t.decoder.bbox_embed = self.bbox_embed


DETREX_MODELS = {  # manifest name -> (swin, levels), the configs of projects/dino/configs/
    "detrex_dino_r50_4scale": (False, 4),
    "detrex_dino_r50_5scale": (False, 5),
    "detrex_dino_swin_large_384_4scale": (True, 4),
    "detrex_dino_swin_large_384_5scale": (True, 5),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmdet", action="store_true", help="build MMDetection's models (needs mmdet)")
    parser.add_argument("--detrex", action="store_true", help="write detrex's layouts")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.detrex:
        for name, (swin, levels) in DETREX_MODELS.items():
            with torch.device("meta"):
                model = DetrexDINO(swin, levels)
            print(name, write_manifest(model, args.out / f"{name}.tsv"))
    if args.mmdet:
        for name, config in MMDET_CONFIGS.items():
            print(name, write_manifest(mmdet_model(config), args.out / f"{name}.tsv"))
    if not (args.mmdet or args.detrex):
        parser.error("choose --mmdet and/or --detrex")
    return 0


if __name__ == "__main__":
    sys.exit(main())
