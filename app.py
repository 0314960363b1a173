"""DINO Explorer: a Gradio app that runs DINO on an image and shows what happens inside it.

`python app.py` serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860 by default).
The page composes `dino_demo`: models come from `inference.ModelCache`, one `inference.run` per
Detect click is stored per session (gr.State), and every other control re-draws from that stored
result with `inference.*_view` and `visualize.render_*` without running the model again.

API endpoints (gradio_client): "/detect" (image and options -> annotated image, detections JSON)
and "/inspect" (query slot, layer, head, level -> sampling-point overlay, points JSON, attention
mass per head and level); "/inspect" reads the result "/detect" stored in the same session.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import logging
import os
import re
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from dino_demo import VARIANTS
from dino_demo.io.checkpoint import DEFAULT_CHECKPOINT as SHIPPED_CHECKPOINT
from dino_demo.io.images import ImageError, load_image
from dino_demo.explore.inference import InferenceResult, run
from dino_demo.explore.models import UNTRAINED_PREFIX, ModelCache
from dino_demo.explore.views import (
    detection_at, detection_view, proposal_view, refinement_view, sampling_view,
)
from dino_demo.io.preprocess import model_input_size
from dino_demo.io.results import coco_image_id, coco_results, detection_records, detections_document, image_record
from dino_demo.explore.visualize import render_detections, render_proposals, render_refinement, render_sampling

log = logging.getLogger("dino_explorer")

ROOT = Path(__file__).resolve().parent
WEIGHTS_DIR = ROOT / "weights"
EXAMPLES_DIR = ROOT / "examples"
# Uploads are downscaled to this longer side, with a warning (the model input is smaller anyway:
# at most 1333 px by the official resize); results are in the pixels of the image used.
MAX_IMAGE_SIDE = 4096
# Views are drawn with the image's longer side between these (see `_canvas`).
DISPLAY_MIN_SIDE = 640
DISPLAY_MAX_SIDE = 1600
MAX_INPUT_SIDE = 1333
MIN_INPUT_SIDE = 128
MAX_PROPOSALS = 900
SHIPPED = "shipped"
CUSTOM = "custom"
AUTO_VARIANT = "auto"
ALL = "all"

# Model runs at a time (each uses all CPU cores or the GPU); re-drawing runs alongside.
MODEL_CONCURRENCY = int(os.environ.get("DINO_MODEL_CONCURRENCY", "1"))
# DINO_DEVICE picks the device ("cuda" on a GPU Space is the default there).
DEVICE = os.environ.get("DINO_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
MODELS = ModelCache(capacity=2, device=DEVICE)
# Results for the example images, computed on first use and shared by all sessions (an official
# R50 result holds about 30 MB, mostly the encoder memory).
MAX_EXAMPLE_RESULTS = 8
_EXAMPLE_RESULTS: OrderedDict[tuple, InferenceResult] = OrderedDict()
_EXAMPLE_LOCK = threading.Lock()
# Drawing canvas (see `_canvas`) and uploaded file name of each live result, dropped with it.
_CANVASES: weakref.WeakKeyDictionary[InferenceResult, tuple[np.ndarray, float]] = weakref.WeakKeyDictionary()
_FILE_NAMES: weakref.WeakKeyDictionary[InferenceResult, str] = weakref.WeakKeyDictionary()
# Local checkpoint files the path box may open: DINO_CHECKPOINT_DIRS is "any" or a list of folders
# separated by os.pathsep. Unset, it is "any" on your own machine and weights/ alone on a Hugging Face
# Space (SPACE_ID set), so that visitors of a public page cannot make the server open its other files.
CHECKPOINT_DIRS_VARIABLE = "DINO_CHECKPOINT_DIRS"
# The app's own files (JSON downloads) live here and nowhere else; removed at exit.
_OUTPUT_DIR = tempfile.TemporaryDirectory(prefix="dino-explorer-")


# -- model choice ---------------------------------------------------------------------------------

def model_choices() -> list[tuple[str, str]]:
    """(label, value) of every model the page offers."""
    choices = []
    if SHIPPED_CHECKPOINT.is_file():
        choices.append(("dino-tiny, shipped (synthetic shapes)", SHIPPED))
    for path in sorted(WEIGHTS_DIR.glob("*.pth")):
        if path.resolve() != SHIPPED_CHECKPOINT.resolve():
            choices.append((f"weights/{path.name}", f"weights/{path.name}"))
    choices += [(f"{name}, untrained (structure only)", UNTRAINED_PREFIX + name) for name in VARIANTS]
    choices.append(("checkpoint path or URL (below)", CUSTOM))
    return choices


def checkpoint_dirs() -> list[Path] | None:
    """Folders whose files the checkpoint box may open, or None for any file (see CHECKPOINT_DIRS_VARIABLE)."""
    setting = os.environ.get(CHECKPOINT_DIRS_VARIABLE)
    if setting is None:
        setting = str(WEIGHTS_DIR) if os.environ.get("SPACE_ID") else "any"
    if setting.strip().lower() == "any":
        return None
    return [Path(part).expanduser().resolve() for part in setting.split(os.pathsep) if part.strip()]


def _local_checkpoint(source: str) -> str:
    """The file a typed path names, refused outside the allowed folders before anything is read."""
    path = Path(source).expanduser().resolve()
    allowed = checkpoint_dirs()
    if allowed is not None and not any(path.is_relative_to(folder) for folder in allowed):
        where = ", ".join(str(folder) for folder in allowed) or "nowhere (only URLs)"
        raise gr.Error(f"This app opens checkpoint files only from: {where}. "
                       f"Use a URL, or set {CHECKPOINT_DIRS_VARIABLE} where you run it.")
    if not path.is_file():
        raise gr.Error(f"No checkpoint file at {source!r}.")
    return str(path)


def _model_source(choice: str, checkpoint: str, variant: str) -> tuple[str, str | None, str]:
    """(source for ModelCache, variant or None, human-readable model id)."""
    variant = None if variant in (None, "", AUTO_VARIANT) else variant
    if variant is not None and variant not in VARIANTS:
        raise gr.Error(f"Unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    if choice == SHIPPED:
        return str(SHIPPED_CHECKPOINT), variant, "dino-tiny (shipped)"
    if choice.startswith(UNTRAINED_PREFIX):
        return choice, None, choice
    if choice == CUSTOM:
        source = (checkpoint or "").strip()
        if not source:
            raise gr.Error("Enter a checkpoint path or an http(s) URL, or choose another model.")
        if re.match(r"^https?://", source):
            return source, variant, source
        return _local_checkpoint(source), variant, source
    values = {value for _, value in model_choices()}
    if choice in values:
        return str(ROOT / choice), variant, choice
    raise gr.Error(f"Unknown model choice {choice!r}.")


def _model_fields(choice: str):
    """The path/URL box only for a custom checkpoint; the variant choice for any checkpoint file."""
    return gr.Textbox(visible=choice == CUSTOM), gr.Dropdown(visible=not choice.startswith(UNTRAINED_PREFIX))


def _load_model(source: str, variant: str | None):
    try:
        return MODELS.get(source, variant)
    except ValueError as err:  # CheckpointError and config errors carry a message for the user
        raise gr.Error(f"Cannot use this checkpoint: {err}") from None
    except (OSError, RuntimeError) as err:
        log.exception("loading %s failed", source)
        raise gr.Error(f"Loading the model failed: {err}") from None


# -- checks on values that may come from the API ----------------------------------------------------

def _number(value, name: str, lo: float, hi: float, *, integer: bool = False) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number, got {value!r}.") from None
    if not np.isfinite(number) or not lo <= number <= hi:
        raise gr.Error(f"{name} must be between {lo:g} and {hi:g}, got {value!r}.")
    if integer:
        if number != int(number):
            raise gr.Error(f"{name} must be a whole number, got {value!r}.")
        return int(number)
    return number


def _choice_index(value, name: str, count: int) -> int | None:
    """'all' -> None; '1'..str(count) -> 0-based index."""
    if value is None or str(value).strip().lower() == ALL:
        return None
    return _number(value, name, 1, count, integer=True) - 1


def _stored(result: InferenceResult | None) -> InferenceResult:
    if result is None:
        raise gr.Error("No detection result in this session yet: run Detect (or /detect) first.")
    return result


def _uploaded_file(image) -> tuple[str | None, str]:
    """(path, original file name) of an image input: a FileData dict (raw payload) or a path."""
    if image is None:
        return None, ""
    if isinstance(image, dict):
        path = image.get("path")
        return path, Path(image.get("orig_name") or path or "").name
    return str(image), Path(str(image)).name


# -- detect -----------------------------------------------------------------------------------------

def detect(image, model_choice, checkpoint, variant, max_input, threshold, max_detections,
           progress=gr.Progress()):
    """Run DINO on the uploaded image. Returns the annotated image, the detections as JSON
    (each with its decoder query slot) and the stored result for the other views."""
    threshold = _number(threshold, "Score threshold", 0.0, 1.0)
    max_detections = _number(max_detections, "Max detections", 1, 300, integer=True)
    max_input = _number(max_input, "Max input side", MIN_INPUT_SIDE, MAX_INPUT_SIDE, integer=True)
    path, file_name = _uploaded_file(image)
    if not path:
        raise gr.Error("Upload an image or pick an example first.")
    source, variant, model_id = _model_source(model_choice, checkpoint, variant)

    progress(0.05, desc="Reading the image")
    try:
        loaded = load_image(path, max_side=MAX_IMAGE_SIDE)
    except ImageError as err:
        raise gr.Error(f"Cannot use this image: {err}.") from None
    for note in loaded.notes:
        gr.Warning(f"Image {note}.")

    progress(0.15, desc=f"Loading {model_id}")
    model, cfg = _load_model(source, variant)
    h, w = loaded.array.shape[:2]
    try:
        input_size = model_input_size(cfg, h, w, max_input)
    except ValueError as err:
        raise gr.Error(str(err)) from None

    progress(0.3, desc=f"Running DINO on {input_size[1]}x{input_size[0]} pixels")
    example_key = _example_key(path, source, variant, input_size)
    with _EXAMPLE_LOCK:
        result = _EXAMPLE_RESULTS.get(example_key) if example_key else None
        if result is not None:
            _EXAMPLE_RESULTS.move_to_end(example_key)
    if result is None:
        try:
            result = run(model, cfg, loaded.array, max_size=max_input, model_id=model_id)
        except (RuntimeError, ValueError) as err:
            log.exception("inference failed")
            raise gr.Error(f"Detection failed: {err}") from None
        if example_key:
            with _EXAMPLE_LOCK:
                _EXAMPLE_RESULTS[example_key] = result
                while len(_EXAMPLE_RESULTS) > MAX_EXAMPLE_RESULTS:
                    _EXAMPLE_RESULTS.popitem(last=False)

    progress(0.95, desc="Drawing")
    _FILE_NAMES[result] = file_name
    view = detection_view(result, threshold, max_detections)
    return _draw_detections(result, view, None), _detections_json(result, view), result


def _example_key(path: str, source: str, variant: str | None, input_size: tuple[int, int]) -> tuple | None:
    """Cache key when `path` holds one of the example images (Gradio hands over a copy), else None."""
    try:
        if Path(path).stat().st_size not in _example_digests():
            return None
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
    if digest not in _example_digests().values():
        return None
    return digest, source, variant, input_size


@functools.cache
def _example_digests() -> dict[int, str]:
    """File size -> SHA-256 of each example image."""
    return {p.stat().st_size: hashlib.sha256(p.read_bytes()).hexdigest() for p in _example_files()}


def _canvas(result: InferenceResult) -> tuple[np.ndarray, float]:
    """The image the views are drawn on and its scale (drawn pixels per image pixel): small
    images are enlarged by a whole factor (pixels repeated) so that overlays stay legible, since
    Gradio never enlarges an image on the page; large ones are reduced to DISPLAY_MAX_SIDE so
    that re-drawing stays fast. Boxes and points are always reported in image pixels."""
    cached = _CANVASES.get(result)
    if cached is not None:
        return cached
    h, w = result.size
    if max(h, w) > DISPLAY_MAX_SIDE:
        scale = DISPLAY_MAX_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        canvas = np.asarray(Image.fromarray(result.image).resize(size, Image.Resampling.BILINEAR))
        scale = size[0] / w
    else:
        k = min(max(1, math.ceil(DISPLAY_MIN_SIDE / max(h, w))), 4)
        canvas, scale = result.image.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else result.image, float(k)
    _CANVASES[result] = canvas, scale
    return canvas, scale


def _captions(view) -> list[str]:
    return [f"{name} {score:.2f}" for name, score in zip(view.names, view.scores)]


def _draw_detections(result: InferenceResult, view, selected_slot: int | None) -> np.ndarray:
    selected = None
    if selected_slot is not None:
        hits = np.flatnonzero(view.query_slots == selected_slot)
        selected = int(hits[0]) if hits.size else None
    canvas, k = _canvas(result)
    return render_detections(canvas, view.boxes * k, _captions(view), view.labels, selected=selected)


def _detections_json(result: InferenceResult, view) -> dict:
    file_name = _FILE_NAMES.get(result, "")
    entry = image_record(result, view, image_id=coco_image_id(file_name, 0), file_name=file_name)
    return detections_document([entry], model_id=result.model_id, variant="", threshold=0, max_detections=None,
                               max_input_side=None)


# -- re-drawing from the stored result -----------------------------------------------------------

def _query_choices(result: InferenceResult, view) -> list[tuple[str, int]]:
    choices = [(f"{name} {score:.2f} (slot {slot})", int(slot))
               for name, score, slot in zip(view.names, view.scores, view.query_slots)]
    if not choices:  # nothing above the threshold: offer the best below it
        below = detection_view(result, 0.0, 10)
        choices = [(f"{name} {score:.2f} (slot {slot}, below threshold)", int(slot))
                   for name, score, slot in zip(below.names, below.scores, below.query_slots)]
    return choices


def after_detect(result, threshold, max_detections, top_n, proposal_color, request: gr.Request):
    """Every view except the sampling points after a new result: table, download, query choices
    and controls sized to the model, proposals and the runtime panel."""
    result = _stored(result)
    threshold = _number(threshold, "Score threshold", 0.0, 1.0)
    max_detections = _number(max_detections, "Max detections", 1, 300, integer=True)
    view = detection_view(result, threshold, max_detections)
    choices = _query_choices(result, view)
    slot = choices[0][1] if choices else 0
    m, l, _ = result.attention_shape
    k = result.num_layers
    return (
        _table(view),
        _download(result, view, request),
        gr.Dropdown(choices=choices, value=slot if choices else None),
        gr.Number(value=slot, maximum=result.num_queries - 1),
        gr.Slider(minimum=1, maximum=k, value=k, step=1),
        gr.Radio(choices=[ALL] + [str(i) for i in range(1, m + 1)], value=ALL),
        gr.Radio(choices=[ALL] + [str(i) for i in range(1, l + 1)], value=ALL),
        gr.Slider(maximum=min(MAX_PROPOSALS, result.num_queries)),
        draw_proposals(result, top_n, proposal_color, threshold, max_detections),
        _runtime_markdown(result),
    )


def redraw_detections(result, threshold, max_detections, slot, request: gr.Request):
    """Threshold or max detections changed: detections image, JSON, table, download, choices."""
    if result is None:  # nothing detected yet: nothing to re-draw
        return (gr.skip(),) * 5
    threshold = _number(threshold, "Score threshold", 0.0, 1.0)
    max_detections = _number(max_detections, "Max detections", 1, 300, integer=True)
    view = detection_view(result, threshold, max_detections)
    choices = _query_choices(result, view)
    slot = None if slot is None else int(slot)
    return (
        _draw_detections(result, view, slot),
        _detections_json(result, view),
        _table(view),
        _download(result, view, request),
        gr.Dropdown(choices=choices, value=slot if slot in [c[1] for c in choices] else None),
    )


def _table(view) -> list[list]:
    return [[i + 1, name, round(float(s), 3), int(q), *[round(float(v), 1) for v in b]]
            for i, (name, s, q, b) in enumerate(zip(view.names, view.scores, view.query_slots, view.boxes))]


def _download(result: InferenceResult, view, request: gr.Request | None) -> str:
    """COCO results (image_id, category_id, bbox xywh, score) with image size and model id, written
    under the app's own temporary folder, one file per session."""
    payload = _detections_json(result, view)
    session = re.sub(r"[^A-Za-z0-9_-]", "", getattr(request, "session_hash", None) or "") or "anonymous"
    folder = Path(_OUTPUT_DIR.name) / session
    folder.mkdir(exist_ok=True)
    path = folder / "detections.json"
    path.write_text(json.dumps(payload, indent=1))
    return str(path)


