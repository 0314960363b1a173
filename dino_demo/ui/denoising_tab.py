"""The Denoising tab: DINO's contrastive denoising for the current image and boxes the visitor
gives (typed, drawn with two clicks, from a COCO / BOXES.json file, or the current detections taken
as ground truth).

`build(ui)` makes the components inside the page's tabs; `wire(ui, explorer)` connects them. The
handlers are plain functions of typed values (`DenoisingRequest`, `DenoisingDisplay`) returning
{view name: value}; the run itself lives in `explore.denoising`, the figures in
`explore.denoising_figures`.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from ..explore.denoising import DenoisingRun, denoising_rows, run_denoising
from ..explore.denoising_figures import render_attention_mask, render_denoising_group
from ..explore.visualize import display_canvas
from ..io.boxes import GroundTruth, MAX_DOCUMENT_BYTES, boxes_text, read_boxes_text
from ..io.denoising import write_denoising
from ..io.images import MAX_SIDE, load_image
from ..io.labels import category_ids, class_names
from . import choices, gpu, inputs

log = logging.getLogger("dino_explorer")

KINDS = ("positive", "negative")
MAX_SEED = 2 ** 31 - 1
TABLE_HEADERS = ["slot", "kind", "target", "given class", "flipped", "denoised to", "p", "focal", "L1", "1-GIoU"]
BOXES_HELP = ("One box per line, `x y w h category_id` in the image's pixels (COCO convention), or a BOXES.json "
              "text `{\"boxes\": [{\"bbox\": [x, y, w, h], \"category_id\": k}]}`.")


@dataclass(frozen=True)
class DenoisingRequest:
    """What a Run reads from the page, checked: the image file, its name, the model, the cap on the
    model input's side, the boxes text and the seed."""

    image_path: str
    file_name: str
    model: choices.ModelChoice
    max_input: int
    boxes: str
    seed: int

    @classmethod
    def parse(cls, image, model_choice, checkpoint, variant, max_input, boxes, seed) -> "DenoisingRequest":
        path, name = image_file(image)
        if not path:
            raise ValueError("Upload an image or pick an example first.")
        if not str(boxes or "").strip():
            raise ValueError("Give at least one box (or take the current detections as ground truth).")
        return cls(path, name, choices.resolve(model_choice, checkpoint, variant), inputs.max_input_side(max_input),
                   str(boxes), parse_seed(seed))


@dataclass(frozen=True)
class DenoisingDisplay:
    """How the stored run is drawn: `group` and `layer` 0-based, `kinds` shown."""

    group: int
    layer: int
    kinds: tuple[str, ...]

    @classmethod
    def parse(cls, run: DenoisingRun, group, layer, kinds) -> "DenoisingDisplay":
        shown = tuple(k for k in KINDS if k in (kinds or ()))
        if set(kinds or ()) - set(KINDS):
            raise ValueError(f"Show must be among {', '.join(KINDS)}.")
        return cls(_index("Group", group, run.num_groups), _index("Decoder layer", layer, run.num_layers), shown)


@dataclass(frozen=True)
class StoredRun:
    """The run a session re-draws from (its model input dropped) and the canvas it is drawn on."""

    run: DenoisingRun
    canvas: np.ndarray


def parse_seed(seed) -> int:
    if seed is None or seed == "":
        raise ValueError("Give a seed (a whole number).")
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise ValueError(f"The seed must be a whole number, got {seed!r:.40}.") from None
    if not value.is_integer() or not 0 <= value <= MAX_SEED:
        raise ValueError(f"The seed must be a whole number in 0..{MAX_SEED}, got {seed}.")
    return int(value)


# -- handlers --------------------------------------------------------------------------------------

