"""The Data set tab: load an `analysis.json` (from `python -m dino_demo analyze`), or run a small
COCO-format set (an annotation file and its images, uploaded) with the page's model, and open any
listed miss or false alarm in the explorer at that box (its image detected, the Why? tab asked
about the box, the image's ground truth loaded).

Bounds, for a public page: at most MAX_SET_IMAGES images listed per run (each listed entry is a
run, duplicates too), the annotations and categories of `io.set_limits.SetLimits`, each image at
most `io.images.MAX_SIDE` pixels a side, JSON files at most MAX_JSON_BYTES and nested at most
`SetLimits.depth` deep (checked before parsing); images are read from the
uploads, or from a server folder only when `DINO_DEMO_DATA_DIRS` allows it (unset: no server folder).

`build(ui)` makes the components, `wire(ui, page)` connects them through the page's events
(`events.PageEvents`; opening an item is one event: the page's Detect and the Why? tab's question);
handlers are plain functions.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from gradio import processing_utils
from PIL import Image

from .. import env
from ..explore.analysis import SCHEMA, GroundTruth, analyze
from ..io.images import MAX_SIDE
from ..io.set_limits import SetLimits, check_listed, read_json
from ..train.data import CocoDetectionSet
from . import choices, gpu, inputs
from .detect import Detect
from .files import write_atomically
from .region_tab import ANY_CLASS, RegionRequest, RegionTruth, ask, truth_for, truth_views

MAX_SET_IMAGES = 50
MAX_JSON_BYTES = 32 * 1024 ** 2
MAX_ROWS = 2000            # misses and false alarms listed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

Views = dict[str, object]


@dataclass(frozen=True)
class Item:
    """A listed miss or false alarm: its image, `what` ("miss" / "false alarm"), category,
    `box` [4] xyxy pixels, verdict or kind, and the one-line explanation."""

    file_name: str
    what: str
    category_id: int
    box: tuple[float, float, float, float]
    reason: str
    explanation: str


@dataclass(frozen=True)
class LoadedAnalysis:
    """The tab's state: the analysis `document`, the image file of each file name (uploads or an
    allowed folder), the COCO annotations when known (all of an image's ground truth) and the
    listed `items`."""

    document: dict
    images: dict[str, str]
    coco: dict | None
    items: tuple[Item, ...]

    def category_name(self, category: int) -> str:
        for row in self.document.get("per_category", []):
            if row.get("category_id") == category:
                return str(row.get("name", category))
        return str(category)


# -- handlers --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Uploads:
    """Uploaded files sorted: an analysis document, COCO annotations, images by file name."""

    analysis: dict | None
    coco: dict | None
    coco_path: str | None
    images: dict[str, str]

    @classmethod
    def of(cls, files) -> "Uploads":
        analysis = coco = coco_path = None
        images: dict[str, str] = {}
        for file in files or []:
            path = file.get("path") if isinstance(file, dict) else str(file)
            name = Path((file.get("orig_name") if isinstance(file, dict) else None) or path).name
            suffix = Path(name).suffix.lower()
            if suffix == ".json":
                data = _read_json(Path(path), name)
                if isinstance(data, dict) and data.get("schema") == SCHEMA:
                    analysis = data
                elif isinstance(data, dict) and isinstance(data.get("images"), list) and "annotations" in data:
                    check_listed(data, name, SetLimits.reading())
                    coco, coco_path = data, path
                else:
                    raise ValueError(f"{name} is neither an analysis.json nor a COCO annotation file.")
            elif suffix in IMAGE_SUFFIXES:
                images[name] = path
            else:
                raise ValueError(f"{name}: upload .json files and images ({', '.join(IMAGE_SUFFIXES)}).")
        if len(images) > MAX_SET_IMAGES:
            raise ValueError(f"At most {MAX_SET_IMAGES} images per set here ({len(images)} uploaded); "
                             f"run `python -m dino_demo analyze` for larger sets.")
        return cls(analysis, coco, coco_path, images)


def load_or_run(models, files, folder: str, model: choices.ModelChoice, threshold: float, cache_dir: str,
                progress=None) -> Views:
    """Load an uploaded analysis.json, or run the uploaded COCO set with `model`."""
    uploads = Uploads.of(files)
    images = dict(uploads.images)
    if folder and folder.strip():
        images = {**_folder_images(folder.strip(), uploads), **images}
    if uploads.analysis is not None:
        document = uploads.analysis
    elif uploads.coco is not None:
        document = run_set(models, uploads, model, threshold, progress)
    else:
        raise ValueError("Upload an analysis.json, or a COCO annotation file with its images.")
    return loaded_views(LoadedAnalysis(document, images, uploads.coco, _items(document)), cache_dir)


def run_set(models, uploads: Uploads, model: choices.ModelChoice, threshold: float, progress=None) -> dict:
    """The analysis of the uploaded images that the annotation file lists, with `model`."""
    coco = uploads.coco
    listed = [i for i in coco["images"] if isinstance(i, dict) and Path(str(i.get("file_name", ""))).name
              in uploads.images]
    if not listed:
        raise ValueError("None of the uploaded images is listed in the annotation file (matched by file name).")
    ids = {int(i["id"]) for i in listed}
    annotations = [a for a in coco.get("annotations", []) if isinstance(a, dict) and a.get("image_id") in ids]
    # What runs is bounded by what is listed: each listed entry is a model run, duplicates too.
    check_listed({**coco, "images": listed, "annotations": annotations},
                 Path(uploads.coco_path or "annotations.json").name, SetLimits(images=MAX_SET_IMAGES))
    for entry in listed:   # sizes from the files' headers, before anything is decoded
        name = Path(str(entry["file_name"])).name
        try:
            with Image.open(uploads.images[name]) as opened:
                size = opened.size
        except (OSError, ValueError):
            raise ValueError(f"{name} is not an image this app can read.") from None
        if max(size) > MAX_SIDE:
            raise ValueError(f"{name} is larger than {MAX_SIDE} pixels a side.")
        if (entry.get("width", size[0]), entry.get("height", size[1])) != size:
            raise ValueError(f"{name} is {size[0]}x{size[1]} but the annotation file says "
                             f"{str(entry.get('width'))[:12]}x{str(entry.get('height'))[:12]}.")
    subset = {**coco, "images": [{**i, "file_name": Path(str(i["file_name"])).name} for i in listed],
              "annotations": annotations}
    detector = models.load(model)
    with tempfile.TemporaryDirectory(prefix="dino-set-") as folder:
        for entry in subset["images"]:
            shutil.copyfile(uploads.images[entry["file_name"]], Path(folder) / entry["file_name"])
        (Path(folder) / "annotations.json").write_text(json.dumps(subset))
        try:
            dataset = CocoDetectionSet(folder, Path(folder) / "annotations.json")
        except ValueError as error:  # its messages name files: the visitor's names, not this server's folder
            message = str(error).replace(str(Path(folder) / "annotations.json"), "the annotation file")
            raise ValueError(message.replace(str(folder), "the uploaded set").splitlines()[0]) from None
        names = [dataset.coco.imgs[i]["file_name"] for i in dataset.ids]
        on_image = None if progress is None else (lambda done, total: progress(done / total, desc="Analysing"))
        run = gpu.gpu_function(analyze, gpu.BASE_SECONDS + 2 * len(names))
        return run(detector, dataset, threshold=threshold, file_names=names.__getitem__,
                   model_id=model.model_id, settings={"annotations": Path(uploads.coco_path or "").name},
                   on_image=on_image)


def loaded_views(loaded: LoadedAnalysis, cache_dir: str) -> Views:
    """The tab's views of a loaded analysis; its document is offered as a download (a file in
    `cache_dir`, named by its content)."""
    document = loaded.document
    s = document.get("summary", {})
    verdicts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.get("misses_by_verdict", {}).items()) or "none"
    kinds = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.get("false_alarms_by_kind", {}).items()) or "none"
    missing = len({i.file_name for i in loaded.items} - set(loaded.images))
    summary = (f"**{document.get('model', {}).get('id', '?')}** on {s.get('images', 0)} images at threshold "
               f"{document.get('settings', {}).get('threshold', '?')}: AP {s.get('AP', 0):.3f}, AP50 "
               f"{s.get('AP50', 0):.3f}; {s.get('true_positives', 0)} true positives, "
               f"{s.get('false_positives', 0)} false positives, {s.get('false_negatives', 0)} misses.\n\n"
               f"Misses: {verdicts}. False alarms: {kinds}.\n\n"
               + ("Click a row to open its image in the explorer at that box (the page's model runs on it)."
                  if not missing else f"{missing} listed images are not available here (upload them to open them)."))
    text = json.dumps(document, indent=1)
    out = Path(cache_dir) / processing_utils.hash_bytes(text.encode()) / "analysis.json"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(out, text)
    return {"analysis_state": loaded, "analysis_summary": summary,
            "analysis_categories": pd.DataFrame(document.get("per_category", [])),
            "analysis_sizes": pd.DataFrame(document.get("per_size", [])),
            "analysis_items": items_table(loaded), "analysis_download": str(out)}


def items_table(loaded: LoadedAnalysis) -> pd.DataFrame:
    rows = [[n, item.file_name, item.what, loaded.category_name(item.category_id), item.reason.replace("_", " "),
             ", ".join(f"{v:.0f}" for v in item.box), item.explanation]
            for n, item in enumerate(loaded.items)]
    return pd.DataFrame(rows, columns=["#", "image", "what", "class", "verdict / kind", "box", "explanation"])


def open_item(loaded: LoadedAnalysis | None, row: int, cache_dir: str) -> Views:
    """The explorer's inputs for item `row`: its image (a PNG named as in the set), the box,
    its class, and the image's ground truth for the Why? tab."""
    if loaded is None:
        raise ValueError("Load an analysis first.")
    if not 0 <= row < len(loaded.items):
        raise ValueError(f"Pick one of the {len(loaded.items)} listed rows.")
    item = loaded.items[row]
    path = loaded.images.get(item.file_name)
    if path is None:
        raise ValueError(f"{item.file_name} is not available here: upload it with the analysis.")
    with Image.open(path) as opened:
        if max(opened.size) > MAX_SIDE:
            raise ValueError(f"{item.file_name} is larger than {MAX_SIDE} pixels a side.")
        array = np.asarray(opened.convert("RGB"))
    data = processing_utils.encode_pil_to_bytes(Image.fromarray(array), "png")
    target = Path(cache_dir) / processing_utils.hash_bytes(data) / item.file_name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)
    size = array.shape[:2]
    name = loaded.category_name(item.category_id)
    truth = _truth(loaded, item.file_name, size)
    x0, y0, x1, y1 = item.box
    return {"image_in": str(target), "region_x0": x0, "region_y0": y0, "region_x1": x1, "region_y1": y1,
            "region_class": name, "region_truth": truth, "diagnose_tabs": gr.Tabs(selected="region")}


