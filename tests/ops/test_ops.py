"""dino_demo.ops: the compiled kernels against the pure-PyTorch reference, backend choice, input checks.

The kernel tests fail (rather than skip) when the CPU kernel cannot be built, so a broken build
shows up in CI; with DINO_DEMO_OP other than "auto" they are skipped. The CUDA tests (marker
`cuda`) are skipped without a GPU. The Triton kernels are tested in test_ops_triton.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dino_demo import ops
from dino_demo.ops import extension, ms_deform_attn, ms_deform_attn_reference
from op_problems import CASES, assert_all_close, assert_backward_rejects_bad_inputs, bad_calls, make_problem
from op_problems import mixed_precision, outer_edge_problem, reference_in_float64, run_with_grads


@pytest.fixture(scope="module", autouse=True)
def cpu_kernel():
    choice = os.environ.get("DINO_DEMO_OP") or "auto"
    if choice != "auto":
        pytest.skip(f"compiled kernels not chosen (DINO_DEMO_OP={choice})")
    implementation, reason = ops.backend("cpu")
    assert implementation == "cpu-kernel", reason



@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_kernel_matches_reference(case, dtype):
    inputs = make_problem(**CASES[case], dtype=dtype, seed=len(case))
    expected = run_with_grads(ms_deform_attn_reference, inputs)
    assert_all_close(run_with_grads(ms_deform_attn, inputs), expected, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_kernel_half_precision(dtype):
    inputs = make_problem([[9, 11], [5, 3], [2, 2]], batch=2, heads=2, channels=6, dtype=dtype)
    actual = run_with_grads(ms_deform_attn, inputs)
    assert all(t.dtype == dtype for t in actual)
    assert_all_close(actual, reference_in_float64(inputs), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["four levels", "five levels"])
def test_cpu_kernel_mixed_precision(case, dtype):
    """Half-precision values and weights at float32 locations (the model under autocast): output and
    gradients within the half type's bounds of float64, the location gradient in float32."""
    inputs = mixed_precision(make_problem(**CASES[case], seed=len(case)), dtype)
    actual = run_with_grads(ms_deform_attn, inputs)
    assert [t.dtype for t in actual] == [dtype, dtype, torch.float32, dtype]
    assert_all_close(actual, reference_in_float64(inputs), dtype)
    # The reference takes the same mixed inputs (sampling in float32).
    assert_all_close(actual, run_with_grads(ms_deform_attn_reference, inputs), dtype)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_mixed_precision(requires_grad):
    value, shapes, starts, locations, weights = mixed_precision(
        make_problem([[4, 5], [2, 3]], batch=2, queries=3), torch.bfloat16)
    for tensor in (value, locations, weights):
        tensor.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.dino_demo.ms_deform_attn, (value, shapes, starts, locations, weights))


def test_outer_edge_of_support_matches_reference():
    inputs = outer_edge_problem()
    assert_all_close(run_with_grads(ms_deform_attn, inputs), run_with_grads(ms_deform_attn_reference, inputs), torch.float64)


def test_masked_values_match_reference():
    value, shapes, starts, locations, weights = make_problem([[8, 9], [4, 5]], batch=2)
    padding_mask = torch.rand(value.shape[:2], generator=torch.Generator().manual_seed(3)) < 0.4
    value = value.masked_fill(padding_mask[..., None, None], 0.0)
    inputs = (value, shapes, starts, locations, weights)
    assert_all_close(run_with_grads(ms_deform_attn, inputs), run_with_grads(ms_deform_attn_reference, inputs), torch.float64)


def test_non_contiguous_inputs():
    value, shapes, starts, locations, weights = make_problem([[6, 7], [3, 4]], batch=3, heads=2, channels=4)
    # value as a channel slice of a wider tensor, locations as a transposed view, weights strided
    wide_value = torch.randn(*value.shape[:3], 9, dtype=value.dtype)
    wide_value[..., 2:6] = value
    strided_value = wide_value[..., 2:6]
    transposed_locations = locations.transpose(1, 2).contiguous().transpose(1, 2)
    doubled_weights = weights.repeat_interleave(2, dim=-1)[..., ::2]
    strided_shapes = torch.stack([shapes, shapes], dim=1)[:, 0]
    non_contiguous = (strided_value, strided_shapes, starts, transposed_locations, doubled_weights)
    assert not any(t.is_contiguous() for t in (strided_value, transposed_locations, doubled_weights, strided_shapes))
    expected = run_with_grads(ms_deform_attn_reference, (value, shapes, starts, locations, weights))
    assert_all_close(run_with_grads(ms_deform_attn, non_contiguous), expected, torch.float64)


def test_no_grad_inference_and_empty_queries():
    value, shapes, starts, locations, weights = make_problem([[5, 6], [3, 3]], dtype=torch.float32)
    with torch.no_grad():
        output = ms_deform_attn(value, shapes, starts, locations, weights)
    assert output.shape == (1, 7, 2 * 5) and not output.requires_grad
    empty = ms_deform_attn(value, shapes, starts, locations[:, :0], weights[:, :0])
    assert empty.shape == (1, 0, 10)


