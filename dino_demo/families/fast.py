"""Inference fast paths for `transformers` detectors: module replacements applied after loading.

`optimize(model)` changes a loaded transformers detector in place, module by module, keeping its
outputs equal to transformers' own within float rounding (tests/families/test_families_fast.py), and its
module tree (the capture hooks and our op's layer mapping sit on modules it leaves alone):

- **BatchNorm folded**: every convolution followed by a (frozen) BatchNorm in a ResNet / HGNet
  backbone or a conv-norm layer gets the norm's scale and shift in its own weight and bias, and
  the norm becomes an identity (one pass over each feature map instead of three);
- **pre-packed linears** (CPU, float32): every `nn.Linear` (transformer layers, backbone, heads;
  not the text encoder, see UNPACKED) becomes `PackedLinear`, oneDNN with the weight re-laid out
  once (DINO's own fast path, `runtime.speed`); under autocast they are plain linear layers in
  autocast's dtype, with bfloat16 weights cast once where the CPU has native bfloat16;
- **blocked feed-forward layers**: fc1, ReLU and fc2 of every encoder and decoder layer run in
  token blocks with the ReLU fused into fc1's product (no [tokens, ffn_dim] intermediate: 180 MB
  per Grounding DINO encoder layer at 800x1333);
- **channels-last convolutional backbones under autocast** (CPU): ResNet / HGNet trunks take their
  pixels channels-last in bfloat16 runs, oneDNN's faster layout there;
- **Grounding DINO's image-text fusion by associativity**: the fusion layer's attention projects
  every image token to a 1024-wide query and value, then reduces them against a few text tokens;
  `FoldedBiAttention` multiplies the text side into the projections first (query weight times
  text keys, text values times output weight), so the image side costs [N, 256] x [256, heads *
  T] products instead of three [N, 256] x [256, 1024] ones. Same logits, masks, clamps and
  softmaxes as transformers'.

The model's state_dict is no longer the saved layout afterwards (packed buffers, folded weights):
keep the loaded folder, not this model, as the source of truth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import speed
from ..runtime.speed import BlockedFeedForward, PackedLinear
from ..runtime.speed import onednn_linear_available as onednn_available

# (convolution, norm) attribute pairs of transformers' conv-norm layers (ResNet, HGNet, RT-DETR)
CONV_NORM_NAMES = (("convolution", "normalization"), ("conv", "norm"))
# the families' convolutional backbones (pixels in, feature maps out): not Swin, ViT or DINOv2
CONV_BACKBONES = ("DeformableDetrConvEncoder", "RTDetrConvEncoder", "RTDetrV2ConvEncoder", "DFineConvEncoder")
# modules whose linears stay as they are: heads read by the capture code, tiny MLPs
FFN_OWNERS = ("DeformableDetrMLP",)
FUSION_ATTENTION = "GroundingDinoBiMultiHeadAttention"
# submodules whose linears stay unpacked: Grounding DINO's BERT reads a few prompt tokens, where a
# packed copy of its ~85M linear weights would cost memory and gain nothing measurable
UNPACKED = frozenset({"text_backbone"})


def optimize(model: nn.Module) -> nn.Module:
    """Apply the fast paths above to a transformers detector in eval mode; returns `model`."""
    device = next(model.parameters()).device
    packed = device.type == "cpu" and onednn_available()
    precast = packed and speed.native_bfloat16()
    fold_batch_norms(model)
    block_feed_forwards(model, packed, precast)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == FUSION_ATTENTION:
                setattr(parent, name, FoldedBiAttention(child))
    if packed:
        pack_linears(model, precast)
    if device.type == "cpu":
        channels_last_under_autocast(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.dino_demo_fast = True
    return model


# -- channels-last convolutional backbones in half precision ------------------------------------

def channels_last_under_autocast(model: nn.Module) -> int:
    """Make each convolutional backbone of `model` (CONV_BACKBONES: ResNet / HGNet trunks) take its
    pixels channels-last under autocast, the layout oneDNN's bfloat16 convolutions run fastest in
    (float32 keeps the default layout and transformers' sums); returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in CONV_BACKBONES:
            module.register_forward_pre_hook(_channels_last_pixels, with_kwargs=True)
            count += 1
    return count


def _channels_last_pixels(module, args, kwargs):
    pixels = args[0] if args else kwargs["pixel_values"]
    if not torch.is_autocast_enabled(pixels.device.type):
        return None
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    if args:
        return (pixels, *args[1:]), kwargs
    return args, {**kwargs, "pixel_values": pixels}


# -- BatchNorm folding ---------------------------------------------------------------------------

def fold_batch_norms(model: nn.Module) -> int:
    """Fold each (conv, BatchNorm) pair of `model`'s conv-norm layers; returns how many."""
    folded = 0
    for module in model.modules():
        for conv_name, norm_name in CONV_NORM_NAMES:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if isinstance(conv, nn.Conv2d) and _is_batch_norm(norm):
                _fold(conv, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


def _is_batch_norm(norm) -> bool:
    if isinstance(norm, nn.BatchNorm2d):
        return not norm.training and norm.track_running_stats
    return (isinstance(norm, nn.Module) and type(norm).__name__.endswith("FrozenBatchNorm2d")
            and all(hasattr(norm, k) for k in ("weight", "bias", "running_mean", "running_var")))


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    eps = getattr(norm, "eps", 1e-5)  # transformers' frozen norms add a fixed 1e-5
    scale = norm.weight * (norm.running_var + eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift)


# -- pre-packed linears and blocked feed-forward layers -----------------------------------------

class _FeedForwardMLP(nn.Module):
    """Deformable DETR's `DeformableDetrMLP` (fc1, activation, dropout, fc2) as one blocked layer."""

    def __init__(self, ffn: BlockedFeedForward):
        super().__init__()
        self.ffn = ffn

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.ffn(hidden_states)


def _is_relu(module) -> bool:
    return isinstance(module, nn.ReLU) or type(module).__name__ == "ReLU"


def block_feed_forwards(model: nn.Module, packed: bool, precast: bool = False) -> int:
    """Replace each ReLU feed-forward (a module with `fc1`, `fc2` and a ReLU `activation_fn` /
    `activation`, used as act(fc1(x)) then fc2) by a `BlockedFeedForward`; returns how many.
    Inline ones (Grounding DINO's layers call `self.fc2(self.activation_fn(self.fc1(x)))`) keep
    their attributes: fc1 becomes the whole block, the activation and fc2 identities."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ in FFN_OWNERS and _is_relu(getattr(child, "activation_fn", None)):
                ffn = BlockedFeedForward(child.fc1, child.fc2, packed, precast=precast)
                setattr(parent, name, _FeedForwardMLP(ffn))
                count += 1
        if type(parent).__name__ in FFN_OWNERS:
            continue
        fc1, fc2 = getattr(parent, "fc1", None), getattr(parent, "fc2", None)
        act_name = next((n for n in ("activation_fn", "activation") if hasattr(parent, n)), None)
        if (type(fc1) is nn.Linear and type(fc2) is nn.Linear and act_name
                and _is_relu(getattr(parent, act_name)) and type(parent).__name__.startswith(_INLINE_FFN)):
            parent.fc1 = BlockedFeedForward(fc1, fc2, packed, precast=precast)
            setattr(parent, act_name, nn.Identity())
            parent.fc2 = nn.Identity()
            count += 1
    return count


# layers whose forward is x -> fc2(dropout(act(fc1(x)))) with nothing else read from fc1 / fc2
_INLINE_FFN = ("GroundingDinoDeformableLayer", "GroundingDinoDecoderLayer", "GroundingDinoTextEnhancerLayer",
               "DeformableDetrDecoderLayer", "DeformableDetrEncoderLayer")


def pack_linears(model: nn.Module, precast: bool = False) -> int:
    """Replace every plain `nn.Linear` of `model` (but those under UNPACKED) by a `PackedLinear`;
    returns how many."""
    count = 0
    for qualified, parent in list(model.named_modules()):
        if UNPACKED.intersection(qualified.split(".")):
            continue
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinear(child, precast=precast))
                count += 1
    return count


# -- Grounding DINO's image-text fusion ----------------------------------------------------------

class FoldedBiAttention(nn.Module):
    """`GroundingDinoBiMultiHeadAttention` computed with the text side folded into the image-side
    projections (same inputs, outputs and weights; see the module docstring).

    vision_features [B, N, C], text_features [B, T, C]; masks [B, N] / [B, T] bool, True where
    masked. Returns ((vision_out [B, N, C], vision_weights [B*h, N, T]),
    (text_out [B, T, C], text_weights [B*h, T, N])).
    """

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.num_heads, self.head_dim, self.embed_dim = attention.num_heads, attention.head_dim, attention.embed_dim
        self.scale, self.dropout = attention.scale, attention.dropout
        for name in ("vision_proj", "text_proj", "values_vision_proj", "values_text_proj", "out_vision_proj",
                     "out_text_proj"):
            setattr(self, name, getattr(attention, name))

    def forward(self, vision_features, text_features, vision_attention_mask=None, text_attention_mask=None):
        batch, length, channels = vision_features.shape
        heads, dim = self.num_heads, self.head_dim
        tokens = text_features.shape[1]
        keys = self.text_proj(text_features).view(batch, tokens, heads, dim)  # [B, T, h, d]
        # logits[b, n, h, t] = scale * (x_n Wq_h^T + bq_h) . k_{h,t}
        w_q = self.vision_proj.weight.view(heads, dim, channels)
        b_q = self.vision_proj.bias.view(heads, dim)
        folded = torch.einsum("hdc,bthd->bcht", w_q, keys).reshape(batch, channels, heads * tokens)
        offset = torch.einsum("hd,bthd->bht", b_q, keys).reshape(batch, 1, heads * tokens)
        logits = torch.baddbmm(offset, vision_features, folded) * self.scale  # [B, N, h*T]
        attn_weights = logits.view(batch, length, heads, tokens).permute(0, 2, 1, 3).reshape(batch * heads, length,
                                                                                            tokens)
        attn_weights = attn_weights - attn_weights.max()
        attn_weights = torch.clamp(attn_weights, min=-50000, max=50000)
        transposed = attn_weights.transpose(1, 2)
        text_attn_weights = transposed - torch.max(transposed, dim=-1, keepdim=True)[0]
        text_attn_weights = torch.clamp(text_attn_weights, min=-50000, max=50000)
        if vision_attention_mask is not None:
            mask = vision_attention_mask[:, None, None, :].repeat(1, heads, 1, 1).flatten(0, 1)
            text_attn_weights.masked_fill_(mask, float("-inf"))
        text_attn_weights = text_attn_weights.softmax(dim=-1)  # [B*h, T, N]
        if text_attention_mask is not None:
            mask = text_attention_mask[:, None, None, :].repeat(1, heads, 1, 1).flatten(0, 1)
            attn_weights.masked_fill_(mask, float("-inf"))
        vision_attn_weights = attn_weights.softmax(dim=-1)  # [B*h, N, T]
        vision_probs = F.dropout(vision_attn_weights, p=self.dropout, training=self.training)
        text_probs = F.dropout(text_attn_weights, p=self.dropout, training=self.training)

        # image side: sum_h P_h (V_text,h Wo_h^T) + bo
        text_values = self.values_text_proj(text_features).view(batch, tokens, heads, dim)
        w_o = self.out_vision_proj.weight.view(channels, heads, dim)
        mixed = torch.einsum("bthd,chd->bhtc", text_values, w_o).reshape(batch, heads * tokens, channels)
        probs = vision_probs.view(batch, heads, length, tokens).permute(0, 2, 1, 3).reshape(batch, length,
                                                                                              heads * tokens)
        vision_out = torch.baddbmm(self.out_vision_proj.bias.view(1, 1, channels), probs, mixed)

        # text side: P_h (X Wv_h^T + bv_h) = (P_h X) Wv_h^T + bv_h, rows of P_h summing to one
        pooled = torch.bmm(text_probs.view(batch, heads * tokens, length), vision_features)  # [B, h*T, C]
        w_v = self.values_vision_proj.weight.view(heads, dim, channels)
        text_out = torch.einsum("bhtc,hdc->bthd", pooled.view(batch, heads, tokens, channels), w_v)
        text_out = text_out + self.values_vision_proj.bias.view(heads, dim)
        text_out = self.out_text_proj(text_out.reshape(batch, tokens, self.embed_dim))
        return (vision_out, vision_attn_weights), (text_out, text_attn_weights)
