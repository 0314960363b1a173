"""Whether the Triton kernels (`triton_kernels`) can serve a device type, and why not.

They serve CUDA tensors when triton imports and a GPU is visible, and CPU tensors only in Triton's
interpreter (TRITON_INTERPRET=1 set before triton is imported; torchvision imports it), which is
slow and meant for checking the kernels without a GPU. Before the first use on a device type, both
kernels run once on a small problem and are compared with the reference (`selfcheck`), so that a
GPU, driver or Triton version they do not compile or run correctly on falls back with the error
as the reason instead of failing inside the model.

Nothing here raises; `load` is cached per device type, like `extension.load`.
"""
from __future__ import annotations

import importlib
import logging
import threading

import torch

from .extension import LoadResult
from .selfcheck import compare_with_reference

logger = logging.getLogger(__name__)

DEVICE_TYPES = ("cuda", "cpu")

_results: dict[str, LoadResult] = {}
_lock = threading.Lock()


def load(device_type: str) -> LoadResult:
    """Import the Triton kernels and check them on `device_type`, once per process."""
    with _lock:
        if device_type not in _results:
            _results[device_type] = _load(device_type)
        return _results[device_type]


def _load(device_type: str) -> LoadResult:
    if device_type not in DEVICE_TYPES:
        return LoadResult(False, f"no Triton kernels for device type {device_type!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        return LoadResult(False, "no GPU visible")
    try:
        triton = importlib.import_module("triton")
        kernels = importlib.import_module(".triton_kernels", __package__)
    except Exception as error:  # noqa: BLE001 - triton is optional; a missing or broken one must not break the caller
        return LoadResult(False, f"triton unavailable: {_first_line(error)}")
    if device_type == "cpu" and not kernels.interpreted():
        return LoadResult(
            False, "Triton runs on CPU tensors only in its interpreter (TRITON_INTERPRET=1 before triton is imported)"
        )
    try:
        problem = compare_with_reference(
            kernels.ms_deform_attn_triton, kernels.ms_deform_attn_backward_triton, device_type, torch.float32
        )
    except Exception as error:  # noqa: BLE001 - a kernel that does not compile must fall back, not fail
        problem = f"kernels failed: {_first_line(error)}"
    if problem is not None:
        logger.warning("dino_demo Triton kernels unusable on %s: %s", device_type, problem)
        return LoadResult(False, problem)
    mode = " in its interpreter (TRITON_INTERPRET=1)" if kernels.interpreted() else ""
    return LoadResult(True, f"Triton {triton.__version__}{mode}, checked against the reference")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
