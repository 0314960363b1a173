"""One image through DINO, with everything kept that the explorer shows.

`run` resizes an RGB image with the official rule, runs the model with the decoder's attention
captured, post-processes, and returns an `InferenceResult` whose boxes are in the pixels of the
image given. The `*_view` functions turn the stored tensors into pixel-space numpy arrays for
drawing; they never run the model, so the UI can re-draw from a stored result.

`ModelCache` loads each model source once (shipped weights, a checkpoint path or URL, or an
untrained variant for exploring the structure).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import ops
from ..io.checkpoint import load_model
from ..model.config import DINOConfig, get_config
from ..model.detector import build_model
from ..io.labels import category_ids, class_names, label_name
from ..model.outputs import Detections, DINOOutput
from ..model.postprocess import postprocess
from ..io.preprocess import batch_images, resize_shape, to_tensor_normalized
from .speed import optimize_for_inference

# The detector needs at least this many pixels on each side of its input.
MIN_INPUT_SIDE = 32
UNTRAINED_PREFIX = "untrained:"


@dataclass(eq=False)
class InferenceResult:
    """One image's pass through DINO.

    image: [H, W, 3] uint8 RGB the boxes refer to ("original pixels").
    input_size: (h, w) the image was resized to for the model; padded_size: (h, w) of the padded
        batch the model ran on (equal for a single image).
    detections: the post-processed top `num_select` (query, class) pairs in original pixels,
        best first and not thresholded; `query_index` is the decoder slot of each.
    output: the DINOOutput of the batch of one, on the CPU, with sampling locations and
        attention weights.
    timings: seconds for "preprocess", "backbone", "encoder", "decoder", "postprocess", "total".
    backend: (op implementation, why it was chosen); device: where the model ran.
    class_names, category_ids: name and COCO category id of each class id.
    """

    image: np.ndarray
    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    detections: Detections
    output: DINOOutput
    timings: dict[str, float]
    backend: tuple[str, str]
    device: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    model_id: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def num_layers(self) -> int:
        return int(self.output.boxes.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.output.boxes.shape[2])

    @property
    def attention_shape(self) -> tuple[int, int, int]:
        """(heads M, levels L, points P) of the decoder's cross-attention."""
        m, l, p = self.output.attention_weights.shape[-3:]
        return int(m), int(l), int(p)

    def label(self, class_id: int) -> str:
        return label_name(self.class_names, class_id)


def model_input_size(cfg: DINOConfig, height: int, width: int, max_size: int | None = None) -> tuple[int, int]:
    """(h, w) the official resize gives for an image of `height` x `width`, with the longer side
    additionally capped at `max_size` when given (the shorter-side target shrinks with it).

    Raises ValueError when the result is too small for the detector (very thin images)."""
    cap = cfg.max_size if max_size is None else min(int(max_size), cfg.max_size)
    if cap < MIN_INPUT_SIDE:
        raise ValueError(f"the maximum input size must be at least {MIN_INPUT_SIDE} pixels, got {cap}")
    h, w = resize_shape(height, width, min(cfg.min_size, cap), cap)
    if min(h, w) < MIN_INPUT_SIDE:
        raise ValueError(
            f"a {width}x{height} image becomes {w}x{h} at the model input; its aspect ratio is too extreme "
            f"(each side must reach {MIN_INPUT_SIDE} pixels)")
    return h, w