def test_gradcheck_all_differentiable_inputs():
    value, shapes, starts, locations, weights = make_problem(
        [[3, 4], [2, 3]], heads=2, channels=3, queries=2, points=2, special_locations=False
    )
    locations = locations.clamp(0.02, 0.98)
    inputs = (
        value.requires_grad_(),
        shapes,
        starts,
        locations.requires_grad_(),
        weights.requires_grad_(),
    )
    assert torch.autograd.gradcheck(torch.ops.dino_demo.ms_deform_attn, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    value, shapes, starts, locations, weights = make_problem([[4, 5], [2, 3]], batch=2, queries=3, dtype=torch.float32)
    for tensor in (value, locations, weights):
        tensor.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.dino_demo.ms_deform_attn, (value, shapes, starts, locations, weights))


def test_bad_inputs_raise_value_error():
    inputs = make_problem([[4, 5], [2, 3]], dtype=torch.float32)
    for message, args in bad_calls(*inputs).items():
        for op in (ms_deform_attn, torch.ops.dino_demo.ms_deform_attn):
            with pytest.raises(ValueError, match=message):
                op(*args)
        with ops.use_backend("reference"), pytest.raises(ValueError, match=message):
            ms_deform_attn(*args)
    assert_backward_rejects_bad_inputs(ms_deform_attn(*inputs), inputs)


