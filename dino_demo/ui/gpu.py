"""Hugging Face ZeroGPU: a GPU lent per call.

A ZeroGPU Space has no GPU of its own. A function decorated with `spaces.GPU(duration=...)` gets
one while it runs (for at most `duration` seconds); outside such functions CUDA is emulated, so
models are moved to "cuda" outside them (at start-up for the default model) and actually reach
the GPU when a decorated function starts. The app runs the model through `gpu_function`, which is
that decorator where the `spaces` package is installed (it is on every Space, and does nothing off
ZeroGPU) and the plain function everywhere else.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

# Seconds asked of ZeroGPU for one Detect. The first call in a process also JIT-compiles the
# Triton kernels (no CUDA toolchain on Spaces); later runs take well under a second on its GPUs.
BASE_SECONDS = 30
LARGE_BACKBONE_SECONDS = 15
PER_MEGAPIXEL_SECONDS = 5
MAX_SECONDS = 120


def spaces_module():
    """The `spaces` package, or None where it is not installed."""
    try:
        return importlib.import_module("spaces")
    except ImportError:
        return None


def on_zerogpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (the `spaces` package says so)."""
    spaces = spaces_module()
    config = getattr(getattr(spaces, "config", None), "Config", None)
    return bool(getattr(config, "zero_gpu", False))


def gpu_function(fn: Callable, duration: Callable | int | None = None) -> Callable:
    """`fn` decorated with `spaces.GPU(duration=duration)` (default `run_seconds`) when `spaces`
    is installed, else `fn`."""
    spaces = spaces_module()
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration or run_seconds)(fn)


def run_detector(detector, image: np.ndarray, **options):
    """`detector.run(image, **options)` (a `runtime.Detector`): what the app runs through
    `gpu_function(run_detector, detect_seconds)`."""
    return detector.run(image, **options)


def detect_seconds(detector, image: np.ndarray, *args, **kwargs) -> int:
    """`run_seconds` of a `run_detector` call."""
    return run_seconds(detector.model, detector.config, image, *args, **kwargs)


def run_seconds(model, cfg, image: np.ndarray, *args, max_size: int | None = None, **kwargs) -> int:
    """A generous bound on the seconds one run of `model` (built from `cfg`) on `image` holds the
    GPU: a base (kernel compilation on first use, transfers), more for the Swin-L backbone, and a
    share per megapixel of model input. ZeroGPU calls it with the run's own arguments."""
    from ..io.preprocess import model_input_size

    height, width = model_input_size(cfg, *image.shape[:2], max_size)
    seconds = BASE_SECONDS + PER_MEGAPIXEL_SECONDS * height * width / 1e6
    if cfg.backbone.startswith("swin"):
        seconds += LARGE_BACKBONE_SECONDS
    return int(min(MAX_SECONDS, round(seconds)))