def run(model: torch.nn.Module, cfg: DINOConfig, image: np.ndarray, *, max_size: int | None = None,
        model_id: str = "") -> InferenceResult:
    """Detect objects in `image` ([H, W, 3] uint8 RGB) with `model` built from `cfg`.

    max_size: optional cap on the longer side of the model input, below the config's own
        (official 800 / 1333 rule otherwise).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {image.dtype} shape {image.shape}")
    device = next(model.parameters()).device
    timings: dict[str, float] = {}
    start = time.perf_counter()

    height, width = image.shape[:2]
    input_h, input_w = model_input_size(cfg, height, width, max_size)
    pil = Image.fromarray(image)
    if (input_h, input_w) != (height, width):
        pil = pil.resize((input_w, input_h), Image.BILINEAR)
    images, masks = batch_images([to_tensor_normalized(pil)])
    images, masks = images.to(device), masks.to(device)
    timings["preprocess"] = time.perf_counter() - start

    with torch.inference_mode():
        output = model(images, masks, capture_attention=True, timings=timings)
        post_start = time.perf_counter()
        target = torch.tensor([[height, width]], device=device)
        detections = postprocess(output.pred_logits, output.pred_boxes, target, cfg.num_select)[0]
    timings["postprocess"] = time.perf_counter() - post_start
    timings["total"] = time.perf_counter() - start

    return InferenceResult(
        image=image, input_size=(input_h, input_w), padded_size=(int(images.shape[-2]), int(images.shape[-1])),
        detections=_to_cpu(detections), output=_to_cpu(output), timings=timings,
        backend=ops.backend(device), device=str(device), class_names=class_names(cfg),
        category_ids=category_ids(cfg), model_id=model_id)


def _to_cpu(obj):
    """A copy of a tensor dataclass (nested) with every tensor detached on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _to_cpu(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                           if f.init})
    return obj


# -- views for drawing ----------------------------------------------------------------------------

def _cxcywh_to_xyxy_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    cx, cy, w, h = boxes.double().unbind(-1)
    height, width = size
    xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return xyxy.numpy()


@dataclass(frozen=True)
class DetectionView:
    """Detections above a threshold, best first: boxes [N, 4] xyxy pixels, scores [N],
    labels [N] class ids, categories [N] COCO category ids, slots [N] decoder query slots,
    names [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    categories: np.ndarray
    slots: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)


def detection_view(result: InferenceResult, threshold: float, max_detections: int | None = None) -> DetectionView:
    kept = result.detections.above(threshold)
    n = len(kept) if max_detections is None else min(len(kept), max(int(max_detections), 0))
    labels = kept.labels[:n].numpy()
    return DetectionView(
        boxes=kept.boxes[:n].double().numpy(), scores=kept.scores[:n].double().numpy(), labels=labels,
        categories=np.array([result.category_ids[int(c)] for c in labels], dtype=np.int64),
        slots=kept.query_index[:n].numpy(), names=tuple(result.label(int(c)) for c in labels))


@dataclass(frozen=True)
class ProposalView:
    """The encoder's top proposals, best first: boxes [N, 4] xyxy pixels (the decoder's initial
    anchors), scores [N] sigmoid of the best class logit, levels [N] feature level, slots [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    levels: np.ndarray
    slots: np.ndarray


def proposal_view(result: InferenceResult, top_n: int) -> ProposalView:
    selection = result.output.selection
    scores = selection.logits[0].max(-1).values.sigmoid().double()
    order = torch.argsort(scores, descending=True, stable=True)[: max(int(top_n), 0)]
    return ProposalView(
        boxes=_cxcywh_to_xyxy_pixels(selection.boxes[0, order], result.size), scores=scores[order].numpy(),
        levels=selection.levels[0, order].numpy(), slots=order.numpy())


@dataclass(frozen=True)
class SamplingView:
    """One query's cross-attention in one decoder layer.

    reference_box: [4] xyxy pixels, the layer's input reference box.
    points: [M, L, P, 2] (x, y) sampling locations in original pixels; weights: [M, L, P].
    Only the selected heads / levels are kept (`heads`, `levels` list which, in order).
    mass: [M_all, L_all] attention mass of every head on every level (each row sums to 1).
    """

    reference_box: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    heads: tuple[int, ...]
    levels: tuple[int, ...]
    mass: np.ndarray


def sampling_view(result: InferenceResult, slot: int, layer: int, head: int | None = None,
                  level: int | None = None) -> SamplingView:
    """Sampling points of query `slot` in decoder `layer` (0-based), for one head / level or all.

    Locations are (x, y) in [0, 1] of the padded feature maps: times the padded input size gives
    model-input pixels, which scale to the original image by original / input size.
    """
    out = result.output
    m, l, _ = result.attention_shape
    _check_index("query slot", slot, result.num_queries)
    _check_index("layer", layer, result.num_layers)
    heads = tuple(range(m)) if head is None else (_check_index("head", head, m),)
    levels = tuple(range(l)) if level is None else (_check_index("level", level, l),)

    locations = out.sampling_locations[layer, 0, slot].double()        # [M, L, P, 2]
    weights = out.attention_weights[layer, 0, slot].double()            # [M, L, P]
    (pad_h, pad_w), (in_h, in_w), (h, w) = result.padded_size, result.input_size, result.size
    scale = torch.tensor([pad_w * w / in_w, pad_h * h / in_h], dtype=torch.float64)
    points = (locations * scale)[list(heads)][:, list(levels)]
    mass = weights.sum(-1)
    mass = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
    reference = _cxcywh_to_xyxy_pixels(out.references[layer, 0, slot], result.size)
    return SamplingView(reference_box=reference, points=points.numpy(),
                        weights=weights[list(heads)][:, list(levels)].numpy(), heads=heads, levels=levels,
                        mass=mass.numpy())


def refinement_view(result: InferenceResult, slot: int) -> np.ndarray:
    """[K + 1, 4] xyxy pixels: query `slot`'s proposal (the decoder's initial anchor), then its
    predicted box after each decoder layer (the last is the final box)."""
    _check_index("query slot", slot, result.num_queries)
    out = result.output
    stages = torch.cat([out.references[0, 0, slot][None], out.boxes[:, 0, slot]], 0)
    return _cxcywh_to_xyxy_pixels(stages, result.size)


def detection_at(view: DetectionView, x: float, y: float) -> int | None:
    """Index in `view` of the smallest box containing (x, y), else of the box whose centre is
    nearest; None when there are no detections."""
    if len(view) == 0:
        return None
    b = view.boxes
    inside = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
    if inside.any():
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return int(np.flatnonzero(inside)[np.argmin(area[inside])])
    centres = (b[:, :2] + b[:, 2:]) / 2
    return int(np.argmin(((centres - (x, y)) ** 2).sum(-1)))


def _check_index(name: str, value: int, size: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 <= value < size:
        raise ValueError(f"{name} must be an integer in 0..{size - 1}, got {value}")
    return int(value)


# -- exported formats -------------------------------------------------------------------------------

def coco_results(view: DetectionView, image_id: int | str = 0) -> list[dict]:
    """COCO results format: one {"image_id", "category_id", "bbox": [x, y, w, h], "score"} per
    detection."""
    return [
        {"image_id": image_id, "category_id": int(c), "score": round(float(s), 5),
         "bbox": [round(float(v), 2) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])]}
        for b, s, c in zip(view.boxes, view.scores, view.categories)
    ]


