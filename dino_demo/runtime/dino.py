"""DINO through the runtime: the one inference path of our own detector, and its `Detector`.

`run_batch` resizes HxWx3 uint8 RGB images with the official rule (`io.preprocess.prepare_batch`),
runs the model (with the decoder's attention captured when `internals=True`), post-processes with
the official top-k (`model.postprocess`), and returns one `InferenceResult` per image, boxes in
the pixels of the image given. An image the loader downscaled (`io.images.load_image(max_side=...)`)
is run as it is, and its result remembers the size it had (`source_size`), so that results files
give boxes in the pixels of the image as the person gave it (`io.results`). `run` is the same for
one image. `DINODetector` holds a model and its config behind the `Detector` interface; the
checkpoint kinds of source load into one (`load`, registered with `runtime.registry`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import ops
from ..io.labels import category_ids, class_names
from ..io.preprocess import prepare_batch
from ..model.config import DINOConfig
from ..model.outputs import DINOOutput
from ..model.postprocess import postprocess
from ..sources.download import Progress
from ..sources.loader import build
from ..sources.source import Source, SourceKind
from . import dino_encoder
from .detector import Offers, check_batch
from .registry import register
from .result import (PRECISIONS, EncoderToken, InferenceResult, StageCallback, TokenAttention, check_precision,
                     float32, given_size, to_cpu)
from .speed import optimize_for_inference

OFFERS = Offers(proposals=True, encoder=True, denoising=True, prompt=False)


@dataclass(frozen=True, eq=False)
class DINODetector:
    """A DINO `model` built from `config` behind the `Detector` interface (runtime.detector);
    `model_id` is what results name it. Any DINO works, also one being trained."""

    model: torch.nn.Module
    config: DINOConfig
    model_id: str = ""
    offers: Offers = OFFERS

    @property
    def variant(self) -> str:
        return self.config.name

    def named(self, model_id: str) -> DINODetector:
        """The same detector (the same model) under another `model_id`."""
        return dataclasses.replace(self, model_id=model_id)

    def run(self, image: np.ndarray, *, prompt: str | None = None, max_size: int | None = None,
            internals: bool = True, precision: str = "float32", on_stage: StageCallback | None = None,
            source_size: tuple[int, int] | None = None) -> InferenceResult:
        return run(self.model, self.config, image, prompt=prompt, max_size=max_size, internals=internals,
                   precision=precision, model_id=self.model_id, on_stage=on_stage, source_size=source_size)

    def run_batch(self, images: Sequence[np.ndarray], *, prompt: str | None = None, max_size: int | None = None,
                  internals: bool = True, precision: str = "float32", on_stage: StageCallback | None = None,
                  source_sizes: Sequence[tuple[int, int] | None] | None = None) -> list[InferenceResult]:
        _refuse_prompt(prompt)
        return run_batch(self.model, self.config, list(images), max_size=max_size, internals=internals,
                         precision=precision, model_id=self.model_id, on_stage=on_stage, source_sizes=source_sizes)

    def token_attention(self, result: InferenceResult, token: EncoderToken) -> TokenAttention:
        return dino_encoder.token_attention(self.model, result, [token], precision=result.precision)[0]


def load(source: Source, variant: str | None, device: torch.device, progress: Progress | None) -> DINODetector:
    """A checkpoint-kind source (shipped, zoo, URL, file, untrained) as a `DINODetector`, with the
    inference fast paths of `runtime.speed` (see `sources.loader.build` for the loading)."""
    model, cfg = build(source, variant, device, progress)
    return DINODetector(optimize_for_inference(model), cfg, source.name)


register((SourceKind.SHIPPED, SourceKind.ZOO, SourceKind.URL, SourceKind.FILE, SourceKind.UNTRAINED), load)


def run(model: torch.nn.Module, cfg: DINOConfig, image: np.ndarray, *, max_size: int | None = None,
        internals: bool = True, precision: str = "float32", model_id: str = "",
        on_stage: StageCallback | None = None, source_size: tuple[int, int] | None = None,
        prompt: str | None = None) -> InferenceResult:
    """Detect objects in one image ([H, W, 3] uint8 RGB); see `run_batch`. DINO has fixed classes:
    a `prompt` is refused."""
    _refuse_prompt(prompt)
    return run_batch(model, cfg, [image], max_size=max_size, internals=internals, precision=precision,
                     model_id=model_id, on_stage=on_stage,
                     source_sizes=None if source_size is None else [source_size])[0]


def run_batch(model: torch.nn.Module, cfg: DINOConfig, images: list[np.ndarray], *, max_size: int | None = None,
              internals: bool = True, precision: str = "float32", model_id: str = "",
              on_stage: StageCallback | None = None,
              source_sizes: Sequence[tuple[int, int] | None] | None = None) -> list[InferenceResult]:
    """Detect objects in `images` (each [H, W, 3] uint8 RGB) with `model` built from `cfg`.

    max_size: optional cap on the longer side of the model input, below the config's own
        (official 800 / 1333 rule otherwise).
    internals: keep each image's DINOOutput with the decoder's sampling locations and attention
        weights and the encoder's input (what the explorer draws); False keeps only the detections
        (evaluation).
    precision: "float32", or "bfloat16" / "float16" to run under autocast: the weights stay
        float32, convolutions and matrix products run in the half type, the deformable attention
        takes half-precision values and weights at float32 locations and accumulates in float32;
        softmax, the two-stage selection's scores and the box references stay float32. Outputs
        are float32 either way. On a CPU without native bfloat16 this is much slower than float32
        (`runtime.precision.support` says which CPU has it).
    on_stage: called with (stage, seconds) as each stage ends ("preprocess", "backbone",
        "encoder", "decoder", "postprocess", "total"), from the thread that runs the model.
    source_sizes: per image, its (H, W) as given when the image is a downscaled copy (the
        `LoadedImage.file_size` of `io.images.load_image`), else None; kept in the result.
    Images of different sizes are padded to a common size and masked, as officially.
    """
    check_batch(images, source_sizes)
    check_precision(precision)
    device = next(model.parameters()).device
    backend = ops.backend(device)  # what serves the op in this run (a kernel may become ready later)
    timings: dict[str, float] = {} if on_stage is None else _ReportingTimings(on_stage)
    start = time.perf_counter()
    batch = prepare_batch(images, cfg, max_size)
    timings["preprocess"] = time.perf_counter() - start

    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=PRECISIONS[precision] is not None)
    with torch.inference_mode(), autocast:
        output = float32(model(batch.images.to(device), batch.masks.to(device), capture_attention=internals,
                               timings=timings))
        post_start = time.perf_counter()
        sizes = torch.tensor([image.shape[:2] for image in images], device=device)
        detections = postprocess(output.pred_logits, output.pred_boxes, sizes, cfg.num_select)
    timings["postprocess"] = time.perf_counter() - post_start
    timings["total"] = time.perf_counter() - start

    names, categories = class_names(cfg), category_ids(cfg)
    return [
        InferenceResult(
            image=image, image_size=(int(image.shape[0]), int(image.shape[1])), input_size=batch.input_sizes[i],
            padded_size=batch.padded_size,
            detections=to_cpu(detections[i]), output=_image_output(output, i) if internals else None,
            timings=dict(timings), backend=backend, device=str(device), class_names=names,
            category_ids=categories, variant=cfg.name, model_id=model_id, precision=precision,
            source_size=given_size(source_sizes[i] if source_sizes else None, image))
        for i, image in enumerate(images)
    ]


def _refuse_prompt(prompt: str | None) -> None:
    if prompt:
        raise ValueError("DINO has fixed classes and takes no prompt")


class _ReportingTimings(dict):
    """A timings dict that calls `on_stage(stage, seconds)` as each stage's time is recorded (the
    model records "backbone", "encoder" and "decoder" as it finishes each)."""

    def __init__(self, on_stage: StageCallback):
        super().__init__()
        self._on_stage = on_stage

    def __setitem__(self, stage: str, seconds: float) -> None:
        super().__setitem__(stage, seconds)
        self._on_stage(stage, seconds)


def _image_output(output: DINOOutput, index: int) -> DINOOutput:
    """Image `index` of a batched DINOOutput as a batch of one, on the CPU."""
    return to_cpu(output if output.memory.shape[0] == 1 else output.select_image(index))
