"""The Why? tab: ask about any box of the current result (drawn with two clicks, typed, or picked
among the ground truth when annotations are loaded) and see the queries whose final boxes overlap
it most, the closest encoder proposals, the verdict, and the nearest query's boxes layer by layer
and where it sampled; with annotations, every false alarm of the image with its kind.

`build(ui)` makes the components inside the page's tabs, `wire(ui, page)` connects them through
the page's events (`events.PageEvents`); the handlers are plain functions of the session's stored
result and typed values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from ..explore.analysis import GroundTruth, annotations_by_image
from ..explore.diagnosis import (
    FALSE_ALARM_KINDS,
    RegionDiagnosis,
    check_box,
    diagnose_image,
    diagnose_region,
    explain_false_alarm,
    pairwise_iou,
)
from ..explore.draw.figures import REGION_COLOR, render_refinement, render_region
from ..explore.draw.data import refinement_view
from ..explore.draw.pixels import draw_boxes, draw_crosses
from ..explore import panels
from ..explore.stored import StoredResult
from ..io.set_limits import SetLimits, check_listed, read_json
from . import inputs

ANY_CLASS = "any class"
MAX_ANNOTATION_BYTES = 32 * 1024 ** 2
MAX_TRUTH = 500          # ground-truth boxes of one image offered in the list

Views = dict[str, object]


@dataclass(frozen=True)
class RegionTruth:
    """Ground truth of one image: its `file_name` and `size` (H, W), the annotations (`truth`,
    crowd left out) and category names."""

    file_name: str
    size: tuple[int, int]
    truth: GroundTruth
    names: dict[int, str]

    def fits(self, stored: StoredResult) -> bool:
        """Whether this is the ground truth of the stored result's image."""
        return self.file_name == stored.file_name and self.size == stored.result.size

    def label(self, index: int) -> str:
        category = int(self.truth.categories[index])
        return self.names.get(category, f"category {category}")


@dataclass(frozen=True)
class RegionRequest:
    """A region asked about: `box` [4] xyxy image pixels, `class_name` (ANY_CLASS or one of the
    model's), `threshold`."""

    box: np.ndarray
    class_name: str
    threshold: float

    @classmethod
    def parse(cls, stored: StoredResult, x0, y0, x1, y1, class_name, threshold) -> "RegionRequest":
        height, width = stored.result.size
        values = [inputs.number(v, name, -width if name[0] == "x" else -height, 2 * max(width, height))
                  for v, name in ((x0, "x0"), (y0, "y0"), (x1, "x1"), (y1, "y1"))]
        box = check_box(values, stored.result.size)
        names = (ANY_CLASS, *stored.result.class_names)
        return cls(box, inputs.one_of(class_name or ANY_CLASS, "Class", names),
                   inputs.number(threshold, "Score threshold", 0.0, 1.0))

    def class_id(self, stored: StoredResult) -> int | None:
        return None if self.class_name == ANY_CLASS else stored.result.class_names.index(self.class_name)


# -- handlers --------------------------------------------------------------------------------------

def ask(stored: StoredResult, request: RegionRequest, truth: RegionTruth | None) -> Views:
    """Every view of the tab for a region."""
    result = stored.result
    claimed, image = frozenset(), None
    if truth is not None and truth.fits(stored):
        names = tuple(truth.label(g) for g in range(len(truth.truth.categories)))
        image = diagnose_image(result, truth.truth.boxes, truth.truth.categories, request.threshold, names)
        others = pairwise_iou(truth.truth.boxes, request.box[None])[:, 0] < 0.95   # not the region itself
        claimed = frozenset(int(d) for g, d in enumerate(image.matching.truth_detection) if d >= 0 and others[g])
    region = diagnose_region(result, request.box, request.class_id(stored), request.threshold, claimed=claimed)
    slot = region.nearest.query_slot
    views = {
        "region_x0": round(float(request.box[0]), 1), "region_y0": round(float(request.box[1]), 1),
        "region_x1": round(float(request.box[2]), 1), "region_y1": round(float(request.box[3]), 1),
        "region_image": region_figure(stored, region),
        "region_verdict": verdict_markdown(stored, region),
        "region_queries": query_table(stored, region),
        "region_proposals": proposal_table(stored, region),
        "region_slot": slot,
        **query_views(stored, slot, request.box, f"query {slot}: IoU with the region by layer"),
    }
    # The region is a false alarm's own box (opened from the Data set tab, or drawn on it): say so,
    # and show that query's layers against its best-overlapping ground truth.
    alarm = next((a for a in (image.false_alarms if image is not None else ())
                  if region.detection == a.detection), None)
    if alarm is not None:
        outline = None if alarm.truth is None else truth.truth.boxes[alarm.truth]
        views.update(query_views(stored, alarm.query_slot, outline, f"false alarm, query {alarm.query_slot}: IoU "
                                 "with its best-overlapping ground truth by layer"))
        views["region_slot"] = alarm.query_slot
        views["region_verdict"] = f"**False alarm — {alarm.summary}**\n\n" + views["region_verdict"]
    return views


