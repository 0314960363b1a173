"""A loaded `transformers` family model behind the runtime's `Detector` interface.

`load` is what `registration` hands the runtime for Hub ids and `save_pretrained` folders; it
imports transformers, so it is reached only when such a model is asked for.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..runtime.detector import Offers, check_batch
from ..runtime.result import EncoderToken, InferenceResult, StageCallback, TokenAttention
from ..sources.download import Progress
from ..sources.source import Source
from . import inference
from .load import FamilyModel, FamilySettings
from .load import load as load_model


def offers(handle: FamilyModel) -> Offers:
    """What a loaded family model offers: proposals where it selects its queries from the encoder
    (two-stage), the encoder view where its encoder is deformable, a prompt where it reads one."""
    family, config = handle.family, handle.model.config
    return Offers(proposals="proposals" not in family.unavailable and family.two_stage(config),
                  encoder=family.deformable_encoder and "encoder" not in family.unavailable,
                  denoising=False, prompt=family.text_prompt)


@dataclass(frozen=True, eq=False)
class FamilyDetector:
    """`handle` (a loaded family model) as a `Detector`; `model_id` is what results name it.
    Images run one at a time (`run_batch` loops)."""

    handle: FamilyModel
    model_id: str
    offers: Offers

    @property
    def model(self) -> torch.nn.Module:
        return self.handle.model

    @property
    def config(self) -> FamilySettings:
        return self.handle.settings

    @property
    def variant(self) -> str:
        return self.handle.settings.name

    def named(self, model_id: str) -> FamilyDetector:
        """The same detector (the same model) under another `model_id`."""
        return dataclasses.replace(self, model_id=model_id)

    def run(self, image: np.ndarray, *, prompt: str | None = None, max_size: int | None = None,
            internals: bool = True, precision: str = "float32", on_stage: StageCallback | None = None,
            source_size: tuple[int, int] | None = None) -> InferenceResult:
        return inference.run(self.handle, image, prompt=prompt, max_size=max_size, internals=internals,
                             precision=precision, model_id=self.model_id, on_stage=on_stage, source_size=source_size)

    def run_batch(self, images: Sequence[np.ndarray], *, prompt: str | None = None, max_size: int | None = None,
                  internals: bool = True, precision: str = "float32", on_stage: StageCallback | None = None,
                  source_sizes: Sequence[tuple[int, int] | None] | None = None) -> list[InferenceResult]:
        check_batch(images, source_sizes)
        return [self.run(image, prompt=prompt, max_size=max_size, internals=internals, precision=precision,
                         on_stage=on_stage, source_size=source_sizes[i] if source_sizes else None)
                for i, image in enumerate(images)]

    def token_attention(self, result: InferenceResult, token: EncoderToken) -> TokenAttention:
        return inference.token_attention(self.handle, result, [token])[0]


def load(source: Source, variant: str | None, device: torch.device, progress: Progress | None) -> FamilyDetector:
    """A Hub id or a save_pretrained folder as a `FamilyDetector` (see `families.load.load`)."""
    if variant:
        raise ValueError(f"{source} is a transformers model: its config says what it is (no variant to force)")
    handle = load_model(source, device, progress=progress)
    return FamilyDetector(handle, source.name, offers(handle))
