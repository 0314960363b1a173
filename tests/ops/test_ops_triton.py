"""The Triton kernels of dino_demo.ops against the pure-PyTorch reference.

Without a GPU the kernels run on CPU tensors in Triton's interpreter: conftest.py sets
TRITON_INTERPRET=1 before anything imports triton. With a GPU the same tests run the compiled
kernels on it, and the `cuda` tests add the comparisons that are too slow for the interpreter.

The tests are skipped when triton is not installed, and fail when it is but cannot serve (e.g.
without a GPU, when triton was imported before TRITON_INTERPRET=1 was set).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dino_demo import ops
from dino_demo.ops import extension, ms_deform_attn, ms_deform_attn_reference, triton_backend
from dino_demo.ops.extension import LoadResult
from op_problems import CASES, assert_all_close, assert_backward_rejects_bad_inputs, bad_calls, make_problem
from op_problems import mixed_precision
from op_problems import outer_edge_problem
from op_problems import reference_in_float64, run_with_grads

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module", autouse=True)
def triton_serves():
    """Triton serves DEVICE for this module; afterwards "auto" chooses again, for later modules."""
    pytest.importorskip("triton")
    with ops.use_backend("triton"):
        implementation, reason = ops.backend(DEVICE)
        assert implementation == "triton", reason
        yield
    ops.backend(DEVICE)


def on_device(inputs):
    return [t.to(DEVICE) for t in inputs]


def on_cpu(tensors):
    return [t.cpu() for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_triton_matches_reference(case, dtype):
    """Forward and the three gradients; odd level sizes, 1 to 33 channels, batch 1 and 3, points
    on the maps' edges, on pixel edges and far outside (see make_problem)."""
    inputs = make_problem(**CASES[case], dtype=dtype, seed=len(case))
    actual = run_with_grads(ms_deform_attn, on_device(inputs))
    assert all(t.dtype == dtype and t.device.type == DEVICE for t in actual)
    assert_all_close(on_cpu(actual), reference_in_float64(inputs), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision(dtype):
    inputs = make_problem([[9, 11], [5, 3], [2, 2]], batch=2, heads=2, channels=6, dtype=dtype)
    actual = run_with_grads(ms_deform_attn, on_device(inputs))
    assert all(t.dtype == dtype for t in actual)
    assert_all_close(on_cpu(actual), reference_in_float64(inputs), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_mixed_precision(dtype):
    """Half-precision values and weights at float32 locations, as the model passes them under autocast."""
    inputs = mixed_precision(make_problem([[9, 11], [5, 3], [2, 2]], batch=2, heads=2, channels=6), dtype)
    actual = run_with_grads(ms_deform_attn, on_device(inputs))
    assert [t.dtype for t in actual] == [dtype, dtype, torch.float32, dtype]
    assert_all_close(on_cpu(actual), reference_in_float64(inputs), dtype)


def test_outer_edge_of_support_matches_reference():
    inputs = outer_edge_problem()
    actual = run_with_grads(ms_deform_attn, on_device(inputs))
    assert_all_close(on_cpu(actual), run_with_grads(ms_deform_attn_reference, inputs), torch.float64)


def test_masked_values_match_reference():
    value, shapes, starts, locations, weights = make_problem([[8, 9], [4, 5]], batch=3, dtype=torch.float32)
    padding_mask = torch.rand(value.shape[:2], generator=torch.Generator().manual_seed(3)) < 0.4
    inputs = (value.masked_fill(padding_mask[..., None, None], 0.0), shapes, starts, locations, weights)
    actual = run_with_grads(ms_deform_attn, on_device(inputs))
    assert_all_close(on_cpu(actual), reference_in_float64(inputs), torch.float32)


def test_non_contiguous_inputs():
    value, shapes, starts, locations, weights = make_problem([[6, 7], [3, 4]], batch=3, heads=2, channels=4)
    expected = run_with_grads(ms_deform_attn_reference, (value, shapes, starts, locations, weights))
    value, shapes, starts, locations, weights = on_device((value, shapes, starts, locations, weights))
    non_contiguous = (
        value.transpose(2, 3).contiguous().transpose(2, 3),
        torch.stack([shapes, shapes], dim=1)[:, 0],
        starts,
        locations.transpose(1, 2).contiguous().transpose(1, 2),
        weights.repeat_interleave(2, dim=-1)[..., ::2],
    )
    actual = run_with_grads(ms_deform_attn, non_contiguous)
    assert_all_close(on_cpu(actual), expected, torch.float64)


def test_no_grad_inference_and_empty_queries():
    value, shapes, starts, locations, weights = on_device(make_problem([[5, 6], [3, 3]], dtype=torch.float32))
    with torch.no_grad():
        output = ms_deform_attn(value, shapes, starts, locations, weights)
    assert output.shape == (1, 7, 2 * 5) and not output.requires_grad
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in (value, shapes, starts, locations, weights)]
    empty = ms_deform_attn(leaves[0], leaves[1], leaves[2], leaves[3][:, :0], leaves[4][:, :0])
    assert empty.shape == (1, 0, 10)
    empty.sum().backward()
    assert torch.equal(leaves[0].grad, torch.zeros_like(value))


def test_gradcheck_all_differentiable_inputs():
    value, shapes, starts, locations, weights = make_problem(
        [[3, 4], [2, 3]], heads=2, channels=3, queries=2, points=2, special_locations=False
    )
    inputs = on_device((value, shapes, starts, locations.clamp(0.02, 0.98), weights))
    for i in (0, 3, 4):
        inputs[i].requires_grad_()
    # grad_value is summed with atomics, so repeated backwards may differ in the last bits
    assert torch.autograd.gradcheck(
        torch.ops.dino_demo.ms_deform_attn, inputs, eps=1e-6, atol=1e-5, nondet_tol=1e-12, fast_mode=True
    )


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    inputs = on_device(make_problem([[4, 5], [2, 3]], batch=2, queries=3, dtype=torch.float32))
    for i in (0, 3, 4):
        inputs[i].requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.dino_demo.ms_deform_attn, inputs)


