"""Running an exported DINO with ONNX Runtime or OpenVINO alone: nothing on this path imports torch.

`OnnxDetector(path, runtime=...)` opens a file written by `export.onnx` (any other file raises
ValueError) in a runtime of `export.engines` and
`run_batch` takes HxWx3 uint8 RGB images through the same preprocessing as the PyTorch path
(`io.model_input`), the graph (which ends with the official top-k post-processing) and the scaling
of the boxes to each image's pixels, returning one `OnnxResult` per image.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runtime.detections import DetectionView, select_detections
from ..io.labels import category_ids, class_names, label_name
from ..io.model_input import prepare_arrays
from .engines import Session, open_session
from .metadata import INPUT_NAMES, INTERNAL_OUTPUTS, ExportInfo


@dataclass(eq=False)
class OnnxResult:
    """One image's pass through an exported DINO.

    image: [H, W, 3] uint8 RGB the boxes refer to; input_size: (h, w) it was resized to;
    padded_size: (h, w) of the padded input the graph ran on.
    scores [N], labels [N], boxes [N, 4] xyxy in the image's pixels, query_slot [N]: the top
        `num_select` detections, best first, not thresholded.
    internals: this image's slice of each internal output (`metadata.INTERNAL_OUTPUTS`, with the
        batch axis kept, of length 1), or None when the file has none.
    timings: seconds for "preprocess", "model", "postprocess", "total" (of the run the image was in).
    """

    image: np.ndarray
    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    scores: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    query_slot: np.ndarray
    internals: dict[str, np.ndarray] | None
    timings: dict[str, float]
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    model_id: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def label(self, class_id: int) -> str:
        return label_name(self.class_names, class_id)


class OnnxDetector:
    """An exported DINO in a runtime session on the CPU (`export.engines`).

    runtime: "onnxruntime" or "openvino"; precision: "float32", or "bfloat16" (OpenVINO only).
    threads: intra-op threads of the session (default: the runtime's, one per core).
    model_id: what results call the model (default: the file name).
    session: the file already opened (`engines.open_session`).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, model_id: str | None = None,
                 runtime: str = "onnxruntime", precision: str = "float32", session: Session | None = None):
        path = Path(path)
        self.session = session or open_session(path, runtime, precision, threads)
        self.info = ExportInfo.from_properties(self.session.properties, path.name)
        inputs, outputs = self.session.inputs, self.session.outputs
        expected = tuple(spec.name for spec in self.info.outputs)
        if inputs != INPUT_NAMES or outputs != expected:
            raise ValueError(f"{path.name}: inputs {inputs} and outputs {outputs} are not those its metadata "
                             f"describes ({INPUT_NAMES}, {expected})")
        self.path = path
        self.model_id = path.name if model_id is None else model_id

    def input_size(self, height: int, width: int, max_size: int | None = None) -> tuple[int, int]:
        """(h, w) an image is resized to (ValueError when this graph cannot take it)."""
        return self.info.input_size(height, width, max_size)

    def run(self, image: np.ndarray, *, max_size: int | None = None) -> OnnxResult:
        """Detect objects in one image ([H, W, 3] uint8 RGB); see `run_batch`."""
        return self.run_batch([image], max_size=max_size)[0]

    def run_batch(self, images: list[np.ndarray], *, max_size: int | None = None) -> list[OnnxResult]:
        """Detect objects in `images` (each [H, W, 3] uint8 RGB), as `runtime.dino.run_batch`
        does with the PyTorch model: resized by the file's rule (`max_size` caps the longer side
        further) and padded to the largest image; a fixed-size file takes them one at a time, each
        fitted into its canvas."""
        if not images:
            raise ValueError("run_batch needs at least one image")
        for image in images:
            if not isinstance(image, np.ndarray) or image.ndim != 3:
                raise ValueError(f"expected HxWx3 uint8 RGB images, got {getattr(image, 'shape', type(image))}")
            self.input_size(*image.shape[:2], max_size)
        if self.info.canvas is not None:
            return [result for image in images for result in self._run([image], max_size)]
        return self._run(images, max_size)

    def _run(self, images: list[np.ndarray], max_size: int | None) -> list[OnnxResult]:
        info = self.info
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = prepare_arrays(images, info.config, max_size, info.canvas)
        timings["preprocess"] = time.perf_counter() - start

        model_start = time.perf_counter()
        arrays = self.session.run({"images": batch.images, "masks": batch.masks})
        timings["model"] = time.perf_counter() - model_start

        post_start = time.perf_counter()
        outputs = {spec.name: array for spec, array in zip(info.outputs, arrays)}
        # The pixel scaling of `model.postprocess.postprocess`, in the same float32 arithmetic.
        scales = [np.array([w, h, w, h], dtype=np.float32) for h, w in (image.shape[:2] for image in images)]
        boxes = [outputs["detection_boxes"][i] * scale for i, scale in enumerate(scales)]
        timings["postprocess"] = time.perf_counter() - post_start
        timings["total"] = time.perf_counter() - start
        names, categories = class_names(info.config), category_ids(info.config)
        return [
            OnnxResult(
                image=image, input_size=batch.input_sizes[i], padded_size=batch.padded_size,
                scores=outputs["scores"][i], labels=outputs["labels"][i], boxes=boxes[i],
                query_slot=outputs["query_slot"][i],
                internals={spec.name: _image_slice(outputs[spec.name], spec.batch_axis, i)
                           for spec in INTERNAL_OUTPUTS} if info.internals else None,
                timings=dict(timings), class_names=names, category_ids=categories, model_id=self.model_id)
            for i, image in enumerate(images)
        ]


def detection_view(result: OnnxResult, threshold: float, max_detections: int | None = None) -> DetectionView:
    """Detections of `result` scoring at least `threshold`, at most `max_detections`, best first."""
    return select_detections(result.scores, result.labels, result.boxes, result.query_slot, threshold=threshold,
                             max_detections=max_detections, class_names=result.class_names,
                             category_ids=result.category_ids)


def _image_slice(array: np.ndarray, batch_axis: int | None, index: int) -> np.ndarray:
    if batch_axis is None:
        return array
    return np.take(array, [index], axis=batch_axis)
