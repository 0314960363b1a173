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
switched off with its own `TRANSFORMERS_DISABLE_TORCH_CHECK`. Slice assignments (Grounding DINO
pads its text logits with one) are written as concatenations, which OpenVINO compiles
(`_slice_scatter`).

A dynamic export (`dynamic=True`, for the processors that keep the aspect ratio: Deformable
DETR, Grounding DINO) keeps the image's height and width symbolic through transformers' code,
whose level shapes are Python ints taken from tensor shapes (symbolic while tracing); the
calls that would read them as the sample's (`torch.linspace`'s number of steps, `torch.as_tensor`
of the level shapes table) are written with `arange` and in-graph arithmetic while capturing.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
from .family_metadata import TEXT_INPUTS, FamilyExportInfo, processor_files
from .metadata import DEFAULT_OPSET, DEFAULT_SAMPLING, MIN_OPSET, SAMPLINGS
from .onnx import ExportReport, save_checked




class EncoderRecorder(Recorder):
    """A `Recorder` that keeps the deformable encoder's sampling locations and weights of every
    token (`Recorder` keeps those of chosen rows only)."""

    def record_core(self, role: str, locations: torch.Tensor, weights: torch.Tensor, level_shapes=None) -> None:
        if role == "encoder":
            self.encoder_locations.append(locations.detach())
            self.encoder_weights.append(weights.detach())
        else:
            super().record_core(role, locations, weights, level_shapes)


class FamilyGraph(nn.Module):
    """A family model as the exported graph: inputs `FamilyExportInfo.inputs` (pixel_values
    [B, 3, H, W], pixel_mask [B, H, W] for processors that pad, and for Grounding DINO input_ids /
    attention_mask / token_type_ids [B, T]) -> `family_outputs(internals, encoder)`, in that order
    (`encoder`: the family's encoder is deformable)."""

    def __init__(self, handle: FamilyModel, input_names: tuple[str, ...], internals: bool):
        super().__init__()
        self.model, self.input_names, self.internals = handle.model, input_names, internals
        self.encoder = internals and handle.family.deformable_encoder

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with recording(EncoderRecorder() if self.encoder else Recorder()) as recorder:
            out = self.model(**dict(zip(self.input_names, inputs)))
        outputs = (out.logits, out.pred_boxes)
        if not self.internals:
            return outputs
        outputs += (torch.stack(recorder.decoder_locations), torch.stack(recorder.decoder_weights),
                    torch.stack([r[:, :, 0] for r in recorder.decoder_references]))
        if self.encoder:
            outputs += (torch.stack(recorder.encoder_locations), torch.stack(recorder.encoder_weights))
        return outputs