def test_bad_inputs_raise_value_error():
    """Direct torch.ops calls served by Triton reject what the compiled kernels reject."""
    inputs = on_device(make_problem([[4, 5], [2, 3]], dtype=torch.float32))
    for message, args in bad_calls(*inputs).items():
        for op in (ms_deform_attn, torch.ops.dino_demo.ms_deform_attn):
            with pytest.raises(ValueError, match=message):
                op(*args)
    assert_backward_rejects_bad_inputs(ms_deform_attn(*inputs), inputs)


def test_backend_switches_the_registered_kernel(monkeypatch):
    """The op's kernel for a device type is whatever the last backend() call chose."""
    from dino_demo.ops import triton_kernels

    calls = []
    check_levels = triton_kernels.check_levels
    monkeypatch.setattr(triton_kernels, "check_levels", lambda *args: calls.append(1) or check_levels(*args))
    inputs = on_device(make_problem([[4, 5]], dtype=torch.float32))
    torch.ops.dino_demo.ms_deform_attn(*inputs)
    assert len(calls) == 1
    with ops.use_backend("auto"):
        implementation, _ = ops.backend(DEVICE)
        torch.ops.dino_demo.ms_deform_attn(*inputs)
        assert len(calls) == (2 if implementation == "triton" else 1)
    assert ops.backend(DEVICE)[0] == "triton"
    torch.ops.dino_demo.ms_deform_attn(*inputs)
    assert len(calls) == (3 if implementation == "triton" else 2)


def test_triton_reason():
    implementation, reason = ops.backend(DEVICE)
    assert (implementation, reason.split(";")[0]) == ("triton", 'chosen by use_backend("triton")')
    assert "checked against the reference" in reason
    if DEVICE == "cpu":
        assert "interpreter" in reason


def test_unavailable_triton_falls_back(monkeypatch):
    """Without triton, "triton" gives the reference and says why; "auto" on CPU never needs it."""
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    result = triton_backend._load(DEVICE)
    assert not result.ok and result.reason.startswith("triton unavailable: ModuleNotFoundError")
    monkeypatch.setattr(triton_backend, "load", lambda device_type: result)
    implementation, reason = ops.backend(DEVICE)
    assert implementation == "reference" and reason.endswith("but unavailable: " + result.reason)
    inputs = make_problem([[4, 5]], dtype=torch.float64)
    assert_all_close(run_with_grads(ms_deform_attn, inputs), run_with_grads(ms_deform_attn_reference, inputs), torch.float64)