def open_in_explorer(services, event, loaded: LoadedAnalysis | None, row: int, cache_dir: str,
                     progress) -> Views:
    """Item `row` opened: its image detected with the event's model and controls (every view the
    Detect button draws), the Why? tab selected and asked about the item's box."""
    opened = open_item(loaded, row, cache_dir)
    detected = Detect(services).detect(replace(event, detect_values={**event.detect_values, "image_in": opened["image_in"]}),
                               progress)
    stored = services.results.stored(detected["session"])
    threshold = event.controls.detection.threshold
    box = [opened[f"region_{c}"] for c in ("x0", "y0", "x1", "y1")]
    class_name = opened["region_class"] if opened["region_class"] in stored.result.class_names else ANY_CLASS
    request = RegionRequest.parse(stored, *box, class_name, threshold)
    truth = opened["region_truth"]
    return {**detected, **opened, "region_class": gr.Dropdown(choices=[ANY_CLASS, *stored.result.class_names],
                                                              value=class_name),
            **ask(stored, request, truth), **truth_views(stored, truth, threshold)}


def _truth(loaded: LoadedAnalysis, file_name: str, size: tuple[int, int]) -> RegionTruth | None:
    """The image's ground truth: all of it from the annotations, else the misses the analysis lists."""
    if loaded.coco is not None:
        try:
            return truth_for(loaded.coco, file_name, size)
        except ValueError:
            pass
    record = next((r for r in loaded.document.get("images", []) if r.get("file_name") == file_name), None)
    if record is None:
        return None
    misses = record.get("false_negatives", [])
    annotations = [{"id": m["annotation_id"], "category_id": m["category_id"],
                    "bbox": [m["box_xyxy"][0], m["box_xyxy"][1], m["box_xyxy"][2] - m["box_xyxy"][0],
                             m["box_xyxy"][3] - m["box_xyxy"][1]]} for m in misses]
    names = {int(r["category_id"]): str(r["name"]) for r in loaded.document.get("per_category", [])}
    return RegionTruth(file_name, size, GroundTruth.of(annotations), names)