def test_fake_kernels_check_inputs():
    """Tracing with fake tensors rejects what the kernels reject (the checks that need no values)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    inputs = make_problem([[4, 5], [2, 3]], dtype=torch.float32)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(t) for t in inputs]
        assert torch.ops.dino_demo.ms_deform_attn(*fake).shape == (1, 7, 10)
        with pytest.raises(ValueError, match="share one dtype"):
            torch.ops.dino_demo.ms_deform_attn(fake[0], fake[1], fake[2], fake[3].double(), fake[4])
        grad_output = torch.empty(1, 7, 9)
        with pytest.raises(ValueError, match="grad_output must be"):
            torch.ops.dino_demo.ms_deform_attn_backward(mode.from_tensor(grad_output), *fake)


def test_use_backend_and_environment(monkeypatch):
    assert ops.backend("cpu")[0] == "cpu-kernel"
    with ops.use_backend("reference"):
        assert ops.backend("cpu") == ("reference", 'disabled by use_backend("reference")')
    assert ops.backend("cpu")[0] == "cpu-kernel"
    monkeypatch.setenv("DINO_DEMO_OP", "reference")
    assert ops.backend("cpu") == ("reference", "disabled by DINO_DEMO_OP=reference")
    with ops.use_backend("auto"):
        assert ops.backend("cpu")[0] == "cpu-kernel"
    monkeypatch.setenv("DINO_DEMO_OP", "fast")
    with pytest.raises(ValueError, match="DINO_DEMO_OP"):
        ops.backend("cpu")
    with pytest.raises(ValueError, match="backend must be"):
        ops.use_backend("cuda")
    monkeypatch.delenv("DINO_DEMO_OP")
    assert ops.backend("meta") == ("reference", "no compiled kernel for device type 'meta'")
    with ops.use_backend("triton"):
        implementation, reason = ops.backend("meta")
    assert implementation == "reference"
    assert reason == 'Triton chosen by use_backend("triton") but unavailable: no Triton kernels for device type \'meta\''


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons given without a GPU")
def test_cuda_backend_without_gpu():
    implementation, reason = ops.backend("cuda")
    assert implementation == "reference"
    assert reason.startswith("CUDA kernel not compiled: ") and "Triton: " in reason


def test_failed_build_falls_back_with_reason(tmp_path, monkeypatch):
    broken = tmp_path / "csrc"
    broken.mkdir()
    for name in extension.SOURCES["cpu"]:
        (broken / name).write_text("#error broken on purpose\n")
    monkeypatch.setattr(extension, "CSRC", broken)
    monkeypatch.setenv("DINO_DEMO_CACHE", str(tmp_path / "cache"))
    build_hash = extension._build_hash("cpu", None)
    result = extension._load("cpu", require_gpu=True)
    assert not result.ok and result.reason.startswith("build failed:") and "broken on purpose" in result.reason
    # A build attempt leaves the cache key alone (cpp_extension.load extends the flag lists it gets).
    assert extension._build_hash("cpu", None) == build_hash
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert extension._load("cpu", require_gpu=True).reason == "not compiled: no C++ compiler ('no-such-compiler' not found)"


def test_import_does_not_build(tmp_path):
    """Importing the package defines the ops but leaves the cache untouched and triton unimported:
    building waits for the first op call."""
    environment = {**os.environ, "DINO_DEMO_CACHE": str(tmp_path / "cache")}
    code = (
        "import sys, torch, dino_demo, dino_demo.ops; "
        "assert torch.ops.dino_demo.ms_deform_attn.default._schema.name == 'dino_demo::ms_deform_attn'; "
        "sys.exit('triton' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=environment, cwd=Path(__file__).parents[2])
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("capabilities", "built_for", "expected"),
    [
        ([(12, 0)], ["sm_90", "sm_100", "sm_120"], "12.0+PTX"),
        ([(8, 6), (12, 0)], ["sm_86", "sm_120"], "8.6;12.0+PTX"),
        ([(13, 0)], ["sm_90a", "sm_120"], "12.0+PTX"),  # newer than this torch: its newest, with PTX
    ],
)
def test_cuda_arch_list_follows_visible_gpus(monkeypatch, capabilities, built_for, expected):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capabilities[index])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: built_for)
    assert extension._cuda_arch_list() == expected
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert extension._cuda_arch_list() == "9.0"


# CUDA kernel: the same comparisons on the GPU, skipped without one (marker `cuda`). The expected
# values are the reference's on CPU in float64.


def to_cuda(inputs):
    return [t.cuda() for t in inputs]


@pytest.mark.cuda
def test_cuda_kernel_is_used():
    implementation, reason = ops.backend("cuda")
    assert implementation == "cuda-kernel", reason


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_kernel_matches_reference(case, dtype):
    inputs = make_problem(**CASES[case], dtype=dtype, seed=len(case))
    actual = run_with_grads(ms_deform_attn, to_cuda(inputs))
    assert all(t.is_cuda and t.dtype == dtype for t in actual)
    assert_all_close([t.cpu() for t in actual], reference_in_float64(inputs), dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_kernel_mixed_precision(dtype):
    inputs = mixed_precision(make_problem(**CASES["four levels"], seed=4), dtype)
    actual = run_with_grads(ms_deform_attn, to_cuda(inputs))
    assert [t.dtype for t in actual] == [dtype, dtype, torch.float32, dtype]
    assert_all_close([t.cpu() for t in actual], reference_in_float64(inputs), dtype)


@pytest.mark.cuda
def test_cuda_non_contiguous_and_masked_inputs():
    value, shapes, starts, locations, weights = make_problem([[6, 7], [3, 4]], batch=3, heads=2, channels=40)
    padding_mask = torch.rand(value.shape[:2], generator=torch.Generator().manual_seed(3)) < 0.3
    value = value.masked_fill(padding_mask[..., None, None], 0.0)
    expected = run_with_grads(ms_deform_attn_reference, (value, shapes, starts, locations, weights))
    non_contiguous = (
        value.cuda().transpose(2, 3).contiguous().transpose(2, 3),
        shapes.cuda(),
        starts.cuda(),
        locations.cuda().transpose(1, 2).contiguous().transpose(1, 2),
        weights.cuda().repeat_interleave(2, dim=-1)[..., ::2],
    )
    actual = run_with_grads(ms_deform_attn, non_contiguous)
    assert_all_close([t.cpu() for t in actual], expected, torch.float64)


@pytest.mark.cuda
def test_cuda_gradcheck_and_opcheck():
    value, shapes, starts, locations, weights = make_problem(
        [[3, 4], [2, 3]], heads=2, channels=3, queries=2, points=2, special_locations=False
    )
    inputs = (
        value.cuda().requires_grad_(),
        shapes.cuda(),
        starts.cuda(),
        locations.clamp(0.02, 0.98).cuda().requires_grad_(),
        weights.cuda().requires_grad_(),
    )
    # grad_value is summed with atomics, so repeated backwards may differ in the last bits
    assert torch.autograd.gradcheck(
        torch.ops.dino_demo.ms_deform_attn, inputs, eps=1e-6, atol=1e-5, nondet_tol=1e-12
    )
    torch.library.opcheck(torch.ops.dino_demo.ms_deform_attn, inputs)


@pytest.mark.cuda
def test_cuda_bad_inputs_raise_value_error():
    """The CUDA entry points make the CPU kernel's checks, the level table and grad_output included."""
    assert ops.backend("cuda")[0] == "cuda-kernel"
    inputs = to_cuda(make_problem([[4, 5], [2, 3]], dtype=torch.float32))
    for message, args in bad_calls(*inputs).items():
        with pytest.raises(ValueError, match=message):
            torch.ops.dino_demo.ms_deform_attn(*args)
    assert_backward_rejects_bad_inputs(torch.ops.dino_demo.ms_deform_attn(*inputs), inputs)


def test_build_check_covers_the_mixed_precision_form():
    """`python -m dino_demo build-ops --check`'s comparison, in the form the model uses under autocast."""
    from dino_demo.ops.selfcheck import compare_with_reference

    forward, backward = torch.ops.dino_demo.ms_deform_attn, torch.ops.dino_demo.ms_deform_attn_backward
    assert compare_with_reference(forward, backward, "cpu", torch.bfloat16) is None
    assert "output differs" in compare_with_reference(lambda *a: forward(*a) * 1.05, backward, "cpu", torch.bfloat16)
