"""One runtime for every detector: a model source in, a `Detector` out, `InferenceResult`s from it.

    from dino_demo.runtime import load_detector
    detector = load_detector("shipped")           # any model source (sources.Source or its text)
    result = detector.run(image)                  # InferenceResult: detections and internals
    detector.offers                               # what applies: proposals, encoder, denoising, prompt

`result.py` holds what a run gives (the result, encoder tokens and their attention, precisions),
`detections.py` the detections above a threshold (numpy only), `detector.py` the interface,
`registry.py` the loader of each kind of source, `dino.py` DINO's inference path and detector
(with `dino_encoder.py`, its encoder attention for any token, and `speed.py`, its inference fast
paths); the `transformers` families register their own (`dino_demo.families`). Above this floor:
explore, train, export, families, the page and the command line; below it: sources, io, model, ops.

The names below are imported on first use, so that `runtime.detections` (the ONNX Runtime path's)
imports without torch.
"""
from __future__ import annotations

import importlib

_NAMES = {"DINODetector": "dino", "Detector": "detector", "Offers": "detector", "FamilyDetails": "details",
          "load_detector": "registry", "register": "registry", "PRECISIONS": "result", "EncoderToken": "result",
          "InferenceResult": "result", "StageCallback": "result", "TokenAttention": "result"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