def detection_records(view: DetectionView) -> list[dict]:
    """Per detection: label name, category id, score, box_xyxy and the decoder query slot."""
    return [
        {"label": name, "category_id": int(c), "score": round(float(s), 5),
         "box_xyxy": [round(float(v), 2) for v in b], "query_slot": int(q)}
        for b, s, c, q, name in zip(view.boxes, view.scores, view.categories, view.slots, view.names)
    ]


# -- models ---------------------------------------------------------------------------------------

class ModelCache:
    """Loaded models by (source, variant), least recently used dropped beyond `capacity`.

    A source is a checkpoint path, an http(s) URL, or "untrained:<variant>" (random weights,
    seeded, for exploring a variant's structure). Thread-safe: concurrent requests for the same
    source load it once, and loading one source does not hold up requests for loaded ones.
    """

    def __init__(self, capacity: int = 2, device: str | torch.device = "cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, torch.device(device)
        self._models: OrderedDict[tuple[str, str | None], tuple[torch.nn.Module, DINOConfig]] = OrderedDict()
        self._loading: dict[tuple[str, str | None], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, source: str | Path, variant: str | None = None) -> tuple[torch.nn.Module, DINOConfig]:
        key = (str(source), variant or None)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:  # loaded by another request meanwhile
                    return self._models[key]
            try:
                entry = load(str(source), variant, self.device)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._models[key] = entry
                self._loading.pop(key, None)
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            return entry


def load(source: str, variant: str | None = None, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, DINOConfig]:
    """(model ready for inference, its config) for a source as `ModelCache` describes: in eval
    mode, with the inference fast paths of `speed.optimize_for_inference`."""
    if source.startswith(UNTRAINED_PREFIX):
        cfg = get_config(source[len(UNTRAINED_PREFIX):])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(cfg)
    else:
        model, cfg = load_model(source, variant=variant, device=device)
    return optimize_for_inference(model.to(device)), cfg
