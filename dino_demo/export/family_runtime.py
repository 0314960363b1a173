"""Running an exported `transformers` detector (`export.families`) in ONNX Runtime or OpenVINO.

`FamilyOnnxDetector(path, runtime=...)` rebuilds the model's own processor from the files the
metadata carries (transformers' image processor and, for Grounding DINO, its tokenizer: the
preprocessing reference, so this path imports transformers), fits each image into the file's
canvas as the processor resizes it (a dynamic file takes it at the processor's size, unpadded),
runs the graph and post-processes as `families.inference` does: the top `num_select` (query, class) pairs by sigmoid score for fixed-class models; for
Grounding DINO every query, scored by its best prompt token and labelled by the phrase of the
tokens above the text threshold (transformers' `post_process_grounded_object_detection`).
`open_detector(path, ...)` opens either kind of file (DINO's or a family's).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..families import grounding_dino
from .engines import Session, open_session
from .family_metadata import FAMILY_FORMAT, FamilyExportInfo, write_processor_files
from .metadata import FORMAT_KEY
from .runtime import OnnxDetector, OnnxResult


class FamilyOnnxDetector:
    """An exported family model in a runtime session on the CPU.

    runtime: "onnxruntime" or "openvino"; precision: "float32", or "bfloat16" (OpenVINO only);
    threads: the runtime's intra-op threads; model_id: what results call the model.
    """

    def __init__(self, path: str | os.PathLike, *, runtime: str = "onnxruntime", precision: str = "float32",
                 threads: int | None = None, model_id: str | None = None, session: Session | None = None):
        import transformers

        path = Path(path)
        self.session = session or open_session(path, runtime, precision, threads)
        self.info = FamilyExportInfo.from_properties(self.session.properties, path.name)
        expected = (self.info.inputs, tuple(spec.name for spec in self.info.outputs))
        if (self.session.inputs, self.session.outputs) != expected:
            raise ValueError(f"{path.name}: inputs {self.session.inputs} and outputs {self.session.outputs} are not "
                             f"those its metadata describes {expected}")
        with tempfile.TemporaryDirectory() as folder:
            write_processor_files(self.info.files, Path(folder))
            loader = transformers.AutoProcessor if self.info.text else transformers.AutoImageProcessor
            self.processor = loader.from_pretrained(folder, trust_remote_code=False)
        self.path = path
        self.model_id = path.name if model_id is None else model_id

    @property
    def variant(self) -> str:
        return self.info.model_type

    def run(self, image: np.ndarray, *, prompt: str | None = None, max_size: int | None = None) -> OnnxResult:
        """Detect objects in one image ([H, W, 3] uint8 RGB); `prompt` for Grounding DINO
        ("cat . remote control ."), refused for fixed-class models."""
        info = self.info
        if prompt and not info.text:
            raise ValueError(f"{info.family} has fixed classes and takes no prompt")
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {getattr(image, 'shape', type(image))}")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        feeds, input_size, ids = self._inputs(image, prompt, max_size)
        timings["preprocess"] = time.perf_counter() - start
        model_start = time.perf_counter()
        outputs = dict(zip(self.session.outputs, self.session.run(feeds)))
        timings["model"] = time.perf_counter() - model_start
        post_start = time.perf_counter()
        size = image.shape[:2]
        if info.text:
            scores, labels, boxes, slots, names = self._grounded(outputs["logits"][0], outputs["pred_boxes"][0], ids,
                                                                 size)
        else:
            scores, labels, boxes, slots = top_detections(outputs["logits"][0], outputs["pred_boxes"][0], size,
                                                          info.num_select)
            names = info.class_names
        timings["postprocess"] = time.perf_counter() - post_start
        timings["total"] = time.perf_counter() - start
        internals = None
        if info.internals:
            internals = {spec.name: outputs[spec.name] for spec in info.outputs[2:]}
            if ids is not None:
                internals["input_ids"] = ids[None]
        padded_size = input_size if info.dynamic else tuple(info.canvas)
        return OnnxResult(image=image, input_size=input_size, padded_size=padded_size, scores=scores,
                          labels=labels, boxes=boxes, query_slot=slots, internals=internals, timings=timings,
                          class_names=tuple(names), category_ids=tuple(range(len(names))), model_id=self.model_id)

    def _inputs(self, image: np.ndarray, prompt: str | None, max_size: int | None
                ) -> tuple[dict[str, np.ndarray], tuple[int, int], np.ndarray | None]:
        """(feeds, (h, w) the image was resized to, the prompt's token ids [T] or None)."""
        info = self.info
        picture = Image.fromarray(np.ascontiguousarray(image))
        kwargs = {}
        if info.dynamic and max_size:  # the processor's own size (unpadded), capped
            size = dict(getattr(self.processor, "image_processor", self.processor).size)
            kwargs = {"size": {key: min(int(size[key]), int(max_size)) for key in ("shortest_edge", "longest_edge")}}
        elif info.pads and not info.dynamic:
            kwargs = {"size": self._fit(*image.shape[:2], max_size)}
        ids = None
        if info.text:
            text = grounding_dino.normalize_prompt(prompt, info.max_text_len - 1, self.processor.tokenizer)
            made = self.processor(images=picture, text=text, return_tensors="np", **kwargs)
            ids = np.asarray(made["input_ids"][0], dtype=np.int64)
        else:
            made = self.processor(images=picture, return_tensors="np", **kwargs)
        pixels = np.asarray(made["pixel_values"], dtype=np.float32)
        height, width = pixels.shape[-2:]
        feeds = {"pixel_values": pixels}
        if info.dynamic:
            if min(height, width) < info.min_side:
                raise ValueError(f"{self.path.name} holds for image sides of at least {info.min_side} pixels after "
                                 f"resizing, got {height}x{width}")
            feeds["pixel_mask"] = np.ones((1, height, width), dtype=np.int64)
        elif info.pads:
            canvas_h, canvas_w = info.canvas
            padded = np.zeros((1, 3, canvas_h, canvas_w), dtype=np.float32)
            padded[..., :height, :width] = pixels
            mask = np.zeros((1, canvas_h, canvas_w), dtype=np.int64)
            mask[:, :height, :width] = 1
            feeds = {"pixel_values": padded, "pixel_mask": mask}
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name in info.inputs:
                feeds[name] = np.asarray(made[name], dtype=np.int64)
        return feeds, (int(height), int(width)), ids

    def _fit(self, height: int, width: int, max_size: int | None) -> dict[str, int]:
        """The processor's resize limits that keep an image of this size inside the canvas: its
        shorter side at most the canvas along that axis, its longer side likewise."""
        processor = getattr(self.processor, "image_processor", self.processor)
        size = dict(processor.size)
        canvas_h, canvas_w = self.info.canvas
        short_axis, long_axis = (canvas_h, canvas_w) if height <= width else (canvas_w, canvas_h)
        longest = min(int(size["longest_edge"]), long_axis, int(max_size) if max_size else long_axis)
        return {"shortest_edge": min(int(size["shortest_edge"]), short_axis, longest), "longest_edge": longest}

    def _grounded(self, logits: np.ndarray, boxes: np.ndarray, ids: np.ndarray, size: tuple[int, int]):
        """Every query's detection, best first: score = its best token's probability, label = the
        phrase of its tokens above `grounding_dino.TEXT_THRESHOLD` (as transformers' processor
        decodes it); names: the prompt's phrases, then any other label made."""
        tokenizer = self.processor.tokenizer
        probabilities = _sigmoid(logits)                                   # [Q, max_text_len]
        scores = probabilities.max(-1)
        posmap = probabilities > grounding_dino.TEXT_THRESHOLD
        posmap[:, 0] = False
        posmap[:, posmap.shape[-1] - 1:] = False
        spans = grounding_dino.phrase_spans(ids, tokenizer)
        names = [tokenizer.decode([int(ids[i]) for i in span]) for span in spans]
        texts = self.processor.batch_decode([[int(ids[i]) for i in np.flatnonzero(row[:len(ids)])] for row in posmap])
        labels = []
        for text in texts:
            if text not in names:
                names.append(text)
            labels.append(names.index(text))
        slots = np.flatnonzero(scores > 0.0)
        order = slots[np.argsort(-scores[slots], kind="stable")]
        return (scores[order].astype(np.float32), np.asarray(labels, dtype=np.int64)[order],
                _pixel_corners(boxes[order], size), order.astype(np.int64), tuple(names))


def top_detections(logits: np.ndarray, boxes: np.ndarray, size: tuple[int, int], top_k: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores [N], labels [N], boxes [N, 4] xyxy pixels of `size` (H, W), query slots [N]): the top
    `top_k` (query, class) pairs of logits [Q, C] by sigmoid score, best first, boxes [Q, 4]
    normalized cxcywh: the post-processing of transformers' DETR-family image processors."""
    probabilities = _sigmoid(logits).reshape(-1)
    classes = logits.shape[-1]
    keep = np.argsort(-probabilities, kind="stable")[:min(int(top_k), probabilities.size)]
    slots, labels = keep // classes, keep % classes
    return (probabilities[keep].astype(np.float32), labels.astype(np.int64), _pixel_corners(boxes[slots], size),
            slots.astype(np.int64))


def _pixel_corners(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, 4] normalized cxcywh -> xyxy in the pixels of `size` (H, W), float32."""
    cx, cy, w, h = np.moveaxis(boxes.astype(np.float32), -1, 0)
    corners = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    height, width = size
    return corners * np.array([width, height, width, height], dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float32)))


def open_detector(path: str | os.PathLike, *, runtime: str = "onnxruntime", precision: str = "float32",
                  threads: int | None = None, model_id: str | None = None) -> OnnxDetector | FamilyOnnxDetector:
    """A DINO or a family file, whichever `path` holds, in `runtime` (ValueError for other files)."""
    path = Path(path)
    session = open_session(path, runtime, precision, threads)
    if session.properties.get(FORMAT_KEY) == FAMILY_FORMAT:
        return FamilyOnnxDetector(path, session=session, model_id=model_id)
    return OnnxDetector(path, session=session, model_id=model_id)
