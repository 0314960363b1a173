"""Our multi-scale deformable attention inside `transformers` models.

Deformable DETR, Grounding DINO, MM Grounding DINO, RT-DETR, LW-DETR and RF-DETR mark their
attention core `MultiScaleDeformableAttention` with `use_kernel_forward_from_hub`: the `kernels`
library can replace its `forward` through a layer mapping. `use_op` maps that layer to
`OpMultiScaleDeformableAttention`, which calls `dino_demo.ops.ms_deform_attn` (fused CPU kernel,
CUDA kernel, Triton or the reference: the backend `ops.backend` chooses, as for DINO), and
`kernels.kernelize` installs it; `use_op(model, False)` puts transformers' own forward back.

RT-DETR v2 calls a module-level function instead of a kernel layer; its attention module is made
kernel-replaceable with `kernels.replace_kernel_forward_from_hub` (the library's way to extend a
third-party layer) and mapped to `RTDetrV2OpAttention`, whose forward is the module's own with the
core served by our op (`RTDetrV2RecordedAttention` when our op is off: transformers' core,
reported). D-FINE keeps its core as a per-instance attribute (`ms_deformable_attn_core`), which
`use_op` sets to `CoreV2`.

The replacement layers also report the sampling locations and weights they were given to the
recorder of `capture` (when one is active), so that captured internals are what was used.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import kernels
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from . import capture

LAYER_NAME = "MultiScaleDeformableAttention"
V2_LAYER_NAME = "DinoDemoRTDetrV2Attention"
DEVICE_TYPES = ("cpu", "cuda")


def deformable_attention(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                         sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                         level_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """`ops.ms_deform_attn` with the level shapes as Python ints ([N, S, M, D] values,
    [N, Q, M, L, P, 2] locations, [N, Q, M, L, P] weights -> [N, Q, M * D])."""
    return ops.ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights.to(value.dtype), level_shapes=[tuple(int(v) for v in s)
                                                                             for s in level_shapes])


class OpMultiScaleDeformableAttention(nn.Module):
    """transformers' `MultiScaleDeformableAttention` served by our op (same signature, stateless, as
    `kernels` requires of a replacement layer)."""

    def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index, sampling_locations,
                attention_weights, im2col_step):
        return deformable_attention(value, value_spatial_shapes, level_start_index, sampling_locations,
                                    attention_weights, value_spatial_shapes_list)


def level_start(level_shapes: Sequence[tuple[int, int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(spatial_shapes [L, 2] int64, level_start_index [L] int64) of Python (H, W) pairs."""
    shapes = torch.as_tensor([tuple(int(v) for v in s) for s in level_shapes], dtype=torch.long, device=device)
    return shapes, torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])


def core_v2(value, level_shapes, sampling_locations, attention_weights, points_per_level, method="default",
            *, use_op: bool, stock=None):
    """The deformable core of RT-DETR v2 and D-FINE (locations [N, Q, M, sum(P_l), 2] (x, y) in [0, 1],
    weights [N, Q, M, sum(P_l)]), reporting the call to the active recorder, then computed by our op
    (`use_op`, bilinear method "default" only: levels with fewer points are padded with zero-weight
    points, which leaves the sum unchanged) or by transformers' own function (`stock`, default RT-DETR
    v2's `multi_scale_deformable_attention_v2`)."""
    recorder = capture.active()
    if recorder is not None:
        recorder.record_flat(sampling_locations, attention_weights, points_per_level, level_shapes)
    if not use_op or method != "default":
        core = stock or _transformers_core_v2()
        return core(value, level_shapes, sampling_locations, attention_weights, points_per_level, method)
    shapes, start = level_start(level_shapes, value.device)
    if len(set(points_per_level)) == 1:
        n, q, m = attention_weights.shape[:3]
        locations = sampling_locations.reshape(n, q, m, len(points_per_level), points_per_level[0], 2)
        weights = attention_weights.reshape(n, q, m, len(points_per_level), points_per_level[0])
    else:
        locations, weights = capture.pad_points(sampling_locations, attention_weights, points_per_level)
        locations = torch.nan_to_num(locations, nan=-1.0)  # off the map: read as zeros, and weighted 0
    return deformable_attention(value, shapes, start, locations, weights, level_shapes)


class CoreV2:
    """D-FINE's per-instance `ms_deformable_attn_core`: `core_v2` with our op, or with `stock`, the
    function transformers put there."""

    def __init__(self, use_op: bool, stock):
        self.use_op, self.stock = use_op, stock

    def __call__(self, value, level_shapes, sampling_locations, attention_weights, points_per_level,
                 method="default"):
        return core_v2(value, level_shapes, sampling_locations, attention_weights, points_per_level, method,
                       use_op=self.use_op, stock=self.stock)