def _items(document: dict) -> tuple[Item, ...]:
    items = []
    try:
        for record in document.get("images", []):
            for miss in record.get("false_negatives", []):
                items.append(Item(str(record["file_name"]), "miss", int(miss["category_id"]),
                                  tuple(float(v) for v in miss["box_xyxy"]), str(miss["verdict"]),
                                  str(miss.get("explanation", ""))))
            for alarm in record.get("false_positives", []):
                items.append(Item(str(record["file_name"]), "false alarm", int(alarm["category_id"]),
                                  tuple(float(v) for v in alarm["box_xyxy"]), str(alarm["kind"]),
                                  str(alarm.get("explanation", ""))))
            if len(items) >= MAX_ROWS:
                break
    except (KeyError, TypeError, ValueError):
        raise ValueError("This analysis.json is malformed (see docs/analysis.md for its format).") from None
    return tuple(items[:MAX_ROWS])


def _folder_images(folder: str, uploads: Uploads) -> dict[str, str]:
    allowed = env.data_dirs()
    path = Path(folder).expanduser().resolve()
    if not allowed or not any(path.is_relative_to(a) for a in allowed):
        raise ValueError(f"This app reads no server folder outside {env.DATA_DIRS_VARIABLE} "
                         f"({'unset' if not allowed else 'set elsewhere'}): upload the images instead.")
    if not path.is_dir():
        raise ValueError("No such folder among the allowed ones.")
    files = {}
    for p in sorted(path.iterdir())[: 10 * MAX_SET_IMAGES]:
        if p.suffix.lower() in IMAGE_SUFFIXES and p.resolve().is_relative_to(path):
            files[p.name] = str(p)
    return files


