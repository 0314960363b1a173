"""What one image's pass through a detector gives, the same for DINO and every family: the
`InferenceResult` the views draw, the precisions a run may use, and the helpers that bring a
pass's tensors to the CPU in float32.

An `explore.draw.data` function turns a stored result into pixel-space arrays for drawing without
running the model again; `io.results` and `io.internals` write it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..io.labels import label_name
from ..model.outputs import Detections, DINOOutput
from .details import FamilyDetails

PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
StageCallback = Callable[[str, float], None]


@dataclass(eq=False)
class InferenceResult:
    """One image's pass through a detector.

    image: [H, W, 3] uint8 RGB the boxes refer to ("original pixels"); None in a stored result,
        which keeps a display copy instead (see `explore.stored`).
    image_size: (H, W) of that image.
    input_size: (h, w) the image was resized to for the model; padded_size: (h, w) of the padded
        batch the model ran on (equal to input_size for a batch of one).
    detections: the post-processed top `num_select` (query, class) pairs in original pixels,
        best first and not thresholded; `query_slot` is the decoder query slot of each.
    output: this image's DINOOutput (a batch of one, on the CPU, with sampling locations and
        attention weights), or None when the run was made with `internals=False`.
    timings: seconds for "preprocess", "backbone", "encoder", "decoder" (a family: "model"),
        "postprocess", "total" (of the whole batch the image ran in).
    backend: (op implementation, why it was chosen); device: where the model ran; precision: what
        it ran in ("float32", or "bfloat16" / "float16" under autocast).
    class_names, category_ids: name and COCO category id of each class id.
    variant: the model's config name; model_id: what the caller called the model (shown in the UI
        and written to results files).
    family: for a `transformers` detector (`dino_demo.families`), what its family adds (prompt,
        token scores, the inputs to re-run its encoder); None for DINO. `output` then holds the
        same fields, filled from the family's outputs (`selection` None without a two-stage).
    unavailable: view ("proposals", "encoder", "token scores") -> one line saying why it does not
        apply to the model that made this result; a view not named applies (see `reason`).
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
    unavailable: dict[str, str] = field(default_factory=dict)

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

    def reason(self, view: str) -> str | None:
        """Why `view` does not apply to the model that made this result, or None when it does."""
        return self.unavailable.get(view)

    def extra_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The internals arrays this result adds to the common ones (`arrays`, by their file
        names): a family's per-level point counts and prompt tokens; none for DINO."""
        return {} if self.family is None else self.family.arrays(arrays)

    def model_fields(self) -> dict[str, str]:
        """What an internals file's "model" record says beside id and variant (a family's name
        and prompt); nothing for DINO."""
        return {} if self.family is None else {"family": self.family.family, "prompt": self.family.prompt}


def check_precision(precision: str) -> None:
    """ValueError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def given_size(size: tuple[int, int] | None, image: np.ndarray) -> tuple[int, int] | None:
    """The size as given when it differs from the array's, else None."""
    if size is None or tuple(size) == tuple(image.shape[:2]):
        return None
    return int(size[0]), int(size[1])


def to_cpu(obj):
    """A copy of a tensor dataclass (nested) with every tensor detached on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: to_cpu(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                           if f.init})
    return obj


def float32(obj):
    """A (nested) output dataclass with its half-precision tensors widened to float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: float32(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                           if f.init})
    return obj


@dataclass(frozen=True)
class EncoderToken:
    """One encoder token: `index` into the flattened multi-scale memory, its feature `level` and
    (row, col) `cell` in that level's grid."""

    index: int
    level: int
    cell: tuple[int, int]


@dataclass(frozen=True)
class TokenAttention:
    """One encoder token's self-attention in every encoder layer (`Detector.token_attention`).

    reference_points: [L, 2] (x, y) of the token's cell centre in [0, 1] of each level's padded map.
    sampling_locations: [E, M, L, P, 2] (x, y) in [0, 1] of each level's padded map, per encoder
        layer E; attention_weights: [E, M, L, P] (softmax over L * P per head).
    """

    token: EncoderToken
    reference_points: torch.Tensor
    sampling_locations: torch.Tensor
    attention_weights: torch.Tensor