def run(explorer, session, request: DenoisingRequest, display_kinds, gr_request=None) -> dict:
    """Run denoising for the request and draw group 1 after the last layer."""
    try:
        loaded = load_image(request.image_path, max_side=MAX_SIDE)
    except ValueError as err:
        raise ValueError(f"Cannot use this image: {err}.") from None
    model, cfg = load_model(explorer, request.model)
    truth = read_boxes_text(request.boxes, loaded.file_size, category_ids(cfg), request.file_name)
    try:
        result = _run_on_device(model, cfg, loaded.array, truth, request.seed, max_size=request.max_input,
                                class_names=class_names(cfg), model_id=request.model.model_id)
    except RuntimeError as err:
        log.exception("denoising failed")
        raise ValueError(f"Denoising failed: {err}") from None
    session = explorer.session(session, gr_request)
    path = write_denoising(result, session.downloads() / "denoising.npz", source=request.file_name)
    canvas, _ = display_canvas(loaded.array)
    stored = StoredRun(dataclasses.replace(result, input_image=np.zeros((3, 0, 0), np.float32)), canvas)
    display = DenoisingDisplay(0, result.num_layers - 1, tuple(k for k in KINDS if k in (display_kinds or KINDS)))
    return {"session": session, "dn_state": stored, "dn_download": str(path),
            "dn_group": gr.Slider(minimum=1, maximum=result.num_groups, value=1, step=1),
            "dn_layer": gr.Slider(minimum=1, maximum=result.num_layers, value=result.num_layers, step=1),
            "dn_info": summary(result), "dn_mask": render_attention_mask(result.attn_mask, result.pad_size,
                                                                         result.num_groups),
            **draw(stored, display)}


def redraw(stored: StoredRun | None, group, layer, kinds) -> dict:
    if stored is None:
        raise ValueError("Run denoising first.")
    return draw(stored, DenoisingDisplay.parse(stored.run, group, layer, kinds))


def draw(stored: StoredRun, display: DenoisingDisplay) -> dict:
    return {"dn_image": render_denoising_group(stored.canvas, stored.run, display.group, layer=display.layer,
                                               kinds=display.kinds),
            "dn_table": table(stored.run, display)}


def table(result: DenoisingRun, display: DenoisingDisplay) -> pd.DataFrame:
    rows = [r for r in denoising_rows(result, display.group, display.layer) if r.kind in display.kinds]
    return pd.DataFrame([[r.slot, r.kind, r.target + 1, r.input_label, "yes" if r.flipped else "", r.denoised_label,
                          round(r.score, 3), round(r.loss_class, 4), _rounded(r.loss_bbox), _rounded(r.loss_giou)]
                         for r in rows], columns=TABLE_HEADERS)


def summary(result: DenoisingRun) -> str:
    n = len(result.gt_labels)
    real = result.dn_target >= 0
    flipped = result.dn_labels[real] != result.gt_labels[result.dn_target[real]]
    positives = result.dn_positive & real
    return (f"**{n} boxes → {result.num_groups} groups × {2 * result.max_targets} slots = {result.pad_size} denoising "
            f"queries** beside {result.num_queries} matching queries (seed {result.seed}; the model's dn_number "
            f"{result.dn_number}, label noise {result.label_noise_ratio}, box noise {result.box_noise_scale}). "
            f"{int(flipped.sum())} of {int(real.sum())} labels flipped; "
            f"{int(positives.sum())} positive slots. Loss terms are per slot, before the criterion divides by "
            f"boxes × groups.")


def from_detections(explorer, session, threshold, max_detections) -> dict:
    """The current result's detections above the threshold, as typed boxes."""
    from ..explore.views import detection_view

    options = inputs.DetectionOptions.parse(threshold, max_detections)
    stored = explorer.stored(session)
    view = detection_view(stored.result, options.threshold, options.max_detections)
    if not len(view.boxes):
        raise ValueError("No detections above the threshold to take as ground truth.")
    boxes = np.asarray(view.boxes, dtype=np.float64).reshape(-1, 4)
    truth = GroundTruth(np.asarray(view.labels, dtype=np.int64), np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], -1),
                        stored.result.size)
    return {"dn_boxes": boxes_text(truth, stored.result.category_ids)}


def from_file(explorer, file, image, model_choice, checkpoint, variant) -> dict:
    """An uploaded BOXES.json or COCO annotation file, as typed boxes for the current image."""
    if file is None:
        return {}
    path = Path(file if isinstance(file, str) else file.get("path", ""))
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"The boxes file is larger than {MAX_DOCUMENT_BYTES} bytes.")
    image_path, name = image_file(image)
    if not image_path:
        raise ValueError("Upload the image first: the boxes are read for it.")
    loaded = load_image(image_path, max_side=MAX_SIDE)
    model = choices.resolve(model_choice, checkpoint, variant)
    cfg = model.config or load_model(explorer, model)[1]
    text = path.read_text(errors="replace")
    truth = read_boxes_text(text, loaded.file_size, category_ids(cfg), name)
    return {"dn_boxes": boxes_text(truth, category_ids(cfg))}