def draw_proposals(result, top_n, color_by, threshold, max_detections) -> np.ndarray:
    if result is None:
        return gr.skip()
    top_n = _number(top_n, "Proposals shown", 1, MAX_PROPOSALS, integer=True)
    if color_by not in ("score", "level"):
        raise gr.Error(f"Colour proposals by 'score' or 'level', got {color_by!r}.")
    threshold = _number(threshold, "Score threshold", 0.0, 1.0)
    max_detections = _number(max_detections, "Max detections", 1, 300, integer=True)
    proposals = proposal_view(result, top_n)
    final_slots = detection_view(result, threshold, max_detections).slots
    final = np.isin(proposals.query_slots, final_slots)
    canvas, k = _canvas(result)
    return render_proposals(canvas, proposals.boxes * k, proposals.scores, proposals.levels, final,
                            color_by=color_by)


def pick_query(result, threshold, max_detections, evt: gr.SelectData):
    """Click on the detections image: the smallest detection containing the click, else the
    nearest one."""
    result = _stored(result)
    view = detection_view(result, _number(threshold, "Score threshold", 0.0, 1.0),
                          _number(max_detections, "Max detections", 1, 300, integer=True))
    x, y = evt.index
    _, k = _canvas(result)
    hit = detection_at(view, x / k, y / k)
    if hit is None:
        gr.Info("No detections above the threshold to select.")
        return gr.Dropdown(), gr.Number()
    slot = int(view.query_slots[hit])
    return gr.Dropdown(value=slot), gr.Number(value=slot)