def query_views(stored: StoredResult, slot: int, outline: np.ndarray | None, title: str) -> Views:
    """Query `slot`'s boxes layer by layer (with `outline`, a region or ground truth, in
    magenta) and its sampling in every decoder layer."""
    result = stored.result
    k = stored.scale
    boxes = refinement_view(result, slot)
    captions = None
    if outline is not None:
        ious = pairwise_iou(boxes, np.asarray(outline)[None])[:, 0]
        captions = [f"{'proposal' if t == 0 else f'layer {t}'} (IoU {iou:.2f})" for t, iou in enumerate(ious)]
    figure = render_refinement(stored.canvas, boxes * k, captions)
    if outline is not None:   # the legend strip is below the picture: its pixels keep their coordinates
        figure = draw_boxes(figure, (np.asarray(outline) * k)[None], [REGION_COLOR], widths=[2])
    return {"region_layers": figure,
            "region_sampling": panels.layer_grid_image(stored, slot),
            "region_class_scores": class_scores_table(stored, slot),
            "region_layers_caption": f"**{title}**"}


def class_scores_table(stored: StoredResult, slot: int, top: int = 12) -> pd.DataFrame:
    """Query `slot`'s probability for each class after every decoder layer: its `top` classes by
    the last layer's score, best first."""
    result = stored.result
    probabilities = result.internals.logits[:, 0, slot].double().sigmoid().numpy()     # [K, C]
    order = np.argsort(-probabilities[-1], kind="stable")[:top]
    rows = [[result.label(int(c)), *[round(float(v), 3) for v in probabilities[:, c]]] for c in order]
    return pd.DataFrame(rows, columns=[f"query {slot}: class", *[f"layer {k + 1}" for k in range(len(probabilities))]])


def region_figure(stored: StoredResult, region: RegionDiagnosis) -> np.ndarray:
    result, k = stored.result, stored.scale
    queries = [q for q in region.queries if q.iou > 0] or list(region.queries[:1])
    name = None if region.class_id in (None, -1) else result.label(region.class_id)
    captions = [f"q{q.query_slot} IoU {q.iou:.2f} · "
                + (f"{name} {q.class_score:.2f}" if name else f"{result.label(q.label)} {q.label_score:.2f}")
                for q in queries]
    proposals = [p for p in region.proposals if p.iou > 0][:3]
    return render_region(stored.canvas, region.box * k, np.array([q.box for q in queries]) * k, captions,
                         np.array([p.box for p in proposals]).reshape(-1, 4) * k,
                         [f"p{p.query_slot} #{p.rank + 1}" for p in proposals], note=region.summary)


def verdict_markdown(stored: StoredResult, region: RegionDiagnosis) -> str:
    x0, y0, x1, y1 = region.box
    what = ANY_CLASS if region.class_id is None else stored.result.label(region.class_id)
    return (f"**Verdict — {region.summary}**\n\nRegion [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}], class: {what}, "
            f"threshold {region.threshold:.2f}. Below: the queries whose final boxes overlap it most "
            f"(click a row to follow one), and the encoder proposals (decoder's first boxes) closest to it, "
            f"ranked by encoder score among the {stored.result.num_queries} selected.")


def query_table(stored: StoredResult, region: RegionDiagnosis) -> pd.DataFrame:
    result = stored.result
    named = region.class_id not in (None, -1)
    probabilities = result.internals.logits[-1, 0].double().sigmoid().numpy()          # [Q, C]
    rows = []
    for q in region.queries:
        top = np.argsort(-probabilities[q.query_slot], kind="stable")[:3]
        rows.append([q.query_slot, round(q.iou, 3), *([round(q.class_score, 3)] if named else []),
                     ", ".join(f"{result.label(int(c))} {probabilities[q.query_slot, c]:.3f}" for c in top),
                     " → ".join(f"{v:.2f}" for v in q.layer_ious)])
    named_column = [f"{result.label(region.class_id)} score"] if named else []
    return pd.DataFrame(rows, columns=["slot", "IoU", *named_column, "top classes",
                                       "IoU: proposal → each layer"])


