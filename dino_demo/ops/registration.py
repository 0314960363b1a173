"""The `torch.ops.dino_demo` ops: schema, fake kernels and autograd.

The schema is defined here, in Python, so the ops exist on machines that cannot compile anything;
importing `dino_demo.ops` defines them (and builds nothing). The libraries built from `csrc/`
register the device kernels (`TORCH_LIBRARY_IMPL` for CPU and CUDA) when `extension.load` loads
them.
"""
from __future__ import annotations

import torch

from .validation import check_grad_output, check_inputs

_definitions = torch.library.Library("dino_demo", "DEF")
_definitions.define(
    "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
    "Tensor sampling_locations, Tensor attention_weights) -> Tensor"
)
_definitions.define(
    "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
    "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
    "-> (Tensor grad_value, Tensor grad_sampling_locations, Tensor grad_attention_weights)"
)


@torch.library.register_fake("dino_demo::ms_deform_attn")
def _ms_deform_attn_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    batch, _, heads, channels = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * channels))


@torch.library.register_fake("dino_demo::ms_deform_attn_backward")
def _ms_deform_attn_backward_fake(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
):
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_grad_output(grad_output, value, sampling_locations)
    return (
        value.new_empty(value.shape),
        sampling_locations.new_empty(sampling_locations.shape),
        attention_weights.new_empty(attention_weights.shape),
    )


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.dino_demo.ms_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return grad_value, None, None, grad_locations, grad_weights


torch.library.register_autograd("dino_demo::ms_deform_attn", _backward, setup_context=_setup_context)