def export_family(handle: FamilyModel, path: str | os.PathLike, *, sampling: str = DEFAULT_SAMPLING,
                  canvas: tuple[int, int] | None = None, internals: bool = False, opset: int = DEFAULT_OPSET,
                  source: str = "", dynamic: bool = False) -> ExportReport:
    """Write the family model of `handle` as an ONNX file at `path`.

    sampling: "gather" or "grid-sample" (see the module docstring).
    canvas: (H, W) of the padded input; default: the processor's fixed size, or (min_size,
        max_size) for processors that keep the aspect ratio (landscape images at their full size).
    internals: also output the decoder's sampling locations, attention weights and reference
        points per layer (`family_metadata.INTERNAL_OUTPUTS`), and where the encoder is deformable
        (Deformable DETR, Grounding DINO) its sampling locations and weights for every token
        (`family_metadata.ENCODER_OUTPUTS`).
    dynamic: the image's height and width stay symbolic (one image), for the families whose
        processor keeps the aspect ratio (Deformable DETR, Grounding DINO); the graph is traced
        at the default canvas. Fixed-size processors (RT-DETR, D-FINE, LW-DETR, RF-DETR) make one
        size only, and are refused.
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
    if dynamic and canvas is not None:
        raise ValueError("give a canvas (--size H W) or dynamic (--dynamic), not both")
    if dynamic and settings.fixed_size:
        raise ValueError(f"{settings.family}'s processor resizes every image to {settings.min_size}x"
                         f"{settings.max_size} (H x W): a dynamic size would serve no image it makes; export "
                         "without --dynamic")
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
        encoder_internals=internals and handle.family.deformable_encoder, dynamic=dynamic,
        exporter=f"torch {torch.__version__}, torch.export + torch.onnx.export(dynamo=True), opset {opset}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    graph = FamilyGraph(handle, info.inputs, internals).eval()
    with ops.use_backend(SAMPLINGS[sampling]), _exportable_transformers(), torch.no_grad():
        program = torch.export.export(graph, _sample_inputs(info, handle.processor),
                                      dynamic_shapes=_dynamic_shapes(info), strict=False)
        table = torch.export.default_decompositions()
        table.update(_DECOMPOSITIONS)
        program = program.run_decompositions(table)
    if dynamic:
        info = dataclasses.replace(info, min_side=_min_side(program, settings.family))
    seconds["capture"] = time.perf_counter() - start

    start = time.perf_counter()
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=list(info.inputs),
                                     output_names=[spec.name for spec in info.outputs], optimize=False,
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


def _dynamic_shapes(info: FamilyExportInfo):
    """The symbolic sizes: the prompt length T of the text inputs (3 .. max_text_len - 1:
    transformers pads the logits of shorter prompts to max_text_len, a branch the full length
    does not take); for a dynamic export the image's height and width (their ranges as tracing
    finds them); other sizes fixed."""
    if not (info.text or info.dynamic):
        return None
    length = torch.export.Dim("tokens", min=3, max=info.max_text_len - 1) if info.text else None
    free = torch.export.Dim.DYNAMIC
    axes = {"pixel_values": {2: free, 3: free}, "pixel_mask": {1: free, 2: free}} if info.dynamic else {}
    axes.update({name: {1: length} for name in TEXT_INPUTS if info.text})
    return (tuple(axes.get(name) for name in info.inputs),)  # one varargs


def _min_side(program: torch.export.ExportedProgram, family: str) -> int:
    """The smallest image height and width a dynamic program holds for; ValueError when tracing
    fixed them."""
    first = program.graph_signature.user_inputs[0]  # pixel_values
    images = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == first)
    sides = images.meta["val"].shape[2:]
    if not all(isinstance(side, torch.SymInt) for side in sides):
        raise ValueError(f"{family}: tracing fixed the image size of the graph; export it without --dynamic")
    return max(int(program.range_constraints[side.node.expr].lower) for side in sides)


@contextlib.contextmanager
def _exportable_transformers():
    """While capturing: transformers' own switch for its run-time shape checks
    (`torch_compilable_check`: the `_assert` ops it traces to have no ONNX translation) on, and
    `torch.linspace` and `torch.as_tensor` of symbolic sizes kept symbolic (`_linspace`,
    `_as_tensor`); the environment and torch are restored afterwards."""
    with mock.patch.dict(os.environ, {"TRANSFORMERS_DISABLE_TORCH_CHECK": "1"}), \
            mock.patch.object(torch, "linspace", _linspace), mock.patch.object(torch, "as_tensor", _as_tensor):
        yield


_LINSPACE, _AS_TENSOR = torch.linspace, torch.as_tensor


def _as_tensor(data, dtype=None, device=None):
    """`torch.as_tensor` for export: a (nested) list holding symbolic sizes (transformers' level
    shapes table, `spatial_shapes`) built from them in the graph, where torch would store the
    traced sample's sizes as a constant; torch's own otherwise."""
    if not _holds_symbols(data):
        return _AS_TENSOR(data, dtype=dtype, device=device)
    if isinstance(data, (list, tuple)):
        return torch.stack([_as_tensor(item, dtype, device) for item in data])
    return (torch.ones((), dtype=torch.long, device=device) * data).to(dtype or torch.long)


def _holds_symbols(data) -> bool:
    if isinstance(data, (list, tuple)):
        return any(_holds_symbols(item) for item in data)
    return isinstance(data, torch.SymInt)


def _linspace(start, end, steps, *, dtype=None, device=None, **kwargs):
    """`torch.linspace` for export: with a symbolic `steps` (a level's height or width in a
    dynamic export; transformers builds its reference points and proposals with it)
    `start + arange(steps) * (end - start) / (steps - 1)`, which keeps the size symbolic, where
    linspace's integer `steps` would be read as the traced sample's size and the graph would fail
    at any other; torch's own linspace otherwise."""
    if not isinstance(steps, torch.SymInt):
        return _LINSPACE(start, end, steps, dtype=dtype, device=device, **kwargs)
    dtype = dtype or torch.get_default_dtype()
    positions = torch.arange(steps, dtype=dtype, device=device)
    return positions * ((end - start) / torch.sym_max(steps - 1, 1)) + start


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