def proposal_table(stored: StoredResult, region: RegionDiagnosis) -> pd.DataFrame:
    result = stored.result
    rows = [[p.query_slot, p.rank + 1, round(p.score, 3), result.label(p.label), round(p.iou, 3), p.level + 1]
            for p in region.proposals]
    return pd.DataFrame(rows, columns=["slot", f"rank of {result.num_queries}", "encoder score", "class", "IoU",
                                       "level"])


def false_alarm_table(stored: StoredResult, truth: RegionTruth | None, threshold: float) -> pd.DataFrame:
    """The image's false alarms with their kinds (empty without ground truth for this image)."""
    columns = ["slot", "class", "score", "kind", "best ground truth", "IoU"]
    if truth is None or not truth.fits(stored):
        return pd.DataFrame([], columns=columns)
    image = diagnose_image(stored.result, truth.truth.boxes, truth.truth.categories, threshold)
    rows = [[a.query_slot, image.view.names[a.detection], round(float(image.view.scores[a.detection]), 3),
             FALSE_ALARM_KINDS[a.kind], "" if a.truth is None else
             f"#{int(truth.truth.annotation_ids[a.truth])} {truth.label(a.truth)}", round(a.iou, 3)]
            for a in image.false_alarms]
    return pd.DataFrame(rows, columns=columns)


def explain_alarm(stored: StoredResult, truth: RegionTruth | None, threshold: float, row: int) -> Views:
    """The verdict line and per-layer view of false alarm number `row` of the table."""
    if truth is None or not truth.fits(stored):
        raise ValueError("Load the annotations of this image first.")
    image = diagnose_image(stored.result, truth.truth.boxes, truth.truth.categories, threshold,
                           tuple(truth.label(g) for g in range(len(truth.truth.categories))))
    if not 0 <= row < len(image.false_alarms):
        raise ValueError(f"There are {len(image.false_alarms)} false alarms; pick one of the table's rows.")
    alarm = explain_false_alarm(stored.result, image.view, image.false_alarms[row].detection, truth.truth.boxes,
                                truth.truth.categories, image.matching,
                                tuple(truth.label(g) for g in range(len(truth.truth.categories))))
    outline = None if alarm.truth is None else truth.truth.boxes[alarm.truth]
    return {"region_verdict": f"**False alarm — {alarm.summary}**",
            "region_slot": alarm.query_slot,
            **query_views(stored, alarm.query_slot, outline,
                          f"false alarm, query {alarm.query_slot}: IoU with its best-overlapping ground truth")}


def truth_choices(stored: StoredResult, truth: RegionTruth | None, threshold: float) -> list[tuple[str, str]]:
    """(label, index) of every ground-truth box of the image, missed ones marked."""
    if truth is None or not truth.fits(stored):
        return []
    image = diagnose_image(stored.result, truth.truth.boxes, truth.truth.categories, threshold)
    choices = []
    for g in range(min(len(truth.truth.categories), MAX_TRUTH)):
        x0, y0, x1, y1 = truth.truth.boxes[g]
        state = "found" if image.matching.truth_detection[g] >= 0 else "MISSED"
        choices.append((f"#{int(truth.truth.annotation_ids[g])} {truth.label(g)} [{x0:.0f}, {y0:.0f}, {x1:.0f}, "
                        f"{y1:.0f}] {state}", str(g)))
    return choices


def read_truth(path: str | None, stored: StoredResult) -> RegionTruth:
    """The ground truth of the stored image from a COCO annotation file (matched by file name)."""
    if not path:
        raise ValueError("Upload a COCO annotation file (.json).")
    coco = read_json(path, "The annotation file", SetLimits(json_bytes=MAX_ANNOTATION_BYTES))
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError("This is not a COCO annotation file (JSON with images and annotations).")
    check_listed(coco, "The annotation file", SetLimits.reading())
    images = coco["images"]
    return truth_for(coco, stored.file_name, stored.result.size, images)


def truth_for(coco: dict, file_name: str, size: tuple[int, int], images: list | None = None) -> RegionTruth:
    entry = next((i for i in images or coco.get("images", []) if isinstance(i, dict)
                  and Path(str(i.get("file_name", ""))).name == file_name), None)
    if entry is None:
        raise ValueError(f"The annotation file lists no image named {file_name!r}.")
    try:
        annotations = annotations_by_image(coco).get(int(entry["id"]), [])
        truth = GroundTruth.of(annotations)
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.get("categories", [])}
    except (KeyError, TypeError, ValueError):
        raise ValueError("The annotation file's entries for this image are malformed.") from None
    return RegionTruth(file_name, size, truth, names)


# -- events ----------------------------------------------------------------------------------------

