"""Exporting a `transformers` detector (Deformable DETR, Grounding DINO / MM Grounding DINO, RT-DETR
v1/v2, D-FINE, LW-DETR, RF-DETR; loaded by `families.load`) to ONNX.

The model runs with our op serving its deformable attention (`families.op`), so the sampling in
the graph is the one chosen for the export: "grid-sample" (the reference op, ONNX GridSample) or
"gather" (`ops.gather`, no GridSample). `torch.export` captures it for one padded image size (the
processor's output for fixed-size processors, else a canvas the runtime pads into), onnxscript
folds constants, `onnx.checker` validates the file, and the metadata (`family_metadata`) carries
what the runtime needs: the processor's and tokenizer's files, the class names and the sizes.

Grounding DINO keeps its text as inputs (`input_ids`, `attention_mask`, `token_type_ids`, any
length up to the model's `max_text_len`), so one file serves every prompt. Two of its steps do not
translate as transformers writes them, and are rewritten at capture: the cumulative max / min that
build its text masks (no ONNX op) become a masked max / min over a [T, T] table (identical
values), and transformers' run-time shape checks (`torch_compilable_check`, no ONNX op either) are
switched off with its own `TRANSFORMERS_DISABLE_TORCH_CHECK`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from unittest import mock

import onnxscript.optimizer
import torch
from torch import nn

from .. import ops
from ..families.capture import Recorder, recording
from ..families.load import FamilyModel
from ..runtime.speed import PackedLinear
from .family_metadata import TEXT_INPUTS, FamilyExportInfo, family_outputs, processor_files
from .metadata import DEFAULT_OPSET, DEFAULT_SAMPLING, MIN_OPSET, SAMPLINGS
from .onnx import ExportReport, save_checked




class FamilyGraph(nn.Module):
    """A family model as the exported graph: inputs `FamilyExportInfo.inputs` (pixel_values
    [B, 3, H, W], pixel_mask [B, H, W] for processors that pad, and for Grounding DINO input_ids /
    attention_mask / token_type_ids [B, T]) -> `family_outputs(internals)`, in that order."""

    def __init__(self, handle: FamilyModel, input_names: tuple[str, ...], internals: bool):
        super().__init__()
        self.model, self.input_names, self.internals = handle.model, input_names, internals

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with recording(Recorder()) as recorder:
            out = self.model(**dict(zip(self.input_names, inputs)))
        outputs = (out.logits, out.pred_boxes)
        if not self.internals:
            return outputs
        return outputs + (torch.stack(recorder.decoder_locations), torch.stack(recorder.decoder_weights),
                          torch.stack([r[:, :, 0] for r in recorder.decoder_references]))


def export_family(handle: FamilyModel, path: str | os.PathLike, *, sampling: str = DEFAULT_SAMPLING,
                  canvas: tuple[int, int] | None = None, internals: bool = False, opset: int = DEFAULT_OPSET,
                  source: str = "") -> ExportReport:
    """Write the family model of `handle` as an ONNX file at `path`.

    sampling: "gather" or "grid-sample" (see the module docstring).
    canvas: (H, W) of the padded input; default: the processor's fixed size, or (min_size,
        max_size) for processors that keep the aspect ratio (landscape images at their full size).
    internals: also output the decoder's sampling locations, attention weights and reference
        points per layer (`family_metadata.INTERNAL_OUTPUTS`).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET} (what torch's exporter writes), got {opset}")
    if not handle.our_op:
        raise ValueError("export a family model served by our op (families.load(..., our_op=True))")
    if any(isinstance(module, PackedLinear) for module in handle.model.modules()):
        raise ValueError("export a family model with transformers' own modules (families.load(..., fast=False)): "
                         "the inference fast path's oneDNN layers have no ONNX form")
    settings, config = handle.settings, handle.model.config
    method = getattr(config, "decoder_method", "default")
    if method != "default":
        raise ValueError(f"{settings.family}: the {method!r} sampling method is not bilinear; only bilinear "
                         "sampling is exported")
    if canvas is None:
        canvas = (settings.min_size, settings.max_size)
    elif settings.fixed_size and tuple(canvas) != (settings.min_size, settings.max_size):
        raise ValueError(f"{settings.family}'s processor resizes every image to {settings.min_size}x"
                         f"{settings.max_size} (H x W); --size must be that or left out")
    path = Path(path)
    info = FamilyExportInfo(
        model_type=settings.name, family=settings.family, text=settings.text_prompt, canvas=tuple(canvas),
        pads=not settings.fixed_size, sampling=sampling, internals=internals, num_select=settings.num_select,
        class_names=_class_names(config), max_text_len=int(getattr(config, "max_text_len", 0) or 0),
        files=processor_files(handle.processor), source=source,
        exporter=f"torch {torch.__version__}, torch.export + torch.onnx.export(dynamo=True), opset {opset}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    graph = FamilyGraph(handle, info.inputs, internals).eval()
    with ops.use_backend(SAMPLINGS[sampling]), _exportable_transformers(), torch.no_grad():
        program = torch.export.export(graph, _sample_inputs(info, handle.processor), dynamic_shapes=_dynamic_text(info),
                                      strict=False)
        table = torch.export.default_decompositions()
        table.update(_DECOMPOSITIONS)
        program = program.run_decompositions(table)
    seconds["capture"] = time.perf_counter() - start

    start = time.perf_counter()
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=list(info.inputs),
                                     output_names=[spec.name for spec in family_outputs(internals)], optimize=False,
                                     verbose=False)
    onnxscript.optimizer.fold_constants(onnx_program.model)
    onnxscript.optimizer.remove_unused_nodes(onnx_program.model)
    onnx_program.model.metadata_props.update(info.properties())
    seconds["translate"] = time.perf_counter() - start
    return save_checked(onnx_program, path, seconds, info)


def _class_names(config) -> tuple[str, ...]:
    labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    count = max(int(config.num_labels), max(labels, default=-1) + 1)
    return tuple(labels.get(i, f"class {i}") for i in range(count))


def _sample_inputs(info: FamilyExportInfo, processor) -> tuple[torch.Tensor, ...]:
    """One image of the canvas size; for text, a two-phrase prompt (its length stays symbolic)."""
    height, width = info.canvas
    generator = torch.Generator().manual_seed(0)
    sample = {"pixel_values": torch.randn(1, 3, height, width, generator=generator),
              "pixel_mask": torch.ones(1, height, width, dtype=torch.long)}
    if info.text:
        ids = processor.tokenizer("a . b .")["input_ids"]
        sample.update(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      token_type_ids=torch.zeros(1, len(ids), dtype=torch.long))
    return tuple(sample[name] for name in info.inputs)


def _dynamic_text(info: FamilyExportInfo):
    """The prompt length T of the text inputs is symbolic (3 .. max_text_len - 1: transformers pads
    the logits of shorter prompts to max_text_len, a branch the full length does not take); image
    sizes are fixed."""
    if not info.text:
        return None
    length = torch.export.Dim("tokens", min=3, max=info.max_text_len - 1)
    return (tuple({1: length} if name in TEXT_INPUTS else None for name in info.inputs),)  # one varargs


def _exportable_transformers():
    """transformers' own switch for its run-time shape checks (`torch_compilable_check`: the
    `_assert` ops it traces to have no ONNX translation), on while capturing (the environment is
    restored afterwards)."""
    return mock.patch.dict(os.environ, {"TRANSFORMERS_DISABLE_TORCH_CHECK": "1"})


def _cumulative(x: torch.Tensor, dim: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """cummax / cummin of an integer [B, T] tensor along dim 1 as a masked max / min over a [T, T]
    table: (values, index of the first position holding each value)."""
    if x.dim() != 2 or dim not in (1, -1):
        raise ValueError(f"only [B, T] cumulative max/min along the last axis are rewritten, got {tuple(x.shape)}")
    length = x.shape[1]
    positions = torch.arange(length, device=x.device)
    before = positions[None, :] <= positions[:, None]                               # [T, T]: j <= i
    fill = torch.iinfo(x.dtype).min if largest else torch.iinfo(x.dtype).max
    table = torch.where(before[None], x[:, None, :], torch.full_like(x[:, None, :], fill))
    values = table.amax(-1) if largest else table.amin(-1)
    hits = (table == values[..., None]) & before[None]
    index = torch.where(hits, positions[None, None, :], torch.full_like(hits, length, dtype=torch.long)).amin(-1)
    return values, index


def _slice_scatter(x: torch.Tensor, src: torch.Tensor, dim: int = 0, start=None, end=None, step: int = 1):
    """slice_scatter with step 1 as a concatenation of `x` before the slice, `src`, and `x` after
    it (the same values). torch's exporter writes slice_scatter as Transpose, ScatterND,
    Transpose; on Grounding DINO's text logits (padded to max_text_len by a slice assignment) the
    transposes reach the ReduceMax before the query selection's TopK, and OpenVINO 2026.4's CPU
    plugin, moving them through that ReduceMax, mis-sizes the TopK (it then refuses the graph)."""
    if step != 1:
        return NotImplemented
    dim = dim % x.dim()
    size = x.shape[dim]
    start = 0 if start is None else start
    end = size if end is None or (isinstance(end, int) and end > size) else end
    pieces = ([x.narrow(dim, 0, start)] if not (isinstance(start, int) and start == 0) else []) + [src]
    if not (isinstance(end, int) and end == size):
        pieces.append(x.narrow(dim, end, size - end))
    return torch.cat(pieces, dim) if len(pieces) > 1 else src.clone()


_DECOMPOSITIONS = {
    torch.ops.aten.slice_scatter.default: _slice_scatter,
    torch.ops.aten.cummax.default: lambda x, dim: _cumulative(x, dim, True),
    torch.ops.aten.cummin.default: lambda x, dim: _cumulative(x, dim, False),
}
