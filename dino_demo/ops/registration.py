"""The `torch.ops.dino_demo` ops: schema, fake kernels, autograd, and the kernel serving each device type.

The schema is defined here, in Python, so the ops exist on machines that cannot compile anything;
importing `dino_demo.ops` defines them (and builds nothing). Device kernels come from two places,
both registered for the dispatch key of a device type ("CPU", "CUDA"):

- compiled: the libraries built from `csrc/` register theirs (`TORCH_LIBRARY_IMPL`) when
  `extension.load` loads them, once per process;
- Triton: `serve(device_type, "triton")` registers `triton_kernels`' functions in a
  `torch.library.Library` of its own, which ends the registration when it is dropped.

The dispatcher runs the kernel registered last for a key, so `serve` switches a device type
between the two: "triton" puts the Triton kernels on top, "compiled" drops them, uncovering the
compiled kernel. `dino_demo.ops.backend()` calls it for the implementation it chooses, so direct
`torch.ops.dino_demo` calls run what the last `backend()` call for that device type chose.
"""
from __future__ import annotations

import threading

import torch

from . import extension
from .validation import check_grad_output, check_inputs

NAMESPACE = "dino_demo"
OPS = ("ms_deform_attn", "ms_deform_attn_backward")

_definitions = torch.library.Library(NAMESPACE, "DEF")
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

# device type -> (Library holding the Triton registrations, whether the compiled library of that
# device type was loaded when they were made)
_triton_registrations: dict[str, tuple[torch.library.Library, bool]] = {}
_lock = threading.Lock()


def serve(device_type: str, implementation: str) -> None:
    """Make the dispatcher run `implementation` ("compiled" or "triton") for tensors of `device_type`.

    "compiled" expects `extension.load(device_type)` to have succeeded. "triton" imports triton.
    """
    if implementation not in ("compiled", "triton"):
        raise ValueError(f"implementation must be 'compiled' or 'triton', got {implementation!r}")
    with _lock:
        current = _triton_registrations.get(device_type)
        if implementation == "compiled":
            _triton_registrations.pop(device_type, None)
            return
        compiled_loaded = extension.loaded(device_type)
        # Still on top unless the compiled library was loaded (and registered) after it.
        if current is not None and current[1] == compiled_loaded:
            return
        _triton_registrations.pop(device_type, None)
        _triton_registrations[device_type] = (_register_triton(device_type), compiled_loaded)


def _register_triton(device_type: str) -> torch.library.Library:
    from .triton_kernels import ms_deform_attn_backward_triton, ms_deform_attn_triton

    library = torch.library.Library(NAMESPACE, "IMPL")
    for name, kernel in zip(OPS, (ms_deform_attn_triton, ms_deform_attn_backward_triton)):
        torch.library.register_kernel(f"{NAMESPACE}::{name}", device_type, kernel, lib=library)
    return library