def build(ui: dict) -> None:
    """The tab's components, inside the page's gr.Tabs."""
    with gr.Tab("Why?", id="region") as ui["region_tab"]:
        # States inside the Tab: one directly inside gr.Tabs takes a tab's place in its bar.
        ui["region_truth"] = gr.State(None)
        ui["region_corner"] = gr.State(None)
        gr.Markdown("Ask about any box: click two corners on the picture (or type them, or pick a ground-truth "
                    "box once annotations are loaded) and press **Ask**.", elem_classes=["caption"])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                ui["region_image"] = gr.Image(interactive=False, show_label=False, elem_id="region-image",
                                              elem_classes=["view-image"], format="png")
            with gr.Column(scale=1, min_width=240):
                with gr.Row():
                    ui["region_x0"] = gr.Number(None, label="x0", min_width=60, elem_id="region-x0")
                    ui["region_y0"] = gr.Number(None, label="y0", min_width=60, elem_id="region-y0")
                with gr.Row():
                    ui["region_x1"] = gr.Number(None, label="x1", min_width=60, elem_id="region-x1")
                    ui["region_y1"] = gr.Number(None, label="y1", min_width=60, elem_id="region-y1")
                ui["region_class"] = gr.Dropdown([ANY_CLASS], value=ANY_CLASS, label="Class", allow_custom_value=True,
                                                 elem_id="region-class")
                ui["region_ask"] = gr.Button("Ask about this box", variant="primary", elem_id="region-ask")
                ui["region_annotations"] = gr.File(label="COCO annotations of this image (.json)",
                                                   file_types=[".json"], elem_id="region-annotations", height=90)
                ui["region_pick"] = gr.Dropdown([], label="Ground-truth box", elem_id="region-pick")
        ui["region_verdict"] = gr.Markdown("", elem_id="region-verdict")
        ui["region_queries"] = gr.Dataframe(interactive=False, label="Nearest queries (by IoU of their final box)",
                                            elem_id="region-queries")
        ui["region_proposals"] = gr.Dataframe(interactive=False, label="Closest encoder proposals",
                                              elem_id="region-proposals")
        ui["region_slot"] = gr.Number(None, visible=False, precision=0)
        ui["region_layers_caption"] = gr.Markdown("", elem_classes=["caption"])
        ui["region_class_scores"] = gr.Dataframe(interactive=False, label="Its score for each class, layer by layer",
                                                 elem_id="region-class-scores", max_height=260)
        with gr.Row(equal_height=False):
            ui["region_layers"] = gr.Image(interactive=False, show_label=False, elem_id="region-layers",
                                           elem_classes=["view-image"], format="png")
            ui["region_sampling"] = gr.Image(interactive=False, show_label=False, elem_id="region-sampling",
                                             elem_classes=["view-image"], format="png")
        ui["region_alarms"] = gr.Dataframe(interactive=False, label="False alarms on this image (with annotations; "
                                           "click one)", elem_id="region-alarms")


def wire(page) -> None:
    """Connect the tab's controls (`page`: the page's `events.PageEvents`). Each event sends the
    page's controls (parsed into its PageEvent: the session, the score threshold) and the tab's own
    values; a failure goes to the page's status line."""
    ui = page.ui
    own = {ui.region_x0, ui.region_y0, ui.region_x1, ui.region_y1, ui.region_class, ui.region_truth,
           ui.region_corner, ui.region_annotations, ui.region_pick, ui.region_queries}
    on = {"inputs": page.inputs | own, "outputs": page.tab_outputs("region_"), "api_visibility": "private",
          "show_progress": "minimal", "show_progress_on": [ui.region_verdict], "preprocess": False}
    actions = RegionEvents(page.services.results)

    def when(triggers, method, selected=False):
        gr.on(triggers, page.handler(method, selected=selected, redraw=False), **on)

    when([ui.region_ask.click], actions.ask_box)
    when([ui.region_image.select], actions.click_corner, selected=True)
    when([ui.region_annotations.upload], actions.load_truth)
    when([ui.region_pick.input], actions.pick_truth)
    when([ui.region_queries.select], actions.follow_query, selected=True)
    when([ui.region_alarms.select], actions.explain_row, selected=True)
    # Opening the Diagnose tab shows the Why? tab first (or the one left open): its picture is drawn.
    when([ui.region_tab.select, ui.diagnose_tab.select], actions.show_tab)