def inspect(slot, layer, head, level, color_by, result):
    """Sampling points of query `slot` in decoder `layer` (1-based) for one head / level (1-based)
    or "all": the overlay, the points as JSON and the attention mass per head and level."""
    result = _stored(result)
    m, l, p = result.attention_shape
    slot = _number(slot, "Query slot", 0, result.num_queries - 1, integer=True)
    layer = _number(layer, "Decoder layer", 1, result.num_layers, integer=True)
    head = _choice_index(head, "Head", m)
    level = _choice_index(level, "Level", l)
    if color_by not in ("level", "head"):
        raise gr.Error(f"Colour points by 'level' or 'head', got {color_by!r}.")
    view = sampling_view(result, slot, layer - 1, head, level)
    canvas, k = _canvas(result)
    overlay = render_sampling(canvas, view.reference_box * k, view.points * k, view.weights, view.heads,
                              view.levels, color_by=color_by)
    points = {
        "query_slot": slot, "layer": layer,
        "heads": [h + 1 for h in view.heads], "levels": [lv + 1 for lv in view.levels],
        "shape": list(view.weights.shape),
        "reference_box_xyxy": [round(float(v), 2) for v in view.reference_box],
        "points_xy": np.round(view.points, 2).tolist(),
        "weights": np.round(view.weights, 5).tolist(),
    }
    mass = [[f"head {i + 1}", *[round(float(v), 3) for v in row]] for i, row in enumerate(view.mass)]
    mass.append(["all heads", *[round(float(v), 3) for v in view.mass.mean(0)]])
    return overlay, points, pd.DataFrame(mass, columns=["head"] + [f"level {i + 1}" for i in range(l)])