def show_canvas(image) -> dict:
    """The image to draw boxes on (in the run's picture): two clicks give a box's corners."""
    path, _ = image_file(image)
    if not path:
        raise ValueError("Upload an image or pick an example first.")
    canvas, _ = display_canvas(load_image(path, max_side=MAX_SIDE).array)
    return {"dn_image": canvas, "dn_corner": None,
            "dn_info": "Click two opposite corners of a box on the picture; it is added with the category id below."}


def click_corner(image, corner, boxes, category, x: float, y: float) -> dict:
    """A click at (x, y) in the picture's pixels: the first corner of a box, or the second (then
    the box is added to the typed boxes, in the image file's pixels, with `category`)."""
    path, _ = image_file(image)
    if not path:
        raise ValueError("Upload an image or pick an example first.")
    loaded = load_image(path, max_side=MAX_SIDE)
    canvas, scale = display_canvas(loaded.array)
    if not (0 <= x < canvas.shape[1] and 0 <= y < canvas.shape[0]):
        raise ValueError("Click on the picture itself, not on its key.")
    file_scale = loaded.file_size[1] / loaded.array.shape[1]
    point = (x / scale * file_scale, y / scale * file_scale)
    if corner is None:
        return {"dn_corner": point, "dn_info": f"First corner at ({point[0]:.0f}, {point[1]:.0f}): click the "
                                               "opposite corner."}
    try:
        category_id = int(float(category))
    except (TypeError, ValueError):
        raise ValueError(f"The category id must be a whole number, got {category!r:.40}.") from None
    (x0, y0), (x1, y1) = corner, point
    line = (f"{min(x0, x1):.1f} {min(y0, y1):.1f} {abs(x1 - x0):.1f} {abs(y1 - y0):.1f} {category_id}")
    text = str(boxes or "").rstrip()
    return {"dn_corner": None, "dn_boxes": f"{text}\n{line}" if text else line,
            "dn_info": f"Added the box {line} (x y w h category_id)."}


# -- layout ------------------------------------------------------------------------------------------

def build(ui) -> None:
    """The tab's components, into `ui` (call inside the page's gr.Tabs)."""
    with gr.Tab("Denoising", id="denoising"):
        gr.Markdown("DINO's training trick, contrastive denoising: noised copies of the true boxes (positives near "
                    "them, negatives farther out, some labels flipped), decoded beside the matching queries behind "
                    "an attention mask. With the same seed the queries equal the official `prepare_for_cdn`'s.",
                    elem_classes=["caption"])
        ui["dn_state"] = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                ui["dn_boxes"] = gr.Textbox(label="Ground-truth boxes", lines=5, info=BOXES_HELP, elem_id="dn-boxes",
                                            placeholder="40 60 120 90 1")
                ui["dn_file"] = gr.File(label="…or a COCO / BOXES.json file", file_types=[".json"], height=90,
                                        elem_id="dn-file")
                ui["dn_take"] = gr.Button("Current detections as ground truth", size="sm", elem_id="dn-take")
                with gr.Row():
                    ui["dn_draw"] = gr.Button("Draw boxes", size="sm", elem_id="dn-draw", min_width=90)
                    ui["dn_category"] = gr.Number(value=1, label="category_id of drawn boxes", precision=0,
                                                  min_width=120, elem_id="dn-category")
                ui["dn_corner"] = gr.State(None)
                ui["dn_seed"] = gr.Number(value=0, label="Seed (torch.manual_seed)", precision=0, elem_id="dn-seed")
                ui["dn_run"] = gr.Button("Run denoising", variant="primary", elem_id="dn-run")
                ui["dn_group"] = gr.Slider(1, 2, value=1, step=1, label="Group", elem_id="dn-group",
                                           elem_classes=["commit-on-enter"])
                ui["dn_layer"] = gr.Slider(1, 6, value=6, step=1, label="After decoder layer", elem_id="dn-layer",
                                           elem_classes=["commit-on-enter"])
                ui["dn_kinds"] = gr.CheckboxGroup(list(KINDS), value=list(KINDS), label="Show", elem_id="dn-kinds")
                ui["dn_download"] = gr.DownloadButton("denoising.npz", size="sm", elem_id="dn-download")
            with gr.Column(scale=4):
                ui["dn_info"] = gr.Markdown("", elem_id="dn-info")
                ui["dn_image"] = gr.Image(interactive=False, show_label=False, elem_id="dn-image", format="png",
                                          elem_classes=["view-image"], buttons=["download", "fullscreen"])
                ui["dn_table"] = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, max_height=300,
                                              elem_id="dn-table")
                with gr.Accordion("Attention mask (who may see whom)", open=True):
                    ui["dn_mask"] = gr.Image(interactive=False, show_label=False, elem_id="dn-mask", format="png",
                                             buttons=["download", "fullscreen"])