class RegionEvents:
    """The tab's user actions over the app's `results.Results`: one method `(event, progress)` per
    action (an `events.PageEvent` with the tab's values in `tab_values`), answering {view name: value}."""

    def __init__(self, results):
        self.results = results

    def ask_box(self, event, progress=None):
        """The Ask button: the typed box."""
        values = event.tab_values
        stored = self.results.stored(event.session)
        threshold = event.controls.detection.threshold
        request = RegionRequest.parse(stored, *(values[f"region_{c}"] for c in ("x0", "y0", "x1", "y1")),
                                      values["region_class"], threshold)
        return {**ask(stored, request, values["region_truth"]), **truth_views(stored, values["region_truth"],
                                                                              threshold)}

    def click_corner(self, event, progress=None):
        """A click on the picture: the first corner is marked, the second asks about the box."""
        values = event.tab_values
        stored = self.results.stored(event.session)
        x, y = (float(v) / stored.scale for v in event.point)
        corner = values["region_corner"]
        if corner is None:
            marked = draw_crosses(stored.canvas, np.array([[x * stored.scale, y * stored.scale]]), REGION_COLOR,
                                  size=10)
            return {"region_corner": (x, y), "region_image": marked,
                    "region_verdict": f"First corner ({x:.0f}, {y:.0f}): click the opposite corner."}
        cx, cy = corner
        request = RegionRequest.parse(stored, min(x, cx), min(y, cy), max(x, cx), max(y, cy), values["region_class"],
                                      event.controls.detection.threshold)
        return {"region_corner": None, **ask(stored, request, values["region_truth"])}

    def load_truth(self, event, progress=None):
        """An annotation file uploaded: the image's ground truth, listed with its false alarms."""
        values = event.tab_values
        stored = self.results.stored(event.session)
        file = values["region_annotations"]
        truth = read_truth(file.get("path") if isinstance(file, dict) else file, stored)
        return {"region_truth": truth, **truth_views(stored, truth, event.controls.detection.threshold)}

    def pick_truth(self, event, progress=None):
        """A ground-truth box picked from the list (its class when the model knows it)."""
        values = event.tab_values
        stored = self.results.stored(event.session)
        truth = values["region_truth"]
        if truth is None or not truth.fits(stored):
            raise ValueError("Load the annotations of this image first.")
        g = inputs.number(values["region_pick"], "Ground-truth box", 0, len(truth.truth.categories) - 1,
                          integer=True)
        name = truth.names.get(int(truth.truth.categories[g]), "")
        class_name = name if name in stored.result.class_names else ANY_CLASS
        request = RegionRequest(check_box(truth.truth.boxes[g], stored.result.size), class_name,
                                event.controls.detection.threshold)
        return {"region_class": class_name, **ask(stored, request, truth)}

    def follow_query(self, event, progress=None):
        """A row of the nearest-queries table: that query's layers against the region."""
        values = event.tab_values
        stored = self.results.stored(event.session)
        rows = (values["region_queries"] or {}).get("data") or []
        row = _row(event.point)
        if not 0 <= row < len(rows):
            raise ValueError("Pick a row of the nearest-queries table.")
        slot = inputs.number(rows[row][0], "Query slot", 0, stored.result.num_queries - 1, integer=True)
        try:
            outline = check_box([float(values[f"region_{c}"]) for c in ("x0", "y0", "x1", "y1")], stored.result.size)
        except (TypeError, ValueError):
            outline = None
        title = f"query {slot}: IoU with the region by layer"
        return {"region_slot": slot, **query_views(stored, slot, outline, title)}

    def explain_row(self, event, progress=None):
        """A row of the false-alarm table: why it is one, layer by layer."""
        values = event.tab_values
        stored = self.results.stored(event.session)
        return explain_alarm(stored, values["region_truth"], event.controls.detection.threshold, _row(event.point))

    def show_tab(self, event, progress=None):
        """The tab opened: the result's picture, classes and ground truth (or a hint to detect first)."""
        values = event.tab_values
        stored = self.results.store.peek(event.session.result_key) if event.session is not None else None
        if stored is None:
            return {"region_verdict": "Run a detection first (Detect), then ask about any box of it."}
        return {"region_image": stored.canvas, "region_corner": None,
                "region_class": gr.Dropdown(choices=[ANY_CLASS, *stored.result.class_names]),
                **truth_views(stored, values["region_truth"], event.controls.detection.threshold)}


def _row(point) -> int:
    """The row of a table click (Gradio's SelectData index: [row, column])."""
    row = point[0] if isinstance(point, (list, tuple)) else point
    return int(row) if row is not None else -1


def truth_views(stored: StoredResult, truth: RegionTruth | None, threshold: float) -> Views:
    """The ground-truth list (missed boxes marked) and the false-alarm table for `truth`."""
    return {"region_pick": gr.Dropdown(choices=truth_choices(stored, truth, threshold), value=None),
            "region_alarms": false_alarm_table(stored, truth, threshold)}
