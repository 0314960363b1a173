"""The contract of an exported `transformers` detector: inputs, outputs and metadata (no torch here).

Inputs: `pixel_values` [B, 3, H, W] float32 as the model's processor makes them (resized,
rescaled, normalized) and zero-padded right and bottom to the canvas (H, W); `pixel_mask`
[B, H, W] int64 (1 on the image, 0 on padding) for processors that keep the aspect ratio
(Deformable DETR, Grounding DINO); for Grounding DINO also `input_ids`, `attention_mask`,
`token_type_ids` [B, T] int64 from its tokenizer (3 <= T < `max_text_len`).

Outputs: `logits` [B, Q, C] (Grounding DINO: C = max_text_len token logits, -inf beyond the
prompt) and `pred_boxes` [B, Q, 4] normalized (cx, cy, w, h) of the canvas; with internals the
decoder's `sampling_locations` [K, B, Q, M, L, P, 2], `attention_weights` [K, B, Q, M, L, P] (levels
with fewer points padded: NaN location, weight 0) and `reference_points` [K, B, Q, 2 or 4] (each
layer's cross-attention reference, first level); and where the encoder is deformable (Deformable
DETR, Grounding DINO: not RT-DETR, D-FINE, LW-DETR, RF-DETR, whose encoders are not) its
self-attention `encoder_sampling_locations` [E, B, S, M, L, P, 2] and `encoder_attention_weights`
[E, B, S, M, L, P] for every one of its S tokens.

Metadata properties: `dino_explorer.format` (FAMILY_FORMAT), `family`, `model_type`, `canvas`,
`pads`, `sampling`, `internals`, `num_select`, `class_names`, `max_text_len`, `source`, `exporter`,
`processor_files` (JSON: file name -> text of every file `save_pretrained` wrote for the processor
and tokenizer, so that the runtime rebuilds the same preprocessing and one file serves any prompt).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .metadata import FORMAT_KEY, OutputSpec

FAMILY_FORMAT = "dino-explorer/onnx-family/1"
MAX_PROCESSOR_BYTES = 8_000_000  # the processor's and tokenizer's files, all together

OUTPUTS = (
    OutputSpec("logits", "[B, Q, C] float32 class logits (Grounding DINO: per prompt token, C = max_text_len)", 0),
    OutputSpec("pred_boxes", "[B, Q, 4] float32 boxes, normalized (cx, cy, w, h) of the padded canvas", 0),
)
INTERNAL_OUTPUTS = (
    OutputSpec("sampling_locations", "[K, B, Q, M, L, P, 2] float32 decoder cross-attention sampling points, "
                                     "(x, y) in [0, 1] of each feature map (NaN: padding of a level with "
                                     "fewer points)", 1),
    OutputSpec("attention_weights", "[K, B, Q, M, L, P] float32 their attention weights", 1),
    OutputSpec("reference_points", "[K, B, Q, 2 or 4] float32 each decoder layer's reference (first level)", 1),
)
ENCODER_OUTPUTS = (
    OutputSpec("encoder_sampling_locations", "[E, B, S, M, L, P, 2] float32 each encoder layer's self-attention "
                                             "sampling points of every token, (x, y) in [0, 1] of each feature map", 1),
    OutputSpec("encoder_attention_weights", "[E, B, S, M, L, P] float32 their attention weights", 1),
)
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def family_outputs(internals: bool, encoder: bool = False) -> tuple[OutputSpec, ...]:
    """The graph's outputs, in order; `encoder`: with internals, also the deformable encoder's."""
    if not internals:
        return OUTPUTS
    return OUTPUTS + INTERNAL_OUTPUTS + (ENCODER_OUTPUTS if encoder else ())


@dataclass(frozen=True)
class FamilyExportInfo:
    """What a family file was exported from and for.

    canvas: (H, W) of the padded input; pads: whether the processor keeps the aspect ratio (then
    images are padded into the canvas and `pixel_mask` is an input); num_select: detections kept
    before the threshold (fixed-class families); files: the processor's files (name -> text);
    encoder_internals: the internals include the deformable encoder's (`ENCODER_OUTPUTS`);
    dynamic: the image's height and width are free (padding processors only): the runtime feeds
    each image at the size the processor makes, unpadded, and `canvas` is only the sample it was
    traced with; min_side: the smallest height and width a dynamic graph holds for.
    """

    model_type: str
    family: str
    text: bool
    canvas: tuple[int, int]
    pads: bool
    sampling: str
    internals: bool
    num_select: int
    class_names: tuple[str, ...]
    max_text_len: int
    files: dict[str, str] = field(repr=False)
    source: str = ""
    exporter: str = ""
    encoder_internals: bool = False
    dynamic: bool = False
    min_side: int = 0

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("pixel_values",) + (("pixel_mask",) if self.pads else ()) + (TEXT_INPUTS if self.text else ())

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        return family_outputs(self.internals, self.encoder_internals)

    @property
    def name(self) -> str:
        """The variant name results carry."""
        return self.model_type

    def properties(self) -> dict[str, str]:
        return {
            FORMAT_KEY: FAMILY_FORMAT, "family": self.family, "model_type": self.model_type,
            "text": json.dumps(self.text), "canvas": json.dumps(list(self.canvas)), "pads": json.dumps(self.pads),
            "sampling": self.sampling, "internals": json.dumps(self.internals),
            "encoder_internals": json.dumps(self.encoder_internals), "dynamic": json.dumps(self.dynamic),
            "min_side": str(self.min_side),
            "num_select": str(self.num_select), "class_names": json.dumps(list(self.class_names)),
            "max_text_len": str(self.max_text_len), "source": self.source, "exporter": self.exporter,
            "outputs": json.dumps({spec.name: spec.legend for spec in self.outputs}),
            "processor_files": json.dumps(self.files),
        }

    @classmethod
    def from_properties(cls, properties: dict[str, str], name: str = "the file") -> FamilyExportInfo:
        """Read back `properties()`; ValueError when they are incomplete."""
        try:
            return cls(model_type=properties["model_type"], family=properties["family"],
                       text=bool(json.loads(properties["text"])), canvas=tuple(json.loads(properties["canvas"])),
                       pads=bool(json.loads(properties["pads"])), sampling=properties["sampling"],
                       internals=bool(json.loads(properties["internals"])),
                       num_select=int(properties["num_select"]),
                       class_names=tuple(json.loads(properties["class_names"])),
                       max_text_len=int(properties["max_text_len"]),
                       files=dict(json.loads(properties["processor_files"])), source=properties.get("source", ""),
                       exporter=properties.get("exporter", ""),
                       encoder_internals=bool(json.loads(properties.get("encoder_internals", "false"))),
                       dynamic=bool(json.loads(properties.get("dynamic", "false"))),
                       min_side=int(properties.get("min_side", "0")))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{name}: incomplete DINO Explorer metadata ({type(error).__name__}: {error})") from None


def processor_files(processor) -> dict[str, str]:
    """Every text file `processor.save_pretrained` writes (image processor, tokenizer), by name;
    ValueError when they are not text or larger than MAX_PROCESSOR_BYTES together."""
    with tempfile.TemporaryDirectory() as folder:
        processor.save_pretrained(folder)
        files, total = {}, 0
        for path in sorted(Path(folder).iterdir()):
            if not path.is_file():
                continue
            data = path.read_bytes()
            total += len(data)
            try:
                files[path.name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"the processor's file {path.name} is not text; it cannot travel in the "
                                 "ONNX metadata") from None
    if total > MAX_PROCESSOR_BYTES:
        raise ValueError(f"the processor's files take {total} bytes, more than the {MAX_PROCESSOR_BYTES} the "
                         "ONNX metadata carries")
    return files


def write_processor_files(files: dict[str, str], folder: Path) -> Path:
    """Write `files` (name -> text) into `folder` (names must be plain file names); returns it."""
    for file_name, text in files.items():
        if Path(file_name).name != file_name or file_name in ("", ".", ".."):
            raise ValueError(f"processor file name {file_name!r} is not a plain file name")
        (folder / file_name).write_text(text, encoding="utf-8")
    return folder
