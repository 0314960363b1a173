"""Inference-only fast paths that keep the model's outputs within the parity tolerances.

`optimize_for_inference(model)` returns a copy of a DINO for inference:
- every BatchNorm of a ResNet backbone is folded into the convolution before it (one pass over
  each feature map instead of three), and on the CPU under bfloat16 autocast the ResNet computes
  channels-last, oneDNN's faster layout there (in float32 it would move the encoder's outputs
  past the parity tolerances);
- the transformer's feed-forward layers become `BlockedFeedForward`: tokens in blocks of 4096 with
  the ReLU fused into the first product, so the [tokens, ffn_dim] intermediate stays in cache
  instead of being allocated whole (one per encoder layer; see benchmarks/RESULTS.md);
- on the CPU, the transformer layers' linear projections and the prediction heads use oneDNN
  with pre-packed weights
  (`PackedLinear`: faster than the default BLAS on this project's AMD machines), when PyTorch has
  it. Under bfloat16 autocast, where the CPU computes in bfloat16 natively, they keep a second
  copy packed in bfloat16, made once, instead of autocast's cast of the weight at every call;
- on the CPU, the deformable attention skips masking its values when no token is padding (a
  single image).
The multi-scale deformable attention kernels are chosen separately (`dino_demo.ops`).
The copy's state_dict is no longer the official layout: save the original, not the copy.
`PackedLinear` and `BlockedFeedForward` serve the transformers families' fast path too
(`families.fast`).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..model.attention import MSDeformAttn
from ..model.backbone import FrozenBatchNorm2d
from ..model.detector import DINO

FFN_BLOCK = 4096


def optimize_for_inference(model: DINO, ffn_block: int = FFN_BLOCK) -> DINO:
    fast = copy.deepcopy(model).eval()
    backbone = fast.backbone[0]
    for module in backbone.modules():
        _fold_children(module)
    on_cpu = next(fast.parameters()).device.type == "cpu"
    if on_cpu and hasattr(backbone, "channels_last_under_autocast"):  # ResNets
        backbone.channels_last_under_autocast = True
    transformer = fast.transformer
    packed = on_cpu and onednn_linear_available()
    precast = packed and native_bfloat16()
    packs: dict[int, PackedLinear] = {}  # one packed copy of a head the layers share
    for layer in [*transformer.encoder.layers, *transformer.decoder.layers]:
        layer.fast_feed_forward = BlockedFeedForward(layer.linear1, layer.linear2, packed, ffn_block, precast)
        for attention in (layer.self_attn, getattr(layer, "cross_attn", None)):
            if isinstance(attention, MSDeformAttn):  # the check would cost a GPU a synchronisation
                attention.skip_unpadded_mask = on_cpu
            if packed and attention is not None:
                _pack_linears(attention, precast, packs)
    if packed:  # the two-stage selection's and the decoder's heads (DINO's `class_embed` and
        # `bbox_embed` are the decoder's, the same ModuleLists)
        decoder = transformer.decoder
        for parent in (transformer, transformer.enc_out_bbox_embed.layers, decoder.ref_point_head.layers,
                       decoder.class_embed, *(mlp.layers for mlp in decoder.bbox_embed)):
            _pack_linears(parent, precast, packs)
    for p in fast.parameters():
        p.requires_grad_(False)
    fast.inference_only = True  # checkpoint.save_checkpoint refuses it
    return fast


class PackedLinear(nn.Module):
    """An inference-only nn.Linear (any leading dims, optionally followed by a ReLU: `relu`) whose
    weight oneDNN has re-laid out once for fast float32 products.

    Under autocast (bfloat16 / float16 runs) it computes in autocast's dtype. `precast`: under
    bfloat16 autocast, use a bfloat16 copy of the weight made once (on the first such call),
    packed for oneDNN where this PyTorch can, instead of autocast's cast on every call; worth its
    memory where the CPU has native bfloat16 (`precision.support`). Outside autocast, inputs are
    computed in float32."""

    def __init__(self, linear: nn.Linear, relu: bool = False, rows_hint: int = FFN_BLOCK, precast: bool = False):
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.relu, self.precast, self.rows_hint = relu, precast, rows_hint
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint), persistent=False)
        self.register_buffer("weight", weight, persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)
        self._bfloat16: _Bfloat16Weights | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if not torch.is_autocast_enabled(device_type):
            return torch.ops.mkldnn._linear_pointwise(x.float(), self.packed, self.bias, self._attr, [], "")
        if self.precast and torch.get_autocast_dtype(device_type) == torch.bfloat16:
            return self.bfloat16_weights()(x.to(torch.bfloat16), self.relu)
        y = F.linear(x, self.weight, self.bias)
        return F.relu(y) if self.relu else y

    @property
    def _attr(self) -> str:
        return "relu" if self.relu else "none"

    def bfloat16_weights(self) -> _Bfloat16Weights:
        """The bfloat16 copy of the weight and bias (made on the first call)."""
        if self._bfloat16 is None:
            self._bfloat16 = _Bfloat16Weights.of(self.weight, self.bias, self.rows_hint)
        return self._bfloat16


class _Bfloat16Weights:
    """A linear layer's weight and bias in bfloat16, the weight packed for oneDNN when this
    PyTorch can (else a plain bfloat16 tensor for F.linear)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, packed: bool):
        self.weight, self.bias, self.packed = weight, bias, packed

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None, rows_hint: int) -> _Bfloat16Weights:
        weight = weight.to(torch.bfloat16)
        bias = None if bias is None else bias.to(torch.bfloat16)
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
            probe = torch.zeros(1, weight.shape[1], dtype=torch.bfloat16, device=weight.device)
            torch.ops.mkldnn._linear_pointwise(probe, packed, bias, "none", [], "")  # the CPU may refuse it here
            return cls(packed, bias, True)
        except RuntimeError:  # oneDNN without bfloat16 products on this build or CPU
            return cls(weight, bias, False)

    def __call__(self, x: torch.Tensor, relu: bool) -> torch.Tensor:
        """x [..., in] bfloat16 -> [..., out] bfloat16 (float32 accumulation), ReLU'd with `relu`."""
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "relu" if relu else "none", [], "")
        y = F.linear(x, self.weight, self.bias)
        return F.relu_(y) if relu else y