def _read_json(path: Path, name: str):
    return read_json(path, name, SetLimits(json_bytes=MAX_JSON_BYTES))


# -- events ----------------------------------------------------------------------------------------

def build(ui: dict) -> None:
    with gr.Tab("Data set", id="dataset"):
        # States inside the Tab: one directly inside gr.Tabs takes a tab's place in its bar.
        ui["analysis_state"] = gr.State(None)
        gr.Markdown("Misses and false alarms of a whole set: upload an **analysis.json** written by "
                    "`python -m dino_demo analyze` (with its images, to open them), or a **COCO annotation file "
                    f"with its images** (at most {MAX_SET_IMAGES}) to run the page's model on them.",
                    elem_classes=["caption"])
        with gr.Row():
            ui["analysis_files"] = gr.File(file_count="multiple", label="analysis.json / annotations.json + images",
                                           elem_id="analysis-files", height=120)
            with gr.Column(min_width=240):
                folder_label = f"or a server image folder (only under {env.DATA_DIRS_VARIABLE})"
                ui["analysis_folder"] = gr.Textbox(label=folder_label,
                                                   elem_id="analysis-folder")
                ui["analysis_threshold"] = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Threshold (for a run)",
                                                     elem_id="analysis-threshold")
                ui["analysis_run"] = gr.Button("Load / run", variant="primary", elem_id="analysis-run")
        ui["analysis_summary"] = gr.Markdown("", elem_id="analysis-summary")
        ui["analysis_download"] = gr.DownloadButton("analysis.json", size="sm", elem_id="analysis-download")
        with gr.Row():
            ui["analysis_categories"] = gr.Dataframe(interactive=False, label="Per category", max_height=260)
            ui["analysis_sizes"] = gr.Dataframe(interactive=False, label="Per size (COCO areas)")
        ui["analysis_items"] = gr.Dataframe(interactive=False, label="Misses and false alarms, worst images first "
                                            "(click a row to open it in the explorer)", max_height=420,
                                            elem_id="analysis-items")


def wire(page) -> None:
    """Connect the tab (`page`: the page's `events.PageEvents`). Opening a row is one event: the
    item's image is detected as the Detect button would (the page's model and controls), then the
    Why? tab is asked about the item's box with the image's ground truth."""
    ui, services = page.ui, page.services
    own = {ui.analysis_files, ui.analysis_folder, ui.analysis_threshold, ui.analysis_state}
    on = {"inputs": page.inputs | own, "api_visibility": "private", "preprocess": False, "concurrency_id": "detect"}

    def load_set(event, progress=None):
        values = event.tab_values
        model = choices.resolve(*(event.detect_values.get(name) for name in ("model_choice", "checkpoint",
                                                                            "variant")))
        threshold = inputs.number(values["analysis_threshold"], "Threshold", 0.0, 1.0)
        return load_or_run(services.models, values["analysis_files"], values["analysis_folder"] or "", model, threshold,
                           ui.analysis_download.GRADIO_CACHE, progress)

    def open_row(event, progress=None):
        values = event.tab_values
        row = event.point[0] if isinstance(event.point, (list, tuple)) else event.point
        return open_in_explorer(services, event, values["analysis_state"], int(row), ui.image_in.GRADIO_CACHE,
                                progress)

    gr.on([ui.analysis_run.click], page.handler(load_set, redraw=False), outputs=page.tab_outputs("analysis_"),
          show_progress="full",
          show_progress_on=[ui.analysis_summary, ui.analysis_items], **on)
    # Every view of the page changes, as with Detect.
    gr.on([ui.analysis_items.select], page.handler(open_row, selected=True, redraw=False), outputs=page.outputs,
          show_progress="full",
          **on)