def test_failing_kernels_fall_back(monkeypatch):
    """Kernels that do not compile or give wrong numbers are not used; the reason says what failed."""
    from dino_demo.ops import triton_kernels

    def broken(*args):
        raise RuntimeError("PassManager::run failed\nmore detail")

    monkeypatch.setattr(triton_kernels, "ms_deform_attn_triton", broken)
    assert triton_backend._load(DEVICE) == LoadResult(False, "kernels failed: RuntimeError: PassManager::run failed")
    monkeypatch.setattr(triton_kernels, "ms_deform_attn_triton", lambda *args: ms_deform_attn_reference(*args) * 1.01)
    result = triton_backend._load(DEVICE)
    assert not result.ok and result.reason.startswith("output differs from the reference by")


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter on CPU tensors")
def test_environment_variables_choose_triton_on_cpu(tmp_path):
    """TRITON_INTERPRET=1 DINO_DEMO_OP=triton: ms_deform_attn on CPU tensors runs the Triton kernels,
    forward and backward, and never builds the compiled CPU kernel."""
    code = "\n".join([
        "import torch",
        "from dino_demo import ops",
        "from dino_demo.ops import extension, ms_deform_attn_reference",
        "from op_problems import make_problem, run_with_grads, assert_all_close",
        "assert ops.backend('cpu')[0] == 'triton', ops.backend('cpu')",
        "inputs = make_problem([[5, 7], [3, 2]], batch=2, dtype=torch.float32)",
        "actual = run_with_grads(ops.ms_deform_attn, inputs)",
        "assert_all_close(actual, run_with_grads(ms_deform_attn_reference, inputs), torch.float32)",
        "assert not extension.loaded('cpu')",
        "from dino_demo.ops import triton_kernels",
        "assert triton_kernels.interpreted()",
    ])
    root = Path(__file__).parents[2]
    environment = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "DINO_DEMO_OP": "triton",
        "DINO_DEMO_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests"), str(root / "tests" / "support")]),
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=environment, cwd=root)
    assert not (tmp_path / "cache").exists()


def test_benchmark_worker_runs_triton():
    """benchmarks/op_bench.py's measuring code on the Triton path, forward and backward, at a tiny input
    (no timing is checked)."""
    spec = importlib.util.spec_from_file_location("op_bench", Path(__file__).parents[2] / "benchmarks" / "op_bench.py")
    op_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(op_bench)
    assert op_bench.level_shapes(800, 1333, 5) == [[200, 334], [100, 167], [50, 84], [25, 42], [13, 21]]
    with ops.use_backend("triton"):
        result = op_bench.run_worker("encoder-4scale", (16, 24), DEVICE, "triton", repeats=1, backward=True)
    assert result["implementation"] == "triton" and result["ms"] > 0


# On a GPU: shapes too large for the interpreter, and Triton against the compiled CUDA kernel.


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_triton_on_gpu_at_model_size(dtype):
    """8 heads of 32 channels, 4 levels, 4 points, 300 queries, batch 2: DINO's decoder, smaller maps."""
    inputs = make_problem(
        [[40, 53], [20, 27], [10, 14], [5, 7]], batch=2, heads=8, channels=32, queries=300, points=4, dtype=dtype
    )
    actual = run_with_grads(ms_deform_attn, on_device(inputs))
    assert_all_close(on_cpu(actual), reference_in_float64(inputs), dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_cuda_kernel(dtype):
    if not extension.load("cuda").ok:
        pytest.skip(f"no compiled CUDA kernel: {extension.load('cuda').reason}")
    inputs = on_device(make_problem([[17, 19], [9, 9], [5, 5]], batch=2, heads=4, channels=24, dtype=dtype))
    triton_results = run_with_grads(ms_deform_attn, inputs)
    with ops.use_backend("auto"):
        assert ops.backend("cuda")[0] == "cuda-kernel"
        cuda_results = run_with_grads(ms_deform_attn, inputs)
    ops.backend("cuda")
    assert_all_close(on_cpu(triton_results), [t.cpu().double() for t in cuda_results], dtype)
