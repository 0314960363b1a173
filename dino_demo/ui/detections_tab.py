"""The Detections tab: boxes with class and score, the table (one row per query), detections.json
and the COCO results list to read and download. Its handlers answer the score threshold and max
detections, a row of the table and a click on the picture (each selecting through `selection`).

`build(ui)` makes the components, `wire(page)` connects them; handlers are plain functions of
`(event, stored)`.
"""
from __future__ import annotations

import json

import gradio as gr

from ..explore import panels
from ..runtime.detections import query_rows
from ..explore.options import SELECTED_QUERY, DetectionOptions
from ..explore.stored import StoredResult
from ..explore.draw.data import detections_at
from ..runtime.detections import DetectionView
from ..io.results import coco_image_id, coco_results, detections_document, image_record
from . import inputs, selection
from .events import PageEvent, Views
from .files import write_atomically
from .session import Session
from .widgets import caption, picture


def build(ui) -> None:
    with gr.Tab("Detections", id="detections"):
        caption("Detections, one box per query (its classes together): click a box to inspect its query "
                "(boxes inside each other are all offered).")
        ui["det_image"] = picture("det-image")
        with gr.Row():
            ui["download_json"] = gr.DownloadButton("detections.json", size="sm", elem_id="download-json")
            ui["download_coco"] = gr.DownloadButton("COCO results (for pycocotools)", size="sm",
                                                    elem_id="download-coco")
            ui["download_internals"] = gr.DownloadButton("internals.npz (all the arrays)", size="sm",
                                                         elem_id="download-internals")
        ui["table"] = gr.Dataframe(headers=["#", "label", "score", "slot", "x0", "y0", "x1", "y1"],
                                   interactive=False, max_height=260, elem_id="det-table")
        with gr.Accordion("detections.json (every (query, class) pair of the official post-processing)", open=False):
            ui["det_json"] = gr.JSON(label="Detections")


def wire(page) -> None:
    ui = page.ui
    page.when([ui.threshold.release, ui.max_detections.release], change_detection_options)
    page.when([ui.table.select], select_table_row, selected=True)
    page.when([ui.det_image.select], click_detections, selected=True)


# -- handlers --------------------------------------------------------------------------------------

def change_detection_options(event: PageEvent, stored: StoredResult) -> Views:
    """Threshold or max detections released: the detections, their lists and files, the
    proposals (which of them became detections), the selected query's fate and the heatmaps."""
    controls, result = event.controls, stored.result
    heat = selection.heatmap(controls, result)
    view = selection.detections(stored, controls)
    slot = selection.shown_slot(controls, result)
    listed = panels.listed_slot(result, view, slot)
    views = {**detection_views(stored, view, listed, event.session, controls.detection),
             "proposal_image": panels.proposals_image(stored, view, controls.proposals, listed),
             "query_info": "" if listed is None else panels.lineage_markdown(stored, listed, view,
                                                                             controls.detection.threshold)}
    if heat.source != SELECTED_QUERY or slot is None:  # else: the same query's, unchanged
        views["heatmap_image"] = panels.decoder_heatmaps(stored, view, listed, heat)
    return views


def select_table_row(event: PageEvent, stored: StoredResult) -> Views:
    """A row of the detections table clicked: select its query (one row per query)."""
    rows = query_rows(selection.detections(stored, event.controls))
    if not len(rows):
        return {}
    row = event.point[0] if isinstance(event.point, (list, tuple)) else event.point
    row = inputs.number(row, "Table row", 0, len(rows) - 1, integer=True)
    return selection.select_query(event, stored, int(rows.query_slots[row]))


def click_detections(event: PageEvent, stored: StoredResult) -> Views:
    """A click on the detections image selects the smallest detection containing it (else
    the nearest) and, when several contain it, offers all of them."""
    view = selection.detections(stored, event.controls)
    x, y = event.point
    hits = detections_at(view, x / stored.scale, y / stored.scale)
    if not hits:
        gr.Info("No detections above the threshold to select.")
        return {}
    views = selection.select_query(event, stored, int(view.query_slots[hits[0]]))
    by_slot: dict[int, list[str]] = {}  # one query slot can be several detections (one per class)
    for i in hits:
        by_slot.setdefault(int(view.query_slots[i]), []).append(f"{view.names[i]} {view.scores[i]:.2f}")
    listed = [(f"{' · '.join(names)} (slot {s})", s) for s, names in by_slot.items()]
    return {**views, "candidates": selection.candidates(listed, "Boxes under the cursor, smallest first")}


# -- views -----------------------------------------------------------------------------------------

def detection_views(stored: StoredResult, view: DetectionView, slot: int | None, session: Session,
                    options: DetectionOptions) -> Views:
    """The tab's views (the files written to the session's folder), the query list and slot box
    (`slot` highlighted) and the notice above them."""
    result = stored.result
    document = detections_json(stored, view, options)
    folder = session.downloads()
    detections_file, coco_file = folder / "detections.json", folder / "coco_results.json"
    write_atomically(detections_file, json.dumps(document, indent=1))
    write_atomically(coco_file, json.dumps(coco_results(document)))
    slot = panels.listed_slot(result, view, slot)
    return {
        "det_image": panels.detections_image(stored, view, slot),
        "det_json": document,
        "table": panels.detection_table(view, slot),
        "download_json": str(detections_file),
        "download_coco": str(coco_file),
        "query": gr.Dropdown(choices=panels.query_choices(result, view, slot), value=slot),
        "slot": gr.Number(value=slot, maximum=result.num_queries - 1),
        "notice": panels.notice_markdown(stored, view, options.threshold, session.reused),
        "candidates": gr.Radio(visible=False),
    }


def detections_json(stored: StoredResult, view: DetectionView, options: DetectionOptions) -> dict:
    """detections.json of the view (docs/formats.md)."""
    result = stored.result
    entry = image_record(result, view, image_id=coco_image_id(stored.file_name, 1), file_name=stored.file_name,
                         notes=stored.notes)
    return detections_document([entry], model_id=result.model_id, variant=result.variant,
                               threshold=options.threshold, max_detections=options.max_detections,
                               max_input_side=stored.max_input)