def _v2_forward(module, hidden_states, attention_mask, encoder_hidden_states, position_embeddings, reference_points,
                spatial_shapes, spatial_shapes_list, use_op: bool):
    """`RTDetrV2MultiscaleDeformableAttention.forward` (transformers 5) with its core `core_v2`."""
    if position_embeddings is not None:
        hidden_states = hidden_states + position_embeddings
    batch, queries, _ = hidden_states.shape
    _, length, _ = encoder_hidden_states.shape
    value = module.value_proj(encoder_hidden_states)
    if attention_mask is not None:
        value = value.masked_fill(~attention_mask[..., None], 0.0)
    value = value.view(batch, length, module.n_heads, module.d_model // module.n_heads)
    offsets = module.sampling_offsets(hidden_states).view(batch, queries, module.n_heads,
                                                          module.n_levels * module.n_points, 2)
    weights = F.softmax(module.attention_weights(hidden_states).view(batch, queries, module.n_heads, -1), -1)
    if reference_points.shape[-1] == 2:
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
        locations = reference_points[:, :, None, :, None, :] + offsets.view(
            batch, queries, module.n_heads, module.n_levels, module.n_points, 2) / normalizer[None, None, None, :, None]
        locations = locations.flatten(3, 4)
    elif reference_points.shape[-1] == 4:
        scale = module.n_points_scale.to(dtype=hidden_states.dtype).unsqueeze(-1)
        locations = (reference_points[:, :, None, :, :2]
                     + offsets * scale * reference_points[:, :, None, :, 2:] * module.offset_scale)
    else:
        raise ValueError(f"Last dim of reference_points must be 2 or 4, but got {reference_points.shape[-1]}")
    output = core_v2(value, spatial_shapes_list, locations, weights, module.n_points_list, module.method,
                     use_op=use_op)
    return module.output_proj(output), weights


def _v2_layer(name: str, doc: str, *, use_op: bool) -> type[nn.Module]:
    """A `kernels` layer class `name` for RT-DETR v2's attention: the module's own forward through
    `_v2_forward` with `use_op` fixed (a layer may hold no member but `forward`, so the choice is bound
    here)."""

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                position_embeddings=None, reference_points=None, spatial_shapes=None, spatial_shapes_list=None,
                level_start_index=None, **kwargs):
        return _v2_forward(self, hidden_states, attention_mask, encoder_hidden_states, position_embeddings,
                           reference_points, spatial_shapes, spatial_shapes_list, use_op=use_op)

    return type(name, (nn.Module,), {"__doc__": doc, "__module__": __name__, "forward": forward})


RTDetrV2OpAttention = _v2_layer(
    "RTDetrV2OpAttention", "RT-DETR v2's attention with its core served by our op (bilinear method) and reported.",
    use_op=True)
RTDetrV2RecordedAttention = _v2_layer(
    "RTDetrV2RecordedAttention",
    "RT-DETR v2's attention with transformers' own core, reported (its path when our op is off).", use_op=False)


def _transformers_core_v2():
    from transformers.models.rt_detr_v2 import modeling_rt_detr_v2

    return modeling_rt_detr_v2.multi_scale_deformable_attention_v2


class _Layer:
    """A `kernels` repository holding one of our layer classes (its `load` returns the class)."""

    def __init__(self, layer: type[nn.Module]):
        self.layer = layer

    def load(self) -> type[nn.Module]:
        return self.layer

    def __eq__(self, other) -> bool:
        return isinstance(other, _Layer) and other.layer is self.layer

    def __hash__(self) -> int:
        return hash(self.layer)

    def __str__(self) -> str:
        return f"dino_demo {self.layer.__name__}"


_OUR_MAPPING = {LAYER_NAME: {device: _Layer(OpMultiScaleDeformableAttention) for device in DEVICE_TYPES},
                V2_LAYER_NAME: {device: _Layer(RTDetrV2OpAttention) for device in DEVICE_TYPES}}
# Without our op: transformers' forward for its kernel layer (no mapping), RT-DETR v2's reported.
_STOCK_MAPPING = {V2_LAYER_NAME: {device: _Layer(RTDetrV2RecordedAttention) for device in DEVICE_TYPES}}


def _mark_layers(model: nn.Module) -> None:
    """Make the attention classes of `model` replaceable by `kernels` (transformers marks its
    `MultiScaleDeformableAttention` itself unless hub kernels are disabled; RT-DETR v2's module is
    marked here)."""
    for module in model.modules():
        cls = type(module)
        if cls.__name__ == LAYER_NAME and not hasattr(cls, "kernel_layer_name"):
            kernels.replace_kernel_forward_from_hub(cls, LAYER_NAME)
        elif cls.__name__ == "RTDetrV2MultiscaleDeformableAttention" and not hasattr(cls, "kernel_layer_name"):
            kernels.replace_kernel_forward_from_hub(cls, V2_LAYER_NAME)


def use_op(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Serve `model`'s multi-scale deformable attention with our op (`enabled`) or with
    transformers' own code; returns `model`. Only the forwards change: outputs agree to float
    rounding (the tests hold them to 1e-5)."""
    device = next(model.parameters()).device
    if device.type not in DEVICE_TYPES:
        raise ValueError(f"our op serves {', '.join(DEVICE_TYPES)} tensors, not {device.type!r}")
    _mark_layers(model)
    kernels_log = logging.getLogger("kernels")
    level = kernels_log.level
    kernels_log.setLevel(logging.ERROR)  # "no mapping, original forward" is what we ask for when disabling
    try:
        with kernels.use_kernel_mapping(_OUR_MAPPING if enabled else _STOCK_MAPPING, inherit_mapping=False):
            kernels.kernelize(model, mode=kernels.Mode.INFERENCE, device=device.type, use_fallback=True)
    finally:
        kernels_log.setLevel(level)
    for module in model.modules():
        core = getattr(module, "ms_deformable_attn_core", None)
        if core is not None:
            module.ms_deformable_attn_core = CoreV2(enabled, core.stock if isinstance(core, CoreV2) else core)
    return model
