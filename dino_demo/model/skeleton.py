"""Models built on the meta device (shapes and dtypes, nothing allocated) without running their
initialisers.

Under `torch.device("meta")`, the initialisers (`normal_`, `uniform_`, ...) and the small tables
modules compute in their constructors (`arange`, ...) run through PyTorch's Python meta
implementations, whose first call imports `torch._dynamo` (the compiler stack, about as much CPU
time as importing torch). `with on_meta(): model = build(...)` makes only the parameters and
buffers meta tensors and skips their initialisers (a meta tensor has no values to initialise).
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode


# the constructors that parameters and buffers are made with: they make meta tensors here
CONSTRUCTORS = (torch.empty, torch.zeros, torch.ones, torch.full, torch.empty_strided)


class _MetaSkeleton(TorchFunctionMode):
    """Constructors without a device make meta tensors; in-place calls (names ending in "_") on a
    meta tensor return it unchanged. Other calls run as usual: the small tables some modules
    compute in their constructors (position indices, offset grids) stay on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in CONSTRUCTORS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # torch.nn.init passes `tensor=`
        if name.endswith("_") and not name.startswith("__") and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta():
    """Build modules inside this block: their parameters and buffers are meta tensors (shapes and
    dtypes only), their initialisers skipped."""
    with _MetaSkeleton():
        yield
