"""Inference-only fast paths that keep the model's outputs within the parity tolerances.

`optimize_for_inference(model)` returns a copy of a DINO for inference:
- every BatchNorm of a ResNet backbone is folded into the convolution before it (one pass over
  each feature map instead of three);
- the transformer's feed-forward layers run in token blocks with an in-place ReLU when autograd
  is off (see `transformer.feed_forward`);
- on the CPU, the transformer layers' linear projections use oneDNN with pre-packed weights
  (faster than the default BLAS on this project's AMD machines: benchmarks/RESULTS.md), when PyTorch has it;
  under autocast (bfloat16 runs) they are plain linear layers in autocast's dtype.
The multi-scale deformable attention kernels are chosen separately (`dino_demo.ops`).
The copy's state_dict is no longer the official layout: save the original, not the copy.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..model.backbone import FrozenBatchNorm2d
from ..model.detector import DINO

FFN_CHUNK = 4096


def optimize_for_inference(model: DINO, ffn_chunk: int = FFN_CHUNK) -> DINO:
    fast = copy.deepcopy(model).eval()
    for module in fast.backbone[0].modules():
        _fold_children(module)
    transformer = fast.transformer
    precast = native_bfloat16()
    for layer in [*transformer.encoder.layers, *transformer.decoder.layers]:
        layer.ffn_chunk = ffn_chunk
        if next(fast.parameters()).device.type == "cpu" and _onednn_linear_available():
            for parent in (layer, getattr(layer, "self_attn", None), getattr(layer, "cross_attn", None)):
                if parent is None:
                    continue
                for name, child in list(parent.named_children()):
                    if type(child) is nn.Linear:
                        setattr(parent, name, PackedLinear(child, precast=precast))
    for p in fast.parameters():
        p.requires_grad_(False)
    fast.inference_only = True  # checkpoint.save_checkpoint refuses it
    return fast


class PackedLinear(nn.Module):
    """An inference-only nn.Linear whose weight oneDNN has re-laid out once for fast float32 products.
    Under autocast (bfloat16 / float16 runs) it is a plain linear layer in autocast's dtype, from
    the unpacked weight that it keeps for that. `precast`: under bfloat16 autocast, use a bfloat16
    copy of the weight made once (on its first such call) instead of autocast's cast on every call
    (the same numbers); worth its memory where the CPU has native bfloat16 (`precision.support`)."""

    def __init__(self, linear: nn.Linear, rows_hint: int = FFN_CHUNK, precast: bool = False):
        super().__init__()
        weight = linear.weight.detach()
        self.out_features, self.precast = weight.shape[0], precast
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint), persistent=False)
        self.register_buffer("weight", weight, persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)
        self._bfloat16: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return F.linear(x, *self.autocast_weights(x.device.type))
        return torch.ops.mkldnn._linear_pointwise(x.float(), self.packed, self.bias, "none", [], "")

    def autocast_weights(self, device_type: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) for a product under autocast: the pre-cast bfloat16 copy when `precast`
        and autocast runs bfloat16, else the float32 ones (autocast casts them)."""
        if not self.precast or torch.get_autocast_dtype(device_type) != torch.bfloat16:
            return self.weight, self.bias
        if self._bfloat16 is None:
            bias = None if self.bias is None else self.bias.to(torch.bfloat16)
            self._bfloat16 = (self.weight.to(torch.bfloat16), bias)
        return self._bfloat16


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16, AMX): then the packed layers
    keep a bfloat16 copy of their weights for bfloat16 runs."""
    from .precision import support  # imported when a model is prepared, not with this module

    return support("cpu").native_bfloat16


def _onednn_linear_available() -> bool:
    """Whether this PyTorch has oneDNN's packed linear and it agrees with F.linear here."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        probe = nn.Linear(8, 4)
        x = torch.randn(3, 8)
        with torch.no_grad():
            return torch.allclose(PackedLinear(probe)(x), probe(x), atol=1e-5)
    except (AttributeError, RuntimeError):
        return False


def _fold_children(parent: nn.Module) -> None:
    """Fold each (conv, norm) pair among `parent`'s direct children: `convN`/`bnN` names as in
    torchvision's ResNet blocks and stem, and positions 0/1 of a `downsample` Sequential."""
    children = dict(parent.named_children())
    pairs = [(name, "bn" + name[4:]) for name in children if name.startswith("conv")]
    if isinstance(parent, nn.Sequential) and len(parent) == 2:
        pairs.append(("0", "1"))
    for conv_name, norm_name in pairs:
        conv, norm = children.get(conv_name), children.get(norm_name)
        if isinstance(conv, nn.Conv2d) and isinstance(norm, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            _fold(conv, norm)
            setattr(parent, norm_name, nn.Identity())


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift)
