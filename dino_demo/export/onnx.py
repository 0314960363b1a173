"""Exporting the whole DINO detector to ONNX, with the deformable attention as Gather-based bilinear
sampling or as GridSample.

The model is captured with `torch.export` (symbolic sizes, so a dynamic export follows the input
size through the level shapes, the encoder's top-k and the post-processing) under the op the
sampling names (`metadata.SAMPLINGS`: "gather", `ops.gather`, Gather and MatMul nodes; or
"grid-sample", the reference op's `F.grid_sample`, exported as ONNX GridSample, opset 16+), then
translated by `torch.onnx.export(..., dynamo=True)`, its constants folded, and checked with
`onnx.checker`. The file carries the metadata of `export.metadata`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from torch import nn

from .. import ops
from ..model.detector import DINO
from ..model.postprocess import top_detections
from .metadata import DEFAULT_OPSET, DEFAULT_SAMPLING, INPUT_NAMES, MIN_OPSET, SAMPLINGS, ExportInfo, output_specs

# The sample a dynamic export is traced with: two images (a batch of one would fix B at 1) of a size
# whose levels all have more than one cell and whose height and width differ.
DYNAMIC_SAMPLE = (2, 352, 416)


class DetectorGraph(nn.Module):
    """DINO as the exported graph: (images [B, 3, H, W], masks [B, H, W]) -> the tensors of
    `metadata.output_specs(internals)`, in that order.

    `topk_indices` [B, Q] forces the encoder's selection, as in `DINO.forward` (teacher forcing,
    to compare a decoder with another's selection); it is not an input of the exported graph.
    """

    def __init__(self, model: DINO, internals: bool):
        super().__init__()
        self.model, self.internals = model, internals

    def forward(self, images: torch.Tensor, masks: torch.Tensor,
                topk_indices: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.model(images, masks, topk_indices=topk_indices, capture_attention=self.internals)
        scores, labels, query_slot, xyxy = top_detections(out.pred_logits, out.pred_boxes, self.model.cfg.num_select)
        outputs = (out.pred_logits, out.pred_boxes, scores, labels, query_slot, xyxy)
        if not self.internals:
            return outputs
        selection = out.selection
        return outputs + (selection.topk_indices, selection.logits, out.spatial_shapes, out.references, out.boxes,
                          out.sampling_locations, out.attention_weights)


@dataclass(frozen=True)
class ExportReport:
    """path: the file written; bytes: its size; seconds: wall time of "capture" (torch.export),
    "translate" (to ONNX, constants folded), "save", "check" (onnx.checker);
    info: what the file's metadata says."""

    path: Path
    bytes: int
    seconds: dict[str, float]
    info: ExportInfo  # or export.family_metadata.FamilyExportInfo for a transformers family


def export_onnx(model: DINO, path: str | os.PathLike, *, canvas: tuple[int, int] | None = None,
                internals: bool = False, opset: int = DEFAULT_OPSET, source: str = "",
                sampling: str = DEFAULT_SAMPLING) -> ExportReport:
    """Write `model` (eval mode, official weights layout) as an ONNX file at `path`.

    canvas: fixed (H, W) of the padded input, batch of one: a fully static graph. None: batch,
        height and width are dynamic.
    internals: also output the encoder's selection, the decoder's reference boxes per layer and
        its sampling locations and attention weights (`metadata.INTERNAL_OUTPUTS`).
    source: what the model was loaded from, recorded in the metadata.
    sampling: "gather" (no GridSample node) or "grid-sample".
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET} (what torch's exporter writes), got {opset}")
    if model.training:
        raise ValueError("export a model in eval mode (model.eval())")
    if canvas is None and model.cfg.backbone.startswith("swin"):
        # torch.export's symbolic shapes through Swin's padded, shifted windows: not done after
        # 20 CPU minutes (torch 2.14), even for one block per stage.
        raise ValueError(f"{model.cfg.name}: a dynamic export of the Swin backbone does not finish; "
                         "export it for a fixed size (--size H W)")
    path = Path(path)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    graph = DetectorGraph(model, internals).eval()
    program, min_side = _capture(graph, canvas, SAMPLINGS[sampling])
    seconds["capture"] = time.perf_counter() - start

    start = time.perf_counter()
    names = [spec.name for spec in output_specs(internals)]
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                                     output_names=names, optimize=False, verbose=False)
    # Constant folding and dead-node removal only: the exporter's own `optimize=True` adds
    # onnxscript's pattern rewriter, which (onnxscript 0.7) leaves the bounds of the Clips it makes
    # unregistered here, an invalid file, and slows the export (benchmarks/RESULTS.md).
    onnxscript.optimizer.fold_constants(onnx_program.model)
    onnxscript.optimizer.remove_unused_nodes(onnx_program.model)
    written = onnx_program.model.opset_imports.get("")
    if written != opset:
        raise ValueError(f"the exporter wrote opset {written}, not the {opset} asked for")
    info = ExportInfo(config=model.cfg, source=source, internals=internals, canvas=canvas, min_side=min_side,
                      exporter=f"torch {torch.__version__}, torch.export + torch.onnx.export(dynamo=True), "
                               f"opset {opset}", sampling=sampling)
    onnx_program.model.metadata_props.update(info.properties())
    seconds["translate"] = time.perf_counter() - start
    return save_checked(onnx_program, path, seconds, info)


def save_checked(onnx_program, path: Path, seconds: dict[str, float], info) -> ExportReport:
    """Write a translated program to `path`, check it with `onnx.checker` (full check) and report,
    adding the "save" and "check" wall times to `seconds`."""
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(path)
    seconds["save"] = time.perf_counter() - start
    start = time.perf_counter()
    onnx.checker.check_model(str(path), full_check=True)
    seconds["check"] = time.perf_counter() - start
    return ExportReport(path=path, bytes=file_bytes(path), seconds=seconds, info=info)


def _capture(graph: DetectorGraph, canvas: tuple[int, int] | None, backend: str
             ) -> tuple[torch.export.ExportedProgram, int]:
    """(the exported program, the smallest padded side it holds for)."""
    cfg = graph.model.cfg
    batch, height, width = (1, *canvas) if canvas is not None else DYNAMIC_SAMPLE
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, height, width, generator=generator)
    masks = torch.zeros(batch, height, width, dtype=torch.bool)
    dynamic = None
    if canvas is None:
        auto = torch.export.Dim.AUTO
        dynamic = {"images": {0: auto, 2: auto, 3: auto}, "masks": {0: auto, 1: auto, 2: auto}}
    with ops.use_backend(backend), torch.no_grad():
        program = torch.export.export(graph, (images, masks), dynamic_shapes=dynamic, strict=False)
    if canvas is not None:
        return program, min(canvas)
    return program, _dynamic_min_side(program, cfg.name)


def _dynamic_min_side(program: torch.export.ExportedProgram, variant: str) -> int:
    """The smallest height and width the program's shape ranges allow; ValueError when tracing
    fixed the batch, height or width to the sample's."""
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "images")
    batch, _, height, width = node.meta["val"].shape
    fixed = [name for name, size in (("batch", batch), ("height", height), ("width", width))
             if not isinstance(size, torch.SymInt)]
    if fixed:
        raise ValueError(f"{variant}: the traced graph fixes the {', '.join(fixed)} of the input; "
                         "export it with --size H W instead")
    return max(int(program.range_constraints[size.node.expr].lower) for size in (height, width))


def file_bytes(path: Path) -> int:
    """Size of the file plus any external data files next to it."""
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(f"{path.name}.data"))
