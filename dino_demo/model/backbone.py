"""Backbones: ResNet-50 with frozen BatchNorm, Swin-L (official checkpoint layout), a tiny ResNet.

Each backbone returns the feature maps of the stages listed in `levels`, with their padding masks
downsampled by nearest-neighbour interpolation. Module names follow the official checkpoints
(`backbone.0.body.layer1...` for ResNets, `backbone.0.layers.0.blocks.0...` for Swin).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..vision import import_torchvision

torchvision = import_torchvision()  # without torch._dynamo, which inference never uses
IntermediateLayerGetter = torchvision.models._utils.IntermediateLayerGetter
BasicBlock = torchvision.models.resnet.BasicBlock
FrozenBatchNorm2d = torchvision.ops.misc.FrozenBatchNorm2d


def downsample_mask(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of [B, H, W] bool masks, as the official backbone does."""
    return F.interpolate(masks[None].float(), size=size).to(torch.bool)[0]


FeatureMaps = list[tuple[torch.Tensor, torch.Tensor]]  # [(features [B, C, h, w], mask [B, h, w])]


class ResNetBackbone(nn.Module):
    """A torchvision ResNet trunk returning stages `levels` (0 = layer1 ... 3 = layer4)."""

    def __init__(self, resnet: nn.Module, stage_channels: tuple[int, ...], levels: tuple[int, ...]):
        super().__init__()
        return_layers = {f"layer{level + 1}": str(i) for i, level in enumerate(levels)}
        self.body = IntermediateLayerGetter(resnet, return_layers=return_layers)
        self.num_channels = [stage_channels[level] for level in levels]
        # An inference copy on the CPU (runtime.speed) sets this: under autocast (bfloat16 runs) the
        # trunk then computes channels-last, the layout oneDNN's half-precision convolutions run
        # fastest in; float32 keeps the default layout, whose sums stay within the parity tolerances.
        self.channels_last_under_autocast = False

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> FeatureMaps:
        if self.channels_last_under_autocast and torch.is_autocast_enabled(images.device.type):
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.body(images)
        return [(x, downsample_mask(mask, x.shape[-2:])) for x in features.values()]


def resnet50(levels: tuple[int, ...]) -> ResNetBackbone:
    """ResNet-50 with FrozenBatchNorm2d (eps 1e-5), weights come from the DINO checkpoint."""
    trunk = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    return ResNetBackbone(trunk, (256, 512, 1024, 2048), levels)


class _TinyResNet(torchvision.models.ResNet):
    """ResNet of BasicBlocks with stage widths 32/64/128/256, one block each, trainable BatchNorm."""

    widths = (32, 64, 128, 256)

    def __init__(self):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.dilation, self.groups, self.base_width = 1, 1, 64
        self.inplanes = self.widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, self.widths[0], 1)
        self.layer2 = self._make_layer(BasicBlock, self.widths[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, self.widths[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, self.widths[3], 1, stride=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resnet_tiny(levels: tuple[int, ...]) -> ResNetBackbone:
    return ResNetBackbone(_TinyResNet(), _TinyResNet.widths, levels)


# ---------------------------------------------------------------------------------------------
# Swin Transformer (Swin-L 384 22k as used by DINO), key layout of the official checkpoints.


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * H/window * W/window, window * window, C]."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def _window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `_window_partition`: -> [B, H, W, C]."""
    b = windows.shape[0] // (h * w // window // window)
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * window - 1) + relative[..., 1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [num_windows * B, N, C]; mask [num_windows, N, N] additive or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(bw // windows, windows, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """(Shifted) window attention + MLP, both pre-norm residual."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int, shift_mask: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % self.window, (-w) % self.window
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = self.attn(_window_partition(x, self.window), shift_mask if self.shift else None)
        x = _window_merge(x, self.window, hp, wp)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> LayerNorm -> linear 4C -> 2C (halves the resolution)."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, downsample: bool):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, shift=0 if i % 2 == 0 else window // 2) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def _shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Additive mask keeping shifted windows from attending across the wrap-around."""
        hp, wp = -(-h // self.window) * self.window, -(-w // self.window) * self.window
        shift = self.window // 2
        region = torch.zeros((1, hp, wp, 1), device=device)
        bounds = (slice(0, -self.window), slice(-self.window, -shift), slice(-shift, None))
        for i, hs in enumerate(bounds):
            for j, ws in enumerate(bounds):
                region[:, hs, ws, :] = 3 * i + j
        windows = _window_partition(region, self.window).squeeze(-1)
        diff = windows[:, None, :] - windows[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (stage output [B, h*w, C], downsampled input of the next stage or None)."""
        mask = self._shift_mask(h, w, x.device)
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x, (self.downsample(x, h, w) if self.downsample is not None else None)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 4):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x = self.proj(F.pad(x, (0, (-w) % self.patch, 0, (-h) % self.patch)))
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape)


class SwinBackbone(nn.Module):
    """Swin Transformer returning the stages in `levels`, each through its own LayerNorm `norm{i}`."""

    def __init__(self, levels: tuple[int, ...], embed_dim: int = 192, depths=(2, 2, 18, 2),
                 num_heads=(6, 12, 24, 48), window: int = 12):
        super().__init__()
        self.levels = levels
        self.patch_embed = PatchEmbed(embed_dim)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(dims[i], depths[i], num_heads[i], window, downsample=i < len(depths) - 1)
            for i in range(len(depths)))
        for i in levels:
            self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
        self.num_channels = [dims[i] for i in levels]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> FeatureMaps:
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outputs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x, h, w)
            if i in self.levels:
                out = getattr(self, f"norm{i}")(out)
                out = out.view(-1, h, w, out.shape[-1]).permute(0, 3, 1, 2).contiguous()
                outputs.append((out, downsample_mask(mask, out.shape[-2:])))
            h, w = (h + 1) // 2, (w + 1) // 2
        return outputs


def swin_large_384(levels: tuple[int, ...]) -> SwinBackbone:
    return SwinBackbone(levels)


BUILDERS = {"resnet50": resnet50, "swin-l-384": swin_large_384, "resnet-tiny": resnet_tiny}


def build_backbone(name: str, levels: tuple[int, ...]) -> nn.Module:
    try:
        return BUILDERS[name](levels)
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BUILDERS)}") from None
