"""Fake (meta) kernels and autograd of the compiled `torch.ops.dino_demo` ops.

The schema is defined in C++ (`csrc/ms_deform_attn.cpp`, which names this module), so this module
is imported by `extension.load` right after the library is loaded, never before.
"""
from __future__ import annotations

import torch

from .validation import check_inputs


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