def refine(slot, result):
    """The query's box after each decoder layer, from its proposal."""
    result = _stored(result)
    slot = _number(slot, "Query slot", 0, result.num_queries - 1, integer=True)
    boxes = refinement_view(result, slot)
    rows = [["proposal" if t == 0 else f"layer {t}", *[round(float(v), 1) for v in b]] for t, b in enumerate(boxes)]
    canvas, k = _canvas(result)
    return render_refinement(canvas, boxes * k), rows


def select_query(result, slot, threshold, max_detections):
    result = _stored(result)
    view = detection_view(result, _number(threshold, "Score threshold", 0.0, 1.0),
                          _number(max_detections, "Max detections", 1, 300, integer=True))
    return _draw_detections(result, view, None if slot is None else int(slot))


def _runtime_markdown(result: InferenceResult) -> str:
    t = result.timings
    backend, reason = result.backend
    h, w = result.size
    in_h, in_w = result.input_size
    rows = "\n".join(f"| {stage} | {t.get(stage, 0.0) * 1000:.1f} ms |"
                     for stage in ("preprocess", "backbone", "encoder", "decoder", "postprocess", "total"))
    m, l, p = result.attention_shape
    return (
        f"**Model** {result.model_id} · **device** `{result.device}` · **deformable-attention op** "
        f"`{backend}` ({reason})\n\n"
        f"**Image** {w}x{h} px → **model input** {in_w}x{in_h} px (padded {result.padded_size[1]}x"
        f"{result.padded_size[0]}) · {result.num_queries} queries, {result.num_layers} decoder layers, "
        f"{m} heads × {l} levels × {p} points\n\n| stage | time |\n|---|---|\n{rows}"
    )


