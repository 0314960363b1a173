"""The Denoising tab: DINO's contrastive denoising for the current image and boxes the visitor
gives (typed, drawn with two clicks, from a COCO / BOXES.json file, or the current detections taken
as ground truth).

`build(ui)` makes the components inside the page's tabs; `wire(page)` connects them
through the page's events (`events.PageEvents`): every handler is a method of `DenoisingTab` taking
the page's `PageEvent` (the Detect controls, the typed page controls and this tab's own raw values,
parsed here into `DenoisingRequest` / `DenoisingDisplay`) and returning {view name: value}. The run
itself lives in `explore.denoising`, the figures in `explore.denoising_figures`.
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
from ..runtime.detections import detection_view
from ..explore.draw.pixels import display_canvas
from ..io.boxes import GroundTruth, MAX_DOCUMENT_BYTES, boxes_text, read_boxes_text
from ..io.denoising import write_denoising
from ..io.images import MAX_SIDE, LoadedImage, load_image
from ..io.labels import category_ids, class_names
from . import families_ui, gpu
from .events import PageEvent, Views
from .inputs import DetectRequest, detect_request, uploaded_file

log = logging.getLogger("dino_explorer")

KINDS = ("positive", "negative")
MAX_SEED = 2 ** 31 - 1
TABLE_HEADERS = ["slot", "kind", "target", "given class", "flipped", "denoised to", "p", "focal", "L1", "1-GIoU"]
BOXES_HELP = ("One box per line, `x y w h category_id` in the image's pixels (COCO convention), or a BOXES.json "
              "text `{\"boxes\": [{\"bbox\": [x, y, w, h], \"category_id\": k}]}`.")
# This tab's controls that its events send besides the page's (`PageEvent.tab_values`).
CONTROLS = ("dn_state", "dn_boxes", "dn_file", "dn_category", "dn_corner", "dn_seed", "dn_group", "dn_layer",
            "dn_kinds")


@dataclass(frozen=True)
class DenoisingRequest:
    """What a Run reads, checked: the page's Detect request (image, model, cap on the model input's
    side), the boxes text, the seed and the kinds of queries shown."""

    detect: DetectRequest
    boxes: str
    seed: int
    kinds: tuple[str, ...]

    @classmethod
    def parse(cls, event: PageEvent) -> "DenoisingRequest":
        detect = detect_request(event.detect_values)
        tab = event.tab_values
        boxes = str(tab.get("dn_boxes") or "")
        if not boxes.strip():
            raise ValueError("Give at least one box (or take the current detections as ground truth).")
        return cls(detect, boxes, parse_seed(tab.get("dn_seed")), parse_kinds(tab.get("dn_kinds", KINDS)))


@dataclass(frozen=True)
class DenoisingDisplay:
    """How the stored run is drawn: `group` and `layer` 0-based, `kinds` shown."""

    group: int
    layer: int
    kinds: tuple[str, ...]

    @classmethod
    def parse(cls, run: DenoisingRun, group, layer, kinds) -> "DenoisingDisplay":
        return cls(_index("Group", group, run.num_groups), _index("Decoder layer", layer, run.num_layers),
                   parse_kinds(kinds))


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


def parse_kinds(kinds) -> tuple[str, ...]:
    """The ticked kinds of queries shown (a subset of KINDS, in its order)."""
    ticked = [] if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
    if set(ticked) - set(KINDS):
        raise ValueError(f"Show must be among {', '.join(KINDS)}.")
    return tuple(k for k in KINDS if k in ticked)


# -- handlers --------------------------------------------------------------------------------------

class DenoisingTab:
    """The tab's handlers over the app's services (its model cache, model slots and sessions)."""

    def __init__(self, services):
        self.services = services
        self._run = gpu.gpu_function(run_denoising)

    def run(self, event: PageEvent, progress=None) -> Views:
        """Run denoising for the page's image and model and the tab's boxes and seed; draw group 1
        after the last layer."""
        request = DenoisingRequest.parse(event)
        loaded = _image(request.detect.path)
        detector = self.services.models.load(request.detect.model)
        families_ui.require_dino(detector, request.detect.model.model_id, "Denoising")
        model, cfg = detector.model, detector.config
        truth = read_boxes_text(request.boxes, loaded.file_size, category_ids(cfg), request.detect.file_name)
        try:
            with self.services.models.slot:
                result = self._run(model, cfg, loaded.array, truth, request.seed, max_size=request.detect.max_input,
                                   class_names=class_names(cfg), model_id=request.detect.model.model_id)
        except RuntimeError as err:
            log.exception("denoising failed")
            raise ValueError(f"Denoising failed: {err}") from None
        session = self.services.sessions.session(event.session, event.request)
        path = write_denoising(result, session.downloads() / "denoising.npz", source=request.detect.file_name)
        canvas, _ = display_canvas(loaded.array)
        stored = StoredRun(dataclasses.replace(result, input_image=np.zeros((3, 0, 0), np.float32)), canvas)
        display = DenoisingDisplay(0, result.num_layers - 1, request.kinds)
        return {"session": session, "dn_state": stored, "dn_download": str(path),
                "dn_group": gr.Slider(minimum=1, maximum=result.num_groups, value=1, step=1),
                "dn_layer": gr.Slider(minimum=1, maximum=result.num_layers, value=result.num_layers, step=1),
                "dn_info": summary(result),
                "dn_mask": render_attention_mask(result.attn_mask, result.pad_size, result.num_groups),
                **draw(stored, display)}

    def redraw(self, event: PageEvent, progress=None) -> Views:
        """Group, layer or kinds changed: the stored run drawn again."""
        tab = event.tab_values
        stored = tab.get("dn_state")
        if stored is None:
            raise ValueError("Run denoising first.")
        return draw(stored, DenoisingDisplay.parse(stored.run, tab.get("dn_group"), tab.get("dn_layer"),
                                                   tab.get("dn_kinds")))

    def take_detections(self, event: PageEvent, progress=None) -> Views:
        """The current result's detections (the page's threshold and maximum) as typed boxes."""
        stored = self.services.results.stored(event.session)
        options = event.controls.detection
        view = detection_view(stored.result, options.threshold, options.max_detections)
        if not len(view.boxes):
            raise ValueError("No detections above the threshold to take as ground truth.")
        boxes = np.asarray(view.boxes, dtype=np.float64).reshape(-1, 4)
        # Boxes in the pixels of the image as given (the result may be of a downscaled copy).
        boxes = boxes * np.tile(np.asarray(stored.result.source_scale, dtype=np.float64), 2)
        truth = GroundTruth(np.asarray(view.labels, dtype=np.int64),
                            np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], -1), stored.result.given_size)
        return {"dn_boxes": boxes_text(truth, stored.result.category_ids)}

    def read_file(self, event: PageEvent, progress=None) -> Views:
        """An uploaded BOXES.json or COCO annotation file, as typed boxes for the page's image."""
        file = event.tab_values.get("dn_file")
        if file is None:
            return {}
        path = Path(file if isinstance(file, str) else file.get("path", ""))
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise ValueError(f"The boxes file is larger than {MAX_DOCUMENT_BYTES} bytes.")
        request = detect_request(event.detect_values)
        loaded = _image(request.path)
        cfg = request.model.config
        if cfg is None:
            detector = self.services.models.load(request.model)
            families_ui.require_dino(detector, request.model.model_id, "Denoising")
            cfg = detector.config
        truth = read_boxes_text(path.read_text(errors="replace"), loaded.file_size, category_ids(cfg),
                                request.file_name)
        return {"dn_boxes": boxes_text(truth, category_ids(cfg))}

    def show_canvas(self, event: PageEvent, progress=None) -> Views:
        """The page's image to draw boxes on (in the run's picture): two clicks give a box's corners."""
        canvas, _ = display_canvas(_page_image(event).array)
        return {"dn_image": canvas, "dn_corner": None,
                "dn_info": "Click two opposite corners of a box on the picture; it is added with the category id "
                           "below."}

    def click_corner(self, event: PageEvent, progress=None) -> Views:
        """A click on the picture (`event.point`, its pixels): the first corner of a box, or the second
        (then the box is added to the typed boxes, in the image file's pixels, with the chosen category)."""
        tab = event.tab_values
        x, y = (float(v) for v in event.point)
        return click_corner(_page_image(event), tab.get("dn_corner"), tab.get("dn_boxes"), tab.get("dn_category"),
                            x, y)