def wire(ui, explorer, bind) -> None:
    """Connect the tab's controls; `bind(ui, fn)` maps a handler's {name: value} onto components
    and turns ValueError into a message on the page (the page's own `_bind`)."""
    raw = {"api_visibility": "private", "preprocess": False}
    run_views = [ui.session, ui.dn_state, ui.dn_download, ui.dn_group, ui.dn_layer, ui.dn_info, ui.dn_mask,
                 ui.dn_image, ui.dn_table]

    def on_run(session, image, model_choice, checkpoint, variant, max_input, boxes, seed, kinds,
               request: gr.Request = None):
        parsed = DenoisingRequest.parse(image, model_choice, checkpoint, variant, max_input, boxes, seed)
        return run(explorer, session, parsed, kinds, request)

    ui.dn_run.click(bind(ui, on_run), [ui.session, ui.image_in, ui.model_choice, ui.checkpoint, ui.variant,
                                       ui.max_input, ui.dn_boxes, ui.dn_seed, ui.dn_kinds], run_views,
                    concurrency_id="detect", **raw)
    gr.on([ui.dn_group.release, ui.dn_layer.release, ui.dn_kinds.input], bind(ui, redraw),
          [ui.dn_state, ui.dn_group, ui.dn_layer, ui.dn_kinds], [ui.dn_image, ui.dn_table], show_progress="hidden",
          **raw)
    ui.dn_take.click(bind(ui, lambda session, threshold, most: from_detections(explorer, session, threshold, most)),
                     [ui.session, ui.threshold, ui.max_detections], [ui.dn_boxes], **raw)
    ui.dn_draw.click(bind(ui, show_canvas), [ui.image_in], [ui.dn_image, ui.dn_corner, ui.dn_info], **raw)

    def on_click(image, corner, boxes, category, evt: gr.SelectData):
        x, y = evt.index
        return click_corner(image, corner, boxes, category, float(x), float(y))

    ui.dn_image.select(bind(ui, on_click), [ui.image_in, ui.dn_corner, ui.dn_boxes, ui.dn_category],
                       [ui.dn_corner, ui.dn_boxes, ui.dn_info], **raw)
    ui.dn_file.upload(bind(ui, lambda file, image, choice, checkpoint, variant: from_file(
        explorer, file, image, choice, checkpoint, variant)),
        [ui.dn_file, ui.image_in, ui.model_choice, ui.checkpoint, ui.variant], [ui.dn_boxes], **raw)


# -- helpers -------------------------------------------------------------------------------------------

_run_on_device = gpu.gpu_function(run_denoising)


def load_model(explorer, model: choices.ModelChoice):
    """(model, config) from the page's model cache; ValueError with a message for the page."""
    try:
        return explorer.models.get(model.source, model.variant)
    except ValueError as err:
        raise ValueError(f"Cannot use this checkpoint: {err}") from None
    except (OSError, RuntimeError) as err:
        log.warning("loading %s failed: %s", model.model_id, err)
        raise ValueError("Loading the model failed (see the server log).") from None


def image_file(image) -> tuple[str | None, str]:
    """(path, original file name) of the image input (a FileData dict, unprocessed, or a path)."""
    if image is None:
        return None, ""
    if isinstance(image, dict):
        path = image.get("path")
        return path, Path(image.get("orig_name") or path or "").name
    return str(image), Path(str(image)).name


def _index(name: str, value, size: int) -> int:
    """A 1-based slider value as a 0-based index below `size`."""
    try:
        index = int(float(value)) - 1
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r:.40}.") from None
    if not 0 <= index < size:
        raise ValueError(f"{name} must lie in 1..{size}, got {value}.")
    return index


def _rounded(value: float):
    return "" if np.isnan(value) else round(value, 4)
