"""The contract of an exported file: its inputs, its outputs and the metadata properties that let a
runtime reproduce the PyTorch preprocessing exactly. `export.onnx` writes it, `export.runtime`
reads it; neither needs the other (this module does not import torch).

Inputs: `images` [B, 3, H, W] float32, RGB scaled to [0, 1] then normalized with the ImageNet mean
and std, zero-padded right and bottom; `masks` [B, H, W] bool, True on padding. Each image is first
resized by the official rule (`io.model_input.model_input_size`: shorter side to `min_size`, longer
side at most `max_size`, PIL bilinear). A file exported for a fixed canvas (H, W) fits every image
into it by the same rule (a canvas of (800, 1333) keeps the official size of landscape images) and
pads it to the canvas; a dynamic file takes any padded size whose sides are at least `min_side`.

Metadata properties (strings; JSON where structured): `dino_explorer.format`, `variant`, `config`
(the `DINOConfig`), `source` (the checkpoint exported), `internals`, `input_size_rule`,
`normalization`, `class_names`, `category_ids` (COCO category id of each class id), `outputs`
(name -> shape legend), `exporter`, `sampling` ("grid-sample" or "gather").
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..io.labels import category_ids, class_names
from ..io.model_input import IMAGENET_MEAN, IMAGENET_STD, model_input_size
from ..model.config import MIN_INPUT_SIDE, DINOConfig

DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch.onnx.export(dynamo=True) writes 18 or later (GridSample exists since 16)
FORMAT = "dino-explorer/onnx/1"
FORMAT_KEY = "dino_explorer.format"
INPUT_NAMES = ("images", "masks")
# --sampling -> the `ops` backend the export is traced with: GridSample nodes, or Gather-based
# bilinear sampling (`ops.gather`, no GridSample node).
SAMPLINGS = {"grid-sample": "reference", "gather": "gather"}
DEFAULT_SAMPLING = "grid-sample"  # faster in ONNX Runtime and OpenVINO at real sizes (RESULTS.md)
NORMALIZATION = {"scale": "1/255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                 "layout": "RGB, channels first"}


@dataclass(frozen=True)
class OutputSpec:
    """One graph output: its name, shape legend (B images, Q query slots = min(num_queries,
    tokens), C classes, N = min(num_select, Q * C), K decoder layers, L levels, M heads, P points)
    and the axis that indexes the image (None: shared by the batch)."""

    name: str
    legend: str
    batch_axis: int | None


OUTPUTS = (
    OutputSpec("logits", "[B, Q, C] float32 final class logits", 0),
    OutputSpec("boxes", "[B, Q, 4] float32 final boxes, normalized (cx, cy, w, h) of each image's unpadded extent", 0),
    OutputSpec("scores", "[B, N] float32 sigmoid scores of the top (query, class) pairs, best first", 0),
    OutputSpec("labels", "[B, N] int64 class id of each", 0),
    OutputSpec("query_slot", "[B, N] int64 decoder query slot of each", 0),
    OutputSpec("detection_boxes", "[B, N, 4] float32 normalized (x0, y0, x1, y1) of each; times the original "
                                  "image's (width, height) gives its pixels", 0),
)
INTERNAL_OUTPUTS = (
    OutputSpec("topk_indices", "[B, Q] int64 encoder token each decoder query slot starts from", 0),
    OutputSpec("proposal_logits", "[B, Q, C] float32 encoder class logits of the selected tokens", 0),
    OutputSpec("spatial_shapes", "[L, 2] int64 (H, W) of each feature level; tokens are the levels "
                                 "flattened row-major, in order", None),
    OutputSpec("references", "[K + 1, B, Q, 4] float32 decoder reference boxes (cx, cy, w, h): the proposals "
                             "after the encoder box head, then after each layer", 1),
    OutputSpec("layer_boxes", "[K, B, Q, 4] float32 boxes predicted by each decoder layer (the last is `boxes`)", 1),
    OutputSpec("sampling_locations", "[K, B, Q, M, L, P, 2] float32 decoder cross-attention sampling points, "
                                     "(x, y) in [0, 1] of each padded feature map", 1),
    OutputSpec("attention_weights", "[K, B, Q, M, L, P] float32 their attention weights", 1),
)


def output_specs(internals: bool) -> tuple[OutputSpec, ...]:
    """The graph's outputs, in order."""
    return OUTPUTS + INTERNAL_OUTPUTS if internals else OUTPUTS