# -- page -------------------------------------------------------------------------------------------

def _example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _default_model() -> str:
    return SHIPPED if SHIPPED_CHECKPOINT.is_file() else UNTRAINED_PREFIX + "dino-tiny"


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="DINO Explorer", fill_width=True, delete_cache=(1800, 3600),
                   analytics_enabled=False) as demo:
        result = gr.State(None, time_to_live=3600)
        gr.Markdown("## DINO Explorer — the DINO detector, and a look inside it\n"
                    "Upload an image or pick an example and press **Detect**; then click a box (or pick a query) "
                    "to see its sampling points and refinement. Every tab re-draws from the stored result.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                image_in = gr.Image(label="Image", type="filepath", image_mode=None,
                                    sources=["upload", "clipboard"], height=220, elem_id="image-in")
                detect_button = gr.Button("Detect", variant="primary", elem_id="detect-button")
                threshold = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Score threshold", elem_id="threshold")
                max_detections = gr.Slider(1, 300, value=100, step=1, label="Max detections", elem_id="max-detections")
                with gr.Accordion("Model", open=True):
                    model_choice = gr.Dropdown(model_choices(), value=_default_model(), label="Model",
                                               elem_id="model-choice")
                    checkpoint = gr.Textbox(label="Checkpoint path or URL", placeholder="https://…/checkpoint.pth",
                                            visible=False)
                    variant = gr.Dropdown([AUTO_VARIANT, *VARIANTS], value=AUTO_VARIANT,
                                          label="Variant of the checkpoint",
                                          visible=not _default_model().startswith(UNTRAINED_PREFIX))
                    max_input = gr.Slider(MIN_INPUT_SIDE, MAX_INPUT_SIDE, value=MAX_INPUT_SIDE, step=1,
                                          label="Max input side (px; the model's own 800/1333 rule below it)")
                examples_slot = gr.Column()
            with gr.Column(scale=3):
                with gr.Row():
                    query = gr.Dropdown([], label="Query to inspect (or click a box)", scale=3, elem_id="query")
                    slot = gr.Number(value=0, label="Query slot", precision=0, minimum=0, scale=1, elem_id="slot")
                with gr.Tabs():
                    with gr.Tab("Detections", id="detections"):
                        det_image = gr.Image(label="Detections (click a box to inspect its query)",
                                             interactive=False, format="jpeg", height=480, elem_id="det-image")
                        with gr.Row():
                            download = gr.DownloadButton("Download JSON (COCO results)", size="sm")
                        table = gr.Dataframe(headers=["#", "label", "score", "slot", "x0", "y0", "x1", "y1"],
                                             interactive=False, max_height=260)
                        with gr.Accordion("Detections JSON", open=False):
                            det_json = gr.JSON(label="Detections")
                    with gr.Tab("Proposals", id="proposals"):
                        with gr.Row():
                            top_n = gr.Slider(1, MAX_PROPOSALS, value=100, step=1, label="Top proposals (by encoder score)")
                            proposal_color = gr.Radio(["score", "level"], value="score", label="Colour by")
                        proposal_image = gr.Image(label="Encoder top-k proposals (thick: became a detection)",
                                                  interactive=False, format="jpeg", height=480, elem_id="proposal-image")
                    with gr.Tab("Sampling points", id="sampling"):
                        with gr.Row():
                            layer = gr.Slider(1, 6, value=6, step=1, label="Decoder layer", elem_id="layer")
                            sampling_color = gr.Radio(["level", "head"], value="level", label="Colour by",
                                                      elem_id="sampling-color")
                        with gr.Row():
                            head = gr.Radio([ALL] + [str(i) for i in range(1, 9)], value=ALL, label="Head",
                                            elem_id="head")
                            level = gr.Radio([ALL] + [str(i) for i in range(1, 5)], value=ALL, label="Level",
                                             elem_id="level")
                        sampling_image = gr.Image(label="Reference box (white) and sampling points (size ∝ weight)",
                                                  interactive=False, format="jpeg", height=480, elem_id="sampling-image")
                        mass = gr.Dataframe(label="Attention mass per head and level", interactive=False)
                        with gr.Accordion("Sampling points JSON", open=False):
                            points_json = gr.JSON(label="Sampling points")
                    with gr.Tab("Refinement", id="refinement"):
                        refine_image = gr.Image(label="Box after each decoder layer", interactive=False,
                                                format="jpeg", height=480, elem_id="refine-image")
                        refine_table = gr.Dataframe(headers=["stage", "x0", "y0", "x1", "y1"], interactive=False)
                    with gr.Tab("Runtime", id="runtime"):
                        runtime = gr.Markdown("Run a detection to see the runtime.", elem_id="runtime")

        detect_inputs = [image_in, model_choice, checkpoint, variant, max_input, threshold, max_detections]
        sampling_inputs = [slot, layer, head, level, sampling_color, result]
        sampling_outputs = [sampling_image, points_json, mass]

        def show_query_views(event):
            return (event
                    .then(inspect, sampling_inputs, sampling_outputs, api_name="inspect_selected",
                          api_visibility="private", show_progress="hidden")
                    .then(refine, [slot, result], [refine_image, refine_table], api_visibility="private",
                          show_progress="hidden")
                    .then(select_query, [result, slot, threshold, max_detections], det_image,
                          api_visibility="private", show_progress="hidden"))

        def then_views(event):
            """After a detection: table, download, query controls, proposals, runtime."""
            return event.success(
                after_detect, [result, threshold, max_detections, top_n, proposal_color],
                [table, download, query, slot, layer, head, level, top_n, proposal_image, runtime],
                api_visibility="private", show_progress="hidden")

        detected = then_views(detect_button.click(
            detect, detect_inputs, [det_image, det_json, result], api_name="detect",
            preprocess=False,  # the image file is decoded by dino_demo.images, with its own limits
            concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY))
        show_query_views(detected)

        with examples_slot:
            examples = gr.Examples([[str(p)] for p in _example_files()], inputs=[image_in], label="Examples (photos and synthetic scenes)",
                                   examples_per_page=12, cache_examples=False)
        example_run = then_views(examples.load_input_event.then(
            detect, detect_inputs, [det_image, det_json, result], api_visibility="private", preprocess=False,
            concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY))
        show_query_views(example_run)

        gr.on([threshold.release, max_detections.release], redraw_detections,
              [result, threshold, max_detections, slot], [det_image, det_json, table, download, query],
              api_visibility="private", show_progress="hidden",
              ).then(draw_proposals, [result, top_n, proposal_color, threshold, max_detections], proposal_image,
                     api_visibility="private", show_progress="hidden")
        gr.on([top_n.release, proposal_color.input], draw_proposals,
              [result, top_n, proposal_color, threshold, max_detections], proposal_image,
              api_visibility="private", show_progress="hidden")

        gr.on([layer.release, head.input, level.input, sampling_color.input], inspect, sampling_inputs,
              sampling_outputs, api_name="inspect", show_progress="hidden")
        show_query_views(query.input(lambda s: s, query, slot, api_visibility="private", show_progress="hidden"))
        show_query_views(slot.submit(lambda s: s, slot, slot, api_visibility="private", show_progress="hidden"))
        show_query_views(det_image.select(pick_query, [result, threshold, max_detections], [query, slot],
                                          api_visibility="private", show_progress="hidden"))

        model_choice.change(_model_fields, model_choice, [checkpoint, variant], api_visibility="private", queue=False)
        # Checkpoints copied into weights/ while the app runs appear on the next page load.
        demo.load(lambda choice: gr.Dropdown(choices=model_choices(), value=choice), model_choice, model_choice,
                  api_visibility="private", queue=False)
    return demo


def launch(server_name: str | None = None, server_port: int | None = None, **kwargs) -> gr.Blocks:
    """Build, queue and launch the app; host and port default to GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT (127.0.0.1:7860)."""
    demo = build_demo()
    # Model runs are limited separately (MODEL_CONCURRENCY); re-drawing may run alongside them.
    demo.queue(default_concurrency_limit=4, max_size=64)
    kwargs.setdefault("max_file_size", "50mb")
    demo.launch(
        server_name=server_name or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=server_port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **kwargs,
    )
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    launch()
