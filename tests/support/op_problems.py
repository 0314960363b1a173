"""Problems and comparisons shared by the op tests (test_ops.py, test_ops_triton.py)."""
from __future__ import annotations

import pytest
import torch

from dino_demo.ops import ms_deform_attn_reference

TOLERANCES = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-11},
    torch.float32: {"rtol": 1e-4, "atol": 2e-5},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
}


def make_problem(
    level_shapes,
    *,
    batch=1,
    heads=2,
    channels=5,
    queries=7,
    points=3,
    dtype=torch.float64,
    device="cpu",
    seed=0,
    special_locations=True,
):
    """Random inputs in the official layouts. With `special_locations`, some sampling points sit
    exactly on the map's edges (0 and 1), on pixel edges (k / W), or far outside."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(level_shapes, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    levels = len(level_shapes)
    value = torch.randn(batch, int(areas.sum()), heads, channels, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64)
    locations = locations * 1.4 - 0.2
    if special_locations:
        flat = locations.view(-1, levels, points, 2)
        sizes = shapes.flip(1).to(torch.float64)  # (W, H) matches (x, y)
        for row in range(0, flat.shape[0], 3):
            for level in range(levels):
                kind = (row // 3 + level) % 6
                if kind == 0:
                    flat[row, level, 0] = 0.0
                elif kind == 1:
                    flat[row, level, 0] = 1.0
                elif kind == 2:  # pixel edges
                    flat[row, level, 0] = torch.tensor([1.0, 2.0]).clamp(max=sizes[level] - 1) / sizes[level]
                elif kind == 3:
                    flat[row, level, 0] = torch.tensor([0.0, 1.0])
                elif kind == 4:  # far outside
                    flat[row, level, 0] = torch.tensor([-3.0, 5.0])
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=torch.float64)
    to = {"dtype": dtype, "device": device}
    return value.to(**to), shapes.to(device), starts.to(device), locations.to(**to), weights.to(**to)


def outer_edge_problem():
    """Points at x = -1 and x = W, y = -1 and y = H in pixel units: the samples are zero, the
    gradients point towards the map as grid_sample's do."""
    value, shapes, starts, locations, weights = make_problem([[4, 6]], queries=4, points=2, special_locations=False)
    locations[:, 0, :, 0, 0] = torch.tensor([-0.5 / 6, 0.5])
    locations[:, 1, :, 0, 0] = torch.tensor([1 + 0.5 / 6, 0.5])
    locations[:, 2, :, 0, 0] = torch.tensor([0.5, -0.5 / 4])
    locations[:, 3, :, 0, 0] = torch.tensor([0.5, 1 + 0.5 / 4])
    return value, shapes, starts, locations, weights


def run_with_grads(op, inputs, grad_dtype=None):
    """Output and gradients of value, sampling_locations and attention_weights, for a random
    incoming gradient rounded to `grad_dtype` (default: the output's dtype)."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    output = op(*leaves)
    generator = torch.Generator().manual_seed(1)
    grad_output = torch.randn(output.shape, generator=generator, dtype=torch.float64)
    grad_output = grad_output.to(grad_dtype or output.dtype).to(output.dtype)
    output.backward(grad_output)
    return [output.detach()] + [leaves[i].grad for i in (0, 3, 4)]


def reference_in_float64(inputs):
    """Reference outputs and gradients for low-precision inputs, computed in float64."""
    as_float64 = [t.double() if t.is_floating_point() else t for t in inputs]
    return run_with_grads(ms_deform_attn_reference, as_float64, grad_dtype=inputs[0].dtype)


def assert_all_close(actual, expected, dtype):
    names = ("output", "grad value", "grad sampling_locations", "grad attention_weights")
    for name, a, e in zip(names, actual, expected):
        torch.testing.assert_close(a, e.to(a.dtype), **TOLERANCES[dtype], msg=lambda m, name=name: f"{name}: {m}")


CASES = {
    "one level": dict(level_shapes=[[5, 7]], batch=1, heads=1, channels=1, points=1),
    "two levels batch 3": dict(level_shapes=[[9, 11], [5, 3]], batch=3, heads=3, channels=7, points=2),
    "three levels": dict(level_shapes=[[13, 7], [7, 1], [1, 5]], batch=1, heads=2, channels=3, points=4),
    "four levels": dict(level_shapes=[[11, 15], [5, 7], [3, 3], [1, 1]], batch=3, heads=2, channels=33, points=4),
    "five levels": dict(level_shapes=[[17, 19], [9, 9], [5, 5], [3, 3], [1, 3]], batch=1, heads=4, channels=8, points=2),
}


def bad_calls(value, shapes, starts, locations, weights):
    """{expected message: op arguments} for inputs every implementation must reject with ValueError."""
    return {
        "value must be": (value[0], shapes, starts, locations, weights),
        "spatial_shapes must be": (value, shapes[:, :1], starts, locations, weights),
        "level_start_index must be": (value, shapes, starts[:1], locations, weights),
        "does not match": (value, shapes, starts, locations[:, :, :1], weights[:, :, :1]),
        "attention_weights must be": (value, shapes, starts, locations, weights[..., :1]),
        "share one dtype": (value, shapes, starts, locations.double(), weights),
        "share one dtype ": (value.bfloat16(), shapes, starts, locations, weights),  # half weights too
        "must be int64": (value, shapes.int(), starts, locations, weights),
        "floating point": (value.int(), shapes, starts, locations.int(), weights.int()),
        "values in all": (value[:, :-1], shapes, starts, locations, weights),
        "level_start_index\\[0\\]": (value, shapes, starts + 1, locations, weights),
        "empty spatial shape": (value, shapes * torch.tensor([1, 0]), starts * 0, locations, weights),
    }


def bad_grad_outputs(output):
    """{expected message: grad_output} that the backward op must reject with ValueError."""
    return {
        "grad_output must be \\[N, Lq, M \\* D\\]": output[:, :, :-1],
        "dtype and device of value": output.double() if output.dtype != torch.float64 else output.float(),
    }


def assert_backward_rejects_bad_inputs(output, inputs):
    """The registered backward op raises ValueError with the expected message for every bad call of
    `bad_calls(*inputs)` and every bad grad_output of `bad_grad_outputs(output)`."""
    for message, args in bad_calls(*inputs).items():
        with pytest.raises(ValueError, match=message):
            torch.ops.dino_demo.ms_deform_attn_backward(output, *args)
    for message, grad_output in bad_grad_outputs(output).items():
        with pytest.raises(ValueError, match=message):
            torch.ops.dino_demo.ms_deform_attn_backward(grad_output, *inputs)


def mixed_precision(inputs, dtype):
    """The op's mixed-precision form of a problem: value and attention weights in `dtype` (float16
    or bfloat16), sampling locations in float32 (what the model passes under autocast)."""
    value, shapes, starts, locations, weights = inputs
    return value.to(dtype), shapes, starts, locations.float(), weights.to(dtype)