@dataclass(frozen=True)
class ExportInfo:
    """What a file was exported from and for.

    canvas: the fixed padded input (H, W), or None for a graph that takes any size.
    min_side: the smallest padded side the graph holds for (the exporter's shape range).
    """

    config: DINOConfig
    source: str
    internals: bool
    canvas: tuple[int, int] | None
    min_side: int
    exporter: str
    sampling: str = "grid-sample"

    def __post_init__(self) -> None:
        if self.canvas is not None and min(self.canvas) < max(self.min_side, MIN_INPUT_SIDE):
            raise ValueError(f"the canvas {self.canvas[1]}x{self.canvas[0]} is smaller than "
                             f"{max(self.min_side, MIN_INPUT_SIDE)} pixels on a side")

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        return output_specs(self.internals)

    def input_size(self, height: int, width: int, max_size: int | None = None) -> tuple[int, int]:
        """(h, w) an image of `height` x `width` is resized to, its longer side also capped at
        `max_size` when given; ValueError when the graph cannot take it."""
        size = model_input_size(self.config, height, width, max_size, self.canvas)
        if self.canvas is None and min(size) < self.min_side:
            raise ValueError(f"a {width}x{height} image becomes {size[1]}x{size[0]} at the model input, but this "
                             f"ONNX model was exported for sides of at least {self.min_side} pixels")
        return size

    def properties(self) -> dict[str, str]:
        """The metadata properties written into the file."""
        cfg = self.config
        rule = {"resize": "official: shorter side to min_size, longer side at most max_size (DETR rounding), "
                          "PIL bilinear; with a canvas, min_size and max_size are also limited by the canvas "
                          "sides along the image's shorter and longer axes",
                "min_size": cfg.min_size, "max_size": cfg.max_size,
                "canvas": list(self.canvas) if self.canvas else None,
                "min_side": self.min_side,
                "padding": "zeros right and bottom, to the canvas or the largest image; masks True on padding"}
        return {
            FORMAT_KEY: FORMAT,
            "variant": cfg.name,
            "config": json.dumps(cfg.as_dict()),
            "source": self.source,
            "internals": json.dumps(self.internals),
            "input_size_rule": json.dumps(rule),
            "normalization": json.dumps(NORMALIZATION),
            "class_names": json.dumps(list(class_names(cfg))),
            "category_ids": json.dumps(list(category_ids(cfg))),
            "outputs": json.dumps({spec.name: spec.legend for spec in self.outputs}),
            "exporter": self.exporter,
            "sampling": self.sampling,
        }

    @classmethod
    def from_properties(cls, properties: dict[str, str], name: str = "the file") -> ExportInfo:
        """Read back `properties()`; ValueError when they are not this project's."""
        if properties.get(FORMAT_KEY) != FORMAT:
            found = properties.get(FORMAT_KEY)
            raise ValueError(f"{name} is not a DINO Explorer ONNX export (format {found!r}, expected {FORMAT!r}); "
                             "make one with `python -m dino_demo export`")
        try:
            rule = json.loads(properties["input_size_rule"])
            normalization = json.loads(properties["normalization"])
            info = cls(config=DINOConfig.from_dict(json.loads(properties["config"])), source=properties["source"],
                       internals=bool(json.loads(properties["internals"])),
                       canvas=tuple(rule["canvas"]) if rule["canvas"] else None, min_side=int(rule["min_side"]),
                       exporter=properties["exporter"], sampling=properties.get("sampling", "grid-sample"))
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{name}: incomplete DINO Explorer metadata ({type(error).__name__}: {error})") from None
        if normalization != NORMALIZATION:
            raise ValueError(f"{name} expects normalization {normalization}, this version makes {NORMALIZATION}")
        return info
