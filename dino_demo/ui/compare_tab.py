"""The Compare tab: the page's image through two models (before and after fine-tuning, R50 and
Swin-L, 12 and 36 epochs): their detections in a slider (A left, B right), matched to each other
(`explore.compare`), what one finds and the other misses, and the same query slot's sampling in
both. The two results live in the app's result store (its memory budget), the session keeps
their keys.

`build(ui)` makes the components, `wire(ui, page, model_run)` connects them through the page's
events (`events.PageEvents`); handlers are plain functions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from ..explore.compare import Comparison, compare_detections, shared_slots
from ..runtime.detections import DetectionView, query_rows
from ..explore.draw.figures import REGION_COLOR, render_detections
from ..runtime.detections import detection_view
from ..explore.draw.pixels import draw_boxes
from ..io.images import MAX_SIDE, load_image
from ..sources import zoo
from ..explore import panels
from ..explore.options import SamplingOptions
from ..explore.stored import StoredResult
from . import choices, inputs

Views = dict[str, object]


@dataclass(frozen=True)
class CompareKeys:
    """The session's two stored results (store keys) and the models' names."""

    a: str
    b: str
    name_a: str
    name_b: str


@dataclass(frozen=True)
class CompareRequest:
    threshold: float
    slot: int
    layer: int          # 1-based; each model shows min(layer, its layers)

    @classmethod
    def parse(cls, threshold, slot, layer) -> "CompareRequest":
        return cls(inputs.number(threshold, "Score threshold", 0.0, 1.0),
                   inputs.number(slot if slot is not None else 0, "Query slot", 0, inputs.MAX_PROPOSALS - 1,
                                 integer=True),
                   inputs.number(layer, "Decoder layer", 1, 12, integer=True))


def compare(services, image, model_a: choices.ModelChoice, model_b: choices.ModelChoice, request: CompareRequest,
            previous: CompareKeys | None) -> Views:
    """Run both models on the image and draw every view, the layer slider sized for the deeper model;
    a model that cannot be loaded is named in the message ("model B (name): ...")."""
    path = image.get("path") if isinstance(image, dict) else image
    if not path:
        raise ValueError("Upload an image or pick an example first (the page's image is compared).")
    loaded = load_image(path, max_side=MAX_SIDE)
    file_name = str((image.get("orig_name") if isinstance(image, dict) else None) or "image")
    stored = []
    for side, choice in (("A", model_a), ("B", model_b)):
        try:
            detector = services.models.load(choice)
            result = services.models.infer(detector.named(choice.model_id), loaded.array,
                                           precision=services.settings.precision)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"Model {side} ({choice.model_id}): {err}") from None
        stored.append(StoredResult.of(result, file_name, None, choice, detector.config.enc_layers))
    store = services.results.store
    if previous is not None:
        store.discard(previous.a)
        store.discard(previous.b)
    keys = CompareKeys(store.put(stored[0]), store.put(stored[1]), model_a.model_id, model_b.model_id)
    layers = max(s.result.num_layers for s in stored)
    request = dataclasses.replace(request, layer=min(request.layer, layers))
    return {"compare_state": keys, "compare_layer": gr.Slider(maximum=layers, value=request.layer),
            **draw(stored[0], stored[1], keys, request)}


def redraw(results, keys: CompareKeys | None, request: CompareRequest) -> Views:
    if keys is None:
        raise ValueError("Press Compare first.")
    return draw(results.store.get(keys.a), results.store.get(keys.b), keys, request)


def draw(a: StoredResult, b: StoredResult, keys: CompareKeys, request: CompareRequest) -> Views:
    if a.result.size != b.result.size:
        raise ValueError(f"the two results are of different images ({a.result.size} and {b.result.size} pixels)")
    comparison = compare_detections(per_query(detection_view(a.result, request.threshold)),
                                    per_query(detection_view(b.result, request.threshold)), request.threshold)
    slots = shared_slots(a.result, b.result)
    if request.slot >= slots:
        raise ValueError(f"Query slot must be below {slots} (the smaller model's query count).")
    return {
        "compare_slider": (detections_figure(a, comparison, "A"), detections_figure(b, comparison, "B")),
        "compare_summary": summary(comparison, keys, a, b),
        "compare_table": table(comparison, a, b),
        "compare_sampling": (sampling(a, request), sampling(b, request)),
    }


def per_query(view: DetectionView) -> DetectionView:
    """`view` with each query once, under its best class (the official post-processing can list a
    query under several classes): the comparison matches boxes, and lists each query slot once."""
    keep = query_rows(view).index
    return DetectionView(boxes=view.boxes[keep], scores=view.scores[keep], labels=view.labels[keep],
                         categories=view.categories[keep], query_slots=view.query_slots[keep],
                         names=tuple(view.names[i] for i in keep))


def detections_figure(stored: StoredResult, comparison: Comparison, side: str) -> np.ndarray:
    view = comparison.a if side == "A" else comparison.b
    only = set(comparison.only_a if side == "A" else comparison.only_b)
    captions = [("only " + side + " · " if i in only else "") + c for i, c in enumerate(view.captions)]
    k = stored.scale
    canvas = render_detections(stored.canvas, view.boxes * k, captions, view.labels)
    unique = sorted(only)
    if unique:
        outward = np.array([-3, -3, 3, 3], dtype=np.float64)
        canvas = draw_boxes(canvas, view.boxes[unique] * k + outward, [REGION_COLOR] * len(unique),
                            widths=[3] * len(unique))
    return canvas


def sampling(stored: StoredResult, request: CompareRequest) -> np.ndarray:
    layer = min(request.layer, stored.result.num_layers) - 1
    overlay, _, _ = panels.sampling_image(stored, request.slot, SamplingOptions(layer, None, None, "level"))
    return overlay


def summary(comparison: Comparison, keys: CompareKeys, a: StoredResult, b: StoredResult) -> str:
    same_classes = a.result.category_ids == b.result.category_ids
    note = "" if same_classes else (" The two models have different classes: detections match only where their "
                                    "category ids agree.")
    return (f"**A: {keys.name_a}** finds {len(comparison.a)}, **B: {keys.name_b}** finds {len(comparison.b)} above "
            f"{comparison.threshold:.2f}; both: {len(comparison.pairs)}, only A: {len(comparison.only_a)}, "
            f"only B: {len(comparison.only_b)} (outlined in magenta). Drag the slider to compare.{note}")


def table(comparison: Comparison, a: StoredResult, b: StoredResult) -> pd.DataFrame:
    rows = []
    for i, j, iou in comparison.pairs:
        rows.append(["both", comparison.a.names[i], int(comparison.a.query_slots[i]),
                     round(float(comparison.a.scores[i]), 3), int(comparison.b.query_slots[j]),
                     round(float(comparison.b.scores[j]), 3), round(iou, 3)])
    for i in comparison.only_a:
        rows.append(["only A", comparison.a.names[i], int(comparison.a.query_slots[i]),
                     round(float(comparison.a.scores[i]), 3), "", "", round(float(comparison.best_iou_a[i]), 3)])
    for j in comparison.only_b:
        rows.append(["only B", comparison.b.names[j], "", "", int(comparison.b.query_slots[j]),
                     round(float(comparison.b.scores[j]), 3), round(float(comparison.best_iou_b[j]), 3)])
    return pd.DataFrame(rows, columns=["found by", "class", "A slot", "A score", "B slot", "B score",
                                       "IoU (with the other's nearest)"])


# -- events ----------------------------------------------------------------------------------------

def build(ui: dict, default_model: str) -> None:
    with gr.Tab("Compare", id="compare"):
        # States inside the Tab: one directly inside gr.Tabs takes a tab's place in its bar.
        ui["compare_state"] = gr.State(None)
        gr.Markdown("The page's image through two models: detections matched between them (same class, IoU ≥ 0.5), "
                    "what one finds and the other misses, and the same query slot's sampling in both.",
                    elem_classes=["caption"])
        offered = choices.model_choices()
        # B: a local model other than A (never a zoo entry or a Hub model, which a click would download).
        local = [v for _, v in offered if v != default_model and v != choices.CUSTOM
                 and not v.startswith((zoo.ZOO_PREFIX, choices.HUB_PREFIX))]
        other = local[0] if local else default_model
        with gr.Row():
            ui["compare_a"] = gr.Dropdown(offered, value=default_model, label="Model A", elem_id="compare-a")
            ui["compare_b"] = gr.Dropdown(offered, value=other, label="Model B", elem_id="compare-b")
        with gr.Row():
            ui["compare_slot"] = gr.Number(0, label="Query slot (both models)", precision=0, elem_id="compare-slot")
            layers = max(_decoder_layers(default_model), _decoder_layers(other))
            ui["compare_layer"] = gr.Slider(1, layers, value=layers, step=1, label="Decoder layer",
                                            elem_id="compare-layer")
            ui["compare_run"] = gr.Button("Compare", variant="primary", elem_id="compare-run")
        ui["compare_summary"] = gr.Markdown("", elem_id="compare-summary")
        ui["compare_slider"] = gr.ImageSlider(label="Detections: A | B", elem_id="compare-slider", type="filepath")
        ui["compare_table"] = gr.Dataframe(interactive=False, label="Detections matched between the models",
                                           elem_id="compare-table", max_height=300)
        ui["compare_sampling"] = gr.ImageSlider(label="The query slot's sampling: A | B", elem_id="compare-sampling",
                                                type="filepath")


def _model(side: str, choice) -> choices.ModelChoice:
    """Model A or B of the tab; a choice that names no usable model says which of the two it was."""
    try:
        return choices.resolve(choice, "", None)
    except ValueError as err:
        raise ValueError(f"Model {side}: {err}") from None


def _decoder_layers(choice: str) -> int:
    """The decoder layers of a model choice before it is loaded (6, the official models', when only
    loading tells)."""
    try:
        config = choices.resolve(choice, "", None).config
    except ValueError:
        config = None
    return config.dec_layers if config is not None else 6


def wire(page) -> None:
    """Connect the tab (`page`: the page's `events.PageEvents`; `model_run`: the Detect events'
    concurrency, which a Compare's two runs share). The image and the score threshold are the
    page's own (its PageEvent's)."""
    ui, services = page.ui, page.services
    own = {ui.compare_a, ui.compare_b, ui.compare_slot, ui.compare_layer, ui.compare_state}
    on = {"inputs": page.inputs | own, "outputs": page.tab_outputs("compare_"), "api_visibility": "private",
          "preprocess": False}

    def request(event) -> CompareRequest:
        values = event.tab_values
        return CompareRequest.parse(event.controls.detection.threshold, values["compare_slot"],
                                    values["compare_layer"])

    def run_both(event, progress=None):
        values = event.tab_values
        return compare(services, event.detect_values.get("image_in"), _model("A", values["compare_a"]),
                       _model("B", values["compare_b"]), request(event), values["compare_state"])

    def change(event, progress=None):
        values = event.tab_values
        return redraw(services.results, values["compare_state"], request(event))

    gr.on([ui.compare_run.click], page.handler(run_both, redraw=False), show_progress="full",
          show_progress_on=[ui.compare_slider, ui.compare_summary], **on, **page.model_run)
    gr.on([ui.compare_slot.submit, ui.compare_layer.release], page.handler(change, redraw=False),
          show_progress="hidden", **on)
