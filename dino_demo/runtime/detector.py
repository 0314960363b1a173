"""The one interface every detector offers: DINO (`runtime.dino`) and each `transformers` family
(`families.detector`) fill it in, and the page, the command line, analysis and evaluation hold
nothing else.

    detector.run(image, *, prompt=None, max_size=None, internals=True, precision="float32",
                 on_stage=None, source_size=None) -> InferenceResult
    detector.run_batch(images, *, same keywords, source_sizes=None) -> list[InferenceResult]
    detector.token_attention(result, token) -> TokenAttention
    detector.offers -> Offers (which views and inputs apply)
    detector.model, detector.config, detector.model_id, detector.variant
    detector.named(model_id) -> the same detector (the same model) under another model_id

Callers ask `offers` (or a result's `unavailable`) what applies; they never test types.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .result import EncoderToken, InferenceResult, StageCallback, TokenAttention


@dataclass(frozen=True)
class Offers:
    """What a detector offers beside detections and the decoder's attention.

    proposals: a two-stage query selection (the encoder's proposals seed the decoder's queries);
    encoder: a multi-scale deformable encoder whose attention `token_attention` recomputes;
    denoising: DINO's own code, which the denoising and forward-pass views run;
    prompt: it detects what a text prompt names (`run(..., prompt=...)`).
    """

    proposals: bool
    encoder: bool
    denoising: bool
    prompt: bool


@runtime_checkable
class Detector(Protocol):
    """A loaded detector ready for inference (see the module docstring).

    model: the torch module that runs; config: its settings (`DINOConfig`, or a family's
    `FamilySettings`: both give name, min_size, max_size, enc_layers, num_select); model_id:
    what the caller calls it (shown on the page and written to results files); variant: the
    config's name.
    """

    model: torch.nn.Module
    config: object
    model_id: str
    offers: Offers

    @property
    def variant(self) -> str: ...

    def named(self, model_id: str) -> Detector:
        """The same detector, sharing its model, whose results carry `model_id`."""
        ...

    def run(self, image: np.ndarray, *, prompt: str | None = None, max_size: int | None = None,
            internals: bool = True, precision: str = "float32", on_stage: StageCallback | None = None,
            source_size: tuple[int, int] | None = None) -> InferenceResult:
        """Detect objects in one [H, W, 3] uint8 RGB image."""
        ...

    def run_batch(self, images: Sequence[np.ndarray], *, prompt: str | None = None, max_size: int | None = None,
                  internals: bool = True, precision: str = "float32", on_stage: StageCallback | None = None,
                  source_sizes: Sequence[tuple[int, int] | None] | None = None) -> list[InferenceResult]:
        """Detect objects in several images, one result each."""
        ...

    def token_attention(self, result: InferenceResult, token: EncoderToken) -> TokenAttention:
        """The self-attention of encoder `token` in every encoder layer, for a `result` this
        detector made; ValueError where the encoder view does not apply."""
        ...


def check_batch(images: Sequence[np.ndarray], source_sizes: Sequence | None) -> None:
    """ValueError for an empty batch or a `source_sizes` of another length."""
    if not images:
        raise ValueError("run_batch needs at least one image")
    if source_sizes is not None and len(source_sizes) != len(images):
        raise ValueError(f"source_sizes has {len(source_sizes)} entries for {len(images)} images")
