"""Images through DINO: the one inference path that the app, the command line, evaluation and
the benchmarks all use.

`run_batch` resizes HxWx3 uint8 RGB images with the official rule (`io.preprocess.prepare_batch`),
runs the model (with the decoder's attention captured when `internals=True`), post-processes with
the official top-k, and returns one `InferenceResult` per image, boxes in the pixels of the image
given. An image the loader downscaled (`io.images.load_image(max_side=...)`) is run as it is, and
its result remembers the size it had (`source_size`), so that results files give boxes in the
pixels of the image as the person gave it (`io.results`). `run` is the same for one image. The `explore.views` functions turn a stored result into
pixel-space arrays for drawing without running the model again.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import ops
from ..families.details import FamilyDetails
from ..io.labels import category_ids, class_names, label_name
from ..io.preprocess import prepare_batch
from ..model.config import DINOConfig
from ..model.outputs import Detections, DINOOutput
from ..model.postprocess import postprocess


@dataclass(eq=False)
class InferenceResult:
    """One image's pass through DINO.

    image: [H, W, 3] uint8 RGB the boxes refer to ("original pixels"); None in a stored result,
        which keeps a display copy instead (see `explore.stored`).
    image_size: (H, W) of that image.
    input_size: (h, w) the image was resized to for the model; padded_size: (h, w) of the padded
        batch the model ran on (equal to input_size for a batch of one).
    detections: the post-processed top `num_select` (query, class) pairs in original pixels,
        best first and not thresholded; `query_slot` is the decoder query slot of each.
    output: this image's DINOOutput (a batch of one, on the CPU, with sampling locations and
        attention weights), or None when the run was made with `internals=False`.
    timings: seconds for "preprocess", "backbone", "encoder", "decoder", "postprocess", "total"
        (of the whole batch the image ran in).
    backend: (op implementation, why it was chosen); device: where the model ran; precision: what
        it ran in ("float32", or "bfloat16" / "float16" under autocast; see `run_batch`).
    class_names, category_ids: name and COCO category id of each class id.
    variant: the model's config name; model_id: what the caller called the model (shown in the UI
        and written to results files).
    family: for a `transformers` detector (`dino_demo.families`), what its family adds (prompt,
        token scores, views that do not apply and why); None for DINO. `output` then holds the
        same fields, filled from the family's outputs (`selection` None without a two-stage).
    source_size: (H, W) of the image as given when `image` is a downscaled copy of it (the boxes
        here are in `image`'s pixels; `source_scale` maps them to the image as given), else None.
    """

    image: np.ndarray | None
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    detections: Detections
    output: DINOOutput | None
    timings: dict[str, float]
    backend: tuple[str, str]
    device: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    variant: str = ""
    model_id: str = ""
    family: FamilyDetails | None = None
    precision: str = "float32"
    source_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.source_size is not None and (len(self.source_size) != 2 or min(self.source_size) < 1):
            raise ValueError(f"source_size must be (H, W) in pixels, got {self.source_size}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return self.image_size

    @property
    def given_size(self) -> tuple[int, int]:
        """(H, W) of the image as the person gave it (before any downscaling)."""
        return self.source_size or self.image_size

    @property
    def source_scale(self) -> tuple[float, float]:
        """(x, y) pixels of the image as given per pixel of `image` (1.0 unless downscaled)."""
        (given_h, given_w), (h, w) = self.given_size, self.image_size
        return given_w / w, given_h / h

    @property
    def internals(self) -> DINOOutput:
        """The stored DINOOutput; ValueError when the run kept no internals."""
        if self.output is None:
            raise ValueError("this result was computed without internals (internals=False)")
        return self.output

    @property
    def num_layers(self) -> int:
        return int(self.internals.boxes.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.internals.boxes.shape[2])

    @property
    def attention_shape(self) -> tuple[int, int, int]:
        """(heads M, levels L, points P) of the decoder's cross-attention."""
        m, l, p = self.internals.attention_weights.shape[-3:]
        return int(m), int(l), int(p)

    def label(self, class_id: int) -> str:
        return label_name(self.class_names, class_id)


PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
StageCallback = Callable[[str, float], None]


def run(model: torch.nn.Module, cfg: DINOConfig, image: np.ndarray, *, max_size: int | None = None,
        internals: bool = True, precision: str = "float32", model_id: str = "",
        on_stage: StageCallback | None = None, source_size: tuple[int, int] | None = None,
        prompt: str | None = None) -> InferenceResult:
    """Detect objects in one image ([H, W, 3] uint8 RGB); see `run_batch`. A transformers detector
    (`model` a `families.load.FamilyModel`) runs through `families.inference.run`, with `prompt`
    for text-prompted families."""
    if not isinstance(cfg, DINOConfig):
        from ..families.inference import run as run_family

        return run_family(model, image, prompt=prompt, max_size=max_size, internals=internals, precision=precision,
                          model_id=model_id, on_stage=on_stage, source_size=source_size)
    if prompt:
        raise ValueError("DINO has fixed classes and takes no prompt")
    return run_batch(model, cfg, [image], max_size=max_size, internals=internals, precision=precision,
                     model_id=model_id, on_stage=on_stage,
                     source_sizes=None if source_size is None else [source_size])[0]


def run_batch(model: torch.nn.Module, cfg: DINOConfig, images: list[np.ndarray], *, max_size: int | None = None,
              internals: bool = True, precision: str = "float32", model_id: str = "",
              on_stage: StageCallback | None = None,
              source_sizes: list[tuple[int, int] | None] | None = None) -> list[InferenceResult]:
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
        (`explore.precision.support` says which CPU has it).
    on_stage: called with (stage, seconds) as each stage ends ("preprocess", "backbone",
        "encoder", "decoder", "postprocess", "total"), from the thread that runs the model.
    source_sizes: per image, its (H, W) as given when the image is a downscaled copy (the
        `LoadedImage.file_size` of `io.images.load_image`), else None; kept in the result.
    Images of different sizes are padded to a common size and masked, as officially.
    """
    if not images:
        raise ValueError("run_batch needs at least one image")
    if source_sizes is not None and len(source_sizes) != len(images):
        raise ValueError(f"source_sizes has {len(source_sizes)} entries for {len(images)} images")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = next(model.parameters()).device
    backend = ops.backend(device)  # what serves the op in this run (a kernel may become ready later)
    timings: dict[str, float] = {} if on_stage is None else _ReportingTimings(on_stage)
    start = time.perf_counter()
    batch = prepare_batch(images, cfg, max_size)
    timings["preprocess"] = time.perf_counter() - start

    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=PRECISIONS[precision] is not None)
    with torch.inference_mode(), autocast:
        output = _float32(model(batch.images.to(device), batch.masks.to(device), capture_attention=internals,
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
            detections=_to_cpu(detections[i]), output=_image_output(output, i) if internals else None,
            timings=dict(timings), backend=backend, device=str(device), class_names=names,
            category_ids=categories, variant=cfg.name, model_id=model_id, precision=precision,
            source_size=_given_size(source_sizes[i] if source_sizes else None, image))
        for i, image in enumerate(images)
    ]


def _given_size(size: tuple[int, int] | None, image: np.ndarray) -> tuple[int, int] | None:
    """The size as given when it differs from the array's, else None."""
    if size is None or tuple(size) == tuple(image.shape[:2]):
        return None
    return int(size[0]), int(size[1])


def _float32(obj):
    """A (nested) output dataclass with its half-precision tensors widened to float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _float32(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                           if f.init})
    return obj


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
    return _to_cpu(output if output.memory.shape[0] == 1 else output.select_image(index))


def _to_cpu(obj):
    """A copy of a tensor dataclass (nested) with every tensor detached on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _to_cpu(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                           if f.init})
    return obj