def draw(stored: StoredRun, display: DenoisingDisplay) -> Views:
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


def click_corner(loaded: LoadedImage, corner, boxes, category, x: float, y: float) -> Views:
    """A click at (x, y) in the drawn picture's pixels: the first corner of a box, or the second
    (then the box is added to the typed boxes, in the image file's pixels, with `category`)."""
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


def wire(page) -> None:
    """Connect the tab's controls through the page's events (`page`: `events.PageEvents`)."""
    ui, tab = page.ui, DenoisingTab(page.services)
    own = {"inputs": page.inputs | {ui[name] for name in CONTROLS}}

    def when(triggers, method, selected=False, **extra):
        page.when(triggers, method, selected=selected, redraw=False, **own, **extra)

    when([ui.dn_run.click], tab.run, show_progress="full", **page.model_run)
    when([ui.dn_group.release, ui.dn_layer.release, ui.dn_kinds.input], tab.redraw)
    when([ui.dn_take.click], tab.take_detections)
    when([ui.dn_draw.click], tab.show_canvas)
    when([ui.dn_image.select], tab.click_corner, selected=True)
    when([ui.dn_file.upload], tab.read_file)


# -- helpers -------------------------------------------------------------------------------------------

def _image(path: str) -> LoadedImage:
    try:
        return load_image(path, max_side=MAX_SIDE)
    except ValueError as err:
        raise ValueError(f"Cannot use this image: {err}.") from None


def _page_image(event: PageEvent) -> LoadedImage:
    """The page's image (the Detect controls' image input)."""
    path, _ = uploaded_file(event.detect_values.get("image_in"))
    if not path:
        raise ValueError("Upload an image or pick an example first.")
    return _image(path)


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