class BlockedFeedForward(nn.Module):
    """relu(x W1^T + b1) W2^T + b2 over [..., C] inputs, in blocks of `block` tokens when autograd
    is off: the [tokens, hidden] intermediate exists one block at a time, and with `packed` the
    ReLU is fused into the first product (`PackedLinear`). Same arithmetic per row."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, packed: bool, block: int = FFN_BLOCK, precast: bool = False):
        super().__init__()
        self.block = block
        self.fc1 = PackedLinear(fc1, relu=True, precast=precast) if packed else _ReluLinear(fc1)
        self.fc2 = PackedLinear(fc2, precast=precast) if packed else fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] <= self.block or torch.is_grad_enabled():
            return self.fc2(self.fc1(x))
        first = self.fc2(self.fc1(flat[:self.block]))
        out = first.new_empty((flat.shape[0], first.shape[-1]))
        out[:self.block] = first
        for start in range(self.block, flat.shape[0], self.block):
            out[start:start + self.block] = self.fc2(self.fc1(flat[start:start + self.block]))
        return out.view(*x.shape[:-1], out.shape[-1])


class _ReluLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(x))


def _pack_linears(parent: nn.Module, precast: bool, packs: dict[int, PackedLinear]) -> None:
    """Replace `parent`'s direct `nn.Linear` children by `PackedLinear`s; a linear met before (a
    head shared by the decoder's layers) gets the same packed copy."""
    # a ModuleList by position: named_children() lists a module held at several positions once
    children = [(str(i), child) for i, child in enumerate(parent)] if isinstance(parent, nn.ModuleList) \
        else list(parent.named_children())
    for name, child in children:
        if type(child) is nn.Linear:
            if id(child) not in packs:
                packs[id(child)] = PackedLinear(child, precast=precast)
            setattr(parent, name, packs[id(child)])


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16, AMX): then the packed layers
    keep a bfloat16 copy of their weights for bfloat16 runs."""
    from .precision import support  # imported when a model is prepared, not with this module

    return support("cpu").native_bfloat16


def onednn_linear_available() -> bool:
    """Whether this PyTorch has oneDNN's packed linear and it agrees with F.linear here (with its
    fused ReLU, on inputs with leading dims)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        probe = nn.Linear(8, 4)
        x = torch.randn(2, 3, 8)
        with torch.no_grad():
            return bool(torch.allclose(PackedLinear(probe, relu=True)(x), F.relu(probe(x)), atol=1e-5))
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
