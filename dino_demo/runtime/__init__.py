"""One runtime for every detector: a model source in, a `Detector` out, `InferenceResult`s from it.

    from dino_demo.runtime import load_detector
    detector = load_detector("shipped")           # any model source (sources.Source or its text)
    result = detector.run(image)                  # InferenceResult: detections and internals
    detector.offers                               # what applies: proposals, encoder, denoising, prompt

`result.py` holds what a run gives (the result, encoder tokens and their attention, precisions),
`detector.py` the interface, `registry.py` the loader of each kind of source, `dino.py` DINO's
inference path and detector (with `dino_encoder.py`, its encoder attention for any token, and
`speed.py`, its inference fast paths); the `transformers` families register their own
(`dino_demo.families`). Above this floor: explore, train, export, families, the page and the
command line; below it: sources, io, model, ops.
"""
from . import dino
from .detector import Detector, Offers
from .details import FamilyDetails
from .registry import load_detector, register
from .result import PRECISIONS, EncoderToken, InferenceResult, StageCallback, TokenAttention

DINODetector = dino.DINODetector

__all__ = ["DINODetector", "Detector", "EncoderToken", "FamilyDetails", "InferenceResult", "Offers", "PRECISIONS",
           "StageCallback", "TokenAttention", "load_detector", "register"]
