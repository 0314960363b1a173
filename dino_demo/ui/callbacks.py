"""What the page does: one method per user action, each a plain function of the controls' values
returning every view it changes, as a dict keyed by view name (the layout maps names to
components). No Gradio components are created or wired here.

A Detect runs the model once (`explore.inference.run`) and stores the result in the app-wide
`ResultStore`; every other action re-draws from that stored result with `explore.views` and
`explore.visualize`, without running the model again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from ..explore.inference import InferenceResult, run
from ..explore.models import ModelCache
from ..explore.views import (
    DetectionView,
    detection_at,
    detection_view,
    proposal_view,
    refinement_view,
    sampling_view,
)
from ..explore.visualize import (
    render_detections,
    render_proposals,
    render_refinement,
    render_sampling,
)
from ..io.images import MAX_SIDE, load_image
from ..io.preprocess import model_input_size
from ..io.results import coco_image_id, coco_results, detections_document, image_record
from ..paths import EXAMPLES_DIR
from . import choices, gpu, inputs
from .files import write_atomically
from .memory import release_freed_memory
from .session import Session
from .settings import AppSettings
from .store import ResultStore, StoredResult

log = logging.getLogger("dino_explorer")

Views = dict[str, object]
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)


@dataclass(frozen=True)
class DetectRequest:
    """A Detect's parsed inputs."""

    path: str
    file_name: str
    model: choices.ModelChoice
    max_input: int
    options: inputs.DetectionOptions


class Explorer:
    """The page's behaviour over app-wide services: the model cache, the result store and the
    folder of download files (removed with the app)."""

    def __init__(self, settings: AppSettings, *, result_budget_bytes: int | None = None):
        self.settings = settings
        self.models = ModelCache(capacity=2, device=settings.device)
        self.store = ResultStore(result_budget_bytes or settings.result_budget_mb * 1024**2)
        # Model runs at a time. Taken only around the run itself: loading (downloading) a model, or
        # reading an image, never holds up another visitor's run.
        self._model_slot = threading.BoundedSemaphore(settings.model_concurrency)
        self._run = gpu.gpu_function(run)  # on ZeroGPU, the GPU is held only while the model runs
        self._files = tempfile.TemporaryDirectory(prefix="dino-explorer-")
        self._example_digests: dict[int, str] | None = None
        self._example_lock = threading.Lock()

    # -- sessions ---------------------------------------------------------------------------
    def session(self, session: Session | None, request: gr.Request | None) -> Session:
        """This request's Session (created on its first Detect)."""
        if session is not None:
            return session
        raw = getattr(request, "session_hash", None) or "anonymous"
        session_id = re.sub(r"[^A-Za-z0-9_-]", "", raw)[:64] or "anonymous"
        return Session(id=session_id, folder=Path(self._files.name) / session_id)

    def close_session(self, session: Session | None) -> None:
        """The page closed or its state expired: drop its result and its files."""
        if session is None:
            return
        if not session.shared:
            self.store.discard(session.result_key)
        session.remove_files()

    def unload(self, request: gr.Request) -> None:
        """`demo.unload`: the browser tab closed. The session's files and result go now, not
        when Gradio finally expires its state."""
        closing = self.session(None, request)
        self.store.discard(closing.id)
        closing.remove_files()

    def stored(self, session: Session | None) -> StoredResult:
        if session is None:
            return self.store.get(None)
        return self.store.get(session.result_key)

    # -- Detect -----------------------------------------------------------------------------
    def parse_detect(self, image, model_choice, checkpoint, variant, max_input, threshold, max_detections
                     ) -> DetectRequest:
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        model = choices.resolve(model_choice, checkpoint, variant)
        side = inputs.max_input_side(max_input)
        path, file_name = _uploaded_file(image)
        if not path:
            raise ValueError("Upload an image or pick an example first.")
        return DetectRequest(path, file_name, model, side, options)

    def compute(self, request: DetectRequest, session: Session, progress: Callable) -> StoredResult:
        """Run the model for a Detect (or reuse the example cache) and store the result."""
        progress(0.05, desc="Reading the image")
        try:
            loaded = load_image(request.path, max_side=MAX_SIDE)
        except ValueError as err:
            raise ValueError(f"Cannot use this image: {err}.") from None
        for note in loaded.notes:
            gr.Warning(f"Image {note}.")

        model_id = request.model.model_id
        progress(0.15, desc=f"Loading {model_id}")
        model, cfg = self._load_model(request.model, progress)
        h, w = loaded.array.shape[:2]
        input_size = model_input_size(cfg, h, w, request.max_input)

        example = self._example_key(request.path, request.model, input_size)
        stored = self.store.peek(example) if example else None
        if stored is None:
            progress(0.3, desc=f"Running DINO on {input_size[1]}x{input_size[0]} pixels")
            try:
                with self._model_slot:
                    result = self._run(model, cfg, loaded.array, max_size=request.max_input,
                                       precision=self.settings.precision, model_id=model_id)
            except RuntimeError as err:
                log.exception("inference failed")
                raise ValueError(f"Detection failed: {err}") from None
            stored, reused = StoredResult.of(result, request.file_name, min(request.max_input, cfg.max_size)), False
        else:
            reused = True
        if not session.shared:
            self.store.discard(session.result_key)
        session.result_key = self.store.put(stored, example or session.id)
        session.shared, session.reused = example is not None, reused
        return stored

    def preload(self, model_choice: str) -> None:
        """Load a model now (on ZeroGPU: at start-up, outside any GPU function, as it requires)."""
        self._load_model(choices.resolve(model_choice, "", None))

    def _load_model(self, model: choices.ModelChoice, progress: Callable | None = None):
        def downloaded(done: int, total: int | None) -> None:  # bytes so far, of total
            if progress is not None:
                progress((done, total) if total else 0.15, desc=f"Downloading {model.model_id}", unit="bytes")

        try:
            return self.models.get(model.source, model.variant, downloaded)
        except ValueError as err:  # CheckpointError and config errors carry a message for the user
            failure = ValueError(f"Cannot use this checkpoint: {err}")
        except (OSError, RuntimeError) as err:
            log.warning("loading %s failed: %s", model.model_id, err)
            failure = ValueError("Loading the model failed (see the server log).")
        # Outside the handler: the failed load's tensors are gone before the memory goes back.
        release_freed_memory()
        raise failure

    def detect(self, session, image, model_choice, checkpoint, variant, max_input, threshold, max_detections,
               top_n, proposal_color, layer, head, level, point_color, request: gr.Request = None,
               progress=gr.Progress()) -> Views:
        """The Detect button: run the model, then draw every view once (the first detection's
        query selected)."""
        parsed = self.parse_detect(image, model_choice, checkpoint, variant, max_input, threshold, max_detections)
        proposals = inputs.ProposalOptions.parse(top_n, proposal_color)
        inputs.one_of(point_color, "Colour points by", inputs.POINT_COLORS)
        session = self.session(session, request)
        stored = self.compute(parsed, session, progress)
        progress(0.95, desc="Drawing")
        result = stored.result
        view = detection_view(result, parsed.options.threshold, parsed.options.max_detections)
        slot = _first_slot(result, view)
        m, l, _ = result.attention_shape
        k = result.num_layers
        sampling = inputs.SamplingOptions(k - 1, None, None, point_color)
        return {
            "session": session,
            **self._detection_views(stored, view, slot, session, parsed.options),
            **self._query_views(stored, slot, sampling),
            "proposal_image": self._proposals(stored, view, proposals),
            "runtime": _runtime_markdown(stored, session.reused),
            "layer": gr.Slider(minimum=1, maximum=k, value=k, step=1),
            "head": gr.Radio(choices=[inputs.ALL] + [str(i) for i in range(1, m + 1)], value=inputs.ALL),
            "level": gr.Radio(choices=[inputs.ALL] + [str(i) for i in range(1, l + 1)], value=inputs.ALL),
            "top_n": gr.Slider(maximum=result.num_queries, value=min(proposals.top_n, result.num_queries)),
        }

    def detect_api(self, session, image, model_choice, checkpoint, variant, max_input, threshold, max_detections,
                   request: gr.Request = None, progress=gr.Progress()) -> Views:
        """`/detect` for API clients: the annotated image and detections.json; the result is stored
        for `/inspect` in the same session."""
        parsed = self.parse_detect(image, model_choice, checkpoint, variant, max_input, threshold, max_detections)
        session = self.session(session, request)
        stored = self.compute(parsed, session, progress)
        view = detection_view(stored.result, parsed.options.threshold, parsed.options.max_detections)
        return {"session": session, "det_image": self._draw_detections(stored, view, None),
                "det_json": _document(stored, view, parsed.options)}

    # -- re-drawing -------------------------------------------------------------------------
    def change_detection_options(self, session, threshold, max_detections, slot, top_n, proposal_color) -> Views:
        """Threshold or max detections released: the detections, their lists and files, and the
        proposals (which of them became detections)."""
        if session is None or session.result_key is None:  # nothing detected yet: nothing to re-draw
            return {}
        stored = self.stored(session)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(stored.result, options.threshold, options.max_detections)
        slot = None if slot is None else inputs.query_slot(slot, stored.result.num_queries)
        return {**self._detection_views(stored, view, slot, session, options),
                "proposal_image": self._proposals(stored, view, inputs.ProposalOptions.parse(top_n, proposal_color))}

    def select_query(self, session, slot, threshold, max_detections, layer, head, level, point_color) -> Views:
        """A query picked in the list or typed as a slot number: highlight it and show its
        sampling points and refinement."""
        stored = self.stored(session)
        result = stored.result
        slot = inputs.query_slot(slot, result.num_queries)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(result, options.threshold, options.max_detections)
        return {"query": gr.Dropdown(choices=_query_choices(result, view, slot), value=slot), "slot": slot,
                "det_image": self._draw_detections(stored, view, slot),
                **self._query_views(stored, slot, self._sampling_options(result, layer, head, level, point_color))}

    def click_detections(self, session, threshold, max_detections, layer, head, level, point_color,
                         evt: gr.SelectData) -> Views:
        """A click on the detections image selects the smallest detection containing it (else
        the nearest)."""
        stored = self.stored(session)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(stored.result, options.threshold, options.max_detections)
        x, y = evt.index
        hit = detection_at(view, x / stored.scale, y / stored.scale)
        if hit is None:
            gr.Info("No detections above the threshold to select.")
            return {}
        return self.select_query(session, int(view.query_slots[hit]), threshold, max_detections, layer, head, level,
                                 point_color)

    def inspect(self, session, slot, layer, head, level, point_color) -> Views:
        """Sampling points of one query in one decoder layer (`/inspect`)."""
        stored = self.stored(session)
        result = stored.result
        slot = inputs.query_slot(slot, result.num_queries)
        return self._sampling_views(stored, slot, self._sampling_options(result, layer, head, level, point_color))

    def change_proposals(self, session, top_n, proposal_color, threshold, max_detections) -> Views:
        if session is None or session.result_key is None:
            return {}
        stored = self.stored(session)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(stored.result, options.threshold, options.max_detections)
        return {"proposal_image": self._proposals(stored, view, inputs.ProposalOptions.parse(top_n, proposal_color))}

    def choose_model(self, model_choice) -> Views:
        """The model list changed: the path box only for a custom checkpoint, the variant choice for
        any checkpoint file, and the input-size slider sized for the model when it is known."""
        choice = str(model_choice or "")
        views: Views = {"checkpoint": gr.Textbox(visible=choice == choices.CUSTOM),
                        "variant": gr.Dropdown(visible=not choice.startswith(("untrained:", "zoo:"))),
                        "shipped_note": gr.Column(visible=choice == choices.SHIPPED)}
        try:
            config = choices.resolve(choice, "-", None).config
        except ValueError:
            config = None
        if config is not None:
            views["max_input"] = gr.Slider(maximum=config.max_size, value=config.max_size,
                                           label=_max_input_label(config))
        return views

    # -- views ------------------------------------------------------------------------------
    def _sampling_options(self, result: InferenceResult, layer, head, level, point_color) -> inputs.SamplingOptions:
        m, l, _ = result.attention_shape
        return inputs.SamplingOptions.parse(layer, head, level, point_color, layers=result.num_layers, heads=m,
                                            levels=l)

    def _detection_views(self, stored: StoredResult, view: DetectionView, slot: int | None, session: Session,
                         options: inputs.DetectionOptions) -> Views:
        result = stored.result
        document = _document(stored, view, options)
        folder = session.downloads()
        detections_file, coco_file = folder / "detections.json", folder / "coco_results.json"
        write_atomically(detections_file, json.dumps(document, indent=1))
        write_atomically(coco_file, json.dumps(coco_results(document)))
        listed = _query_choices(result, view, slot)
        if slot is None or slot not in [value for _, value in listed]:
            slot = listed[0][1] if listed else None
        return {
            "det_image": self._draw_detections(stored, view, slot),
            "det_json": document,
            "table": _table(view),
            "download_json": str(detections_file),
            "download_coco": str(coco_file),
            "query": gr.Dropdown(choices=listed, value=slot),
            "slot": gr.Number(value=slot, maximum=result.num_queries - 1),
            "notice": _notice(stored, view, options, session.reused),
        }

    def _query_views(self, stored: StoredResult, slot: int | None, sampling: inputs.SamplingOptions) -> Views:
        if slot is None:
            return {}
        boxes = refinement_view(stored.result, slot)
        rows = [["proposal" if t == 0 else f"layer {t}", *[round(float(v), 1) for v in b]]
                for t, b in enumerate(boxes)]
        return {**self._sampling_views(stored, slot, sampling),
                "refine_image": render_refinement(stored.canvas, boxes * stored.scale), "refine_table": rows}

    def _sampling_views(self, stored: StoredResult, slot: int, options: inputs.SamplingOptions) -> Views:
        result = stored.result
        view = sampling_view(result, slot, options.layer, options.head, options.level)
        k = stored.scale
        overlay = render_sampling(stored.canvas, view.reference_box * k, view.points * k, view.weights, view.heads,
                                  view.levels, color_by=options.color_by)
        points = {
            "query_slot": slot, "layer": options.layer + 1,
            "heads": [h + 1 for h in view.heads], "levels": [lv + 1 for lv in view.levels],
            "shape": list(view.weights.shape),
            "reference_box_xyxy": [round(float(v), 2) for v in view.reference_box],
            "points_xy": np.round(view.points, 2).tolist(),
            "weights": np.round(view.weights, 5).tolist(),
        }
        levels = view.mass.shape[1]
        mass = [[f"head {i + 1}", *[round(float(v), 3) for v in row]] for i, row in enumerate(view.mass)]
        mass.append(["all heads", *[round(float(v), 3) for v in view.mass.mean(0)]])
        return {"sampling_image": overlay, "points_json": points,
                "mass": pd.DataFrame(mass, columns=["head"] + [f"level {i + 1}" for i in range(levels)])}

    def _draw_detections(self, stored: StoredResult, view: DetectionView, slot: int | None) -> np.ndarray:
        hits = np.flatnonzero(view.query_slots == slot) if slot is not None else np.array([], int)
        captions = [f"{name} {score:.2f}" for name, score in zip(view.names, view.scores)]
        return render_detections(stored.canvas, view.boxes * stored.scale, captions, view.labels,
                                 selected=int(hits[0]) if hits.size else None)

    def _proposals(self, stored: StoredResult, view: DetectionView, options: inputs.ProposalOptions) -> np.ndarray:
        proposals = proposal_view(stored.result, options.top_n)
        final = np.isin(proposals.query_slots, view.query_slots)
        return render_proposals(stored.canvas, proposals.boxes * stored.scale, proposals.scores, proposals.levels,
                                final, color_by=options.color_by)

    # -- the example cache -------------------------------------------------------------------
    def _example_key(self, path: str, model: choices.ModelChoice, input_size: tuple[int, int]) -> str | None:
        """Store key of an example image's result (shared by every session), when `path` holds one
        of the example images (Gradio hands over a copy), else None."""
        with self._example_lock:
            if self._example_digests is None:
                self._example_digests = {p.stat().st_size: _sha256(p) for p in example_files()}
        try:
            if Path(path).stat().st_size not in self._example_digests:
                return None
            digest = _sha256(Path(path))
        except OSError:
            return None
        if digest not in self._example_digests.values():
            return None
        return "example:" + hashlib.sha256(repr((digest, model.source, model.variant, input_size)).encode()).hexdigest()


# -- small pure helpers ---------------------------------------------------------------------

def _uploaded_file(image) -> tuple[str | None, str]:
    """(path, original file name) of an image input: a FileData dict (raw payload) or a path."""
    if image is None:
        return None, ""
    if isinstance(image, dict):
        path = image.get("path")
        return path, Path(image.get("orig_name") or path or "").name
    return str(image), Path(str(image)).name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_slot(result: InferenceResult, view: DetectionView) -> int | None:
    listed = _query_choices(result, view, None)
    return listed[0][1] if listed else None


def _query_choices(result: InferenceResult, view: DetectionView, slot: int | None) -> list[tuple[str, int]]:
    """(label, query slot) of the detections shown; the best ones below the threshold when none is
    above it; and the selected slot, whatever it is, so that the list always shows the selection."""
    listed = [(f"{name} {score:.2f} (slot {s})", int(s)) for name, score, s in zip(view.names, view.scores,
                                                                                   view.query_slots)]
    if not listed:
        below = detection_view(result, 0.0, 10)
        listed = [(f"{name} {score:.2f} (slot {s}, below threshold)", int(s))
                  for name, score, s in zip(below.names, below.scores, below.query_slots)]
    if slot is not None and slot not in [value for _, value in listed]:
        listed.append((f"slot {slot}", int(slot)))
    return listed


def _document(stored: StoredResult, view: DetectionView, options: inputs.DetectionOptions) -> dict:
    result = stored.result
    entry = image_record(result, view, image_id=coco_image_id(stored.file_name, 1), file_name=stored.file_name)
    return detections_document([entry], model_id=result.model_id, variant=result.variant,
                               threshold=options.threshold, max_detections=options.max_detections,
                               max_input_side=stored.max_input)


def _table(view: DetectionView) -> list[list]:
    return [[i + 1, name, round(float(s), 3), int(q), *[round(float(v), 1) for v in b]]
            for i, (name, s, q, b) in enumerate(zip(view.names, view.scores, view.query_slots, view.boxes))]


def _notice(stored: StoredResult, view: DetectionView, options: inputs.DetectionOptions, reused: bool) -> str:
    lines = []
    if len(view) == 0:
        best = stored.result.detections.scores
        best_score = float(best[0]) if len(best) else 0.0
        lines.append(f"No detection reaches the score threshold {options.threshold:.2f} (the best scores "
                     f"{best_score:.2f}): lower it to see more. The query list offers the best ones anyway.")
    if reused:
        lines.append("This example's result was computed earlier and reused: the timings in the Runtime tab "
                     "are from that run.")
    return "\n\n".join(lines)


def _max_input_label(config) -> str:
    return (f"Max input side (px; {config.name} resizes to {config.min_size} px short side, "
            f"at most {config.max_size} px long side, below this cap)")


def _runtime_markdown(stored: StoredResult, reused: bool) -> str:
    result = stored.result
    t = result.timings
    backend, reason = result.backend
    h, w = result.size
    in_h, in_w = result.input_size
    rows = "\n".join(f"| {stage} | {t.get(stage, 0.0) * 1000:.1f} ms |"
                     for stage in ("preprocess", "backbone", "encoder", "decoder", "postprocess", "total"))
    m, l, p = result.attention_shape
    cached = " (an earlier run's, reused for this example)" if reused else ""
    return (
        f"**Model** {result.model_id} · **device** `{result.device}` · **deformable-attention op** "
        f"`{backend}` ({reason})\n\n"
        f"**Image** {w}x{h} px → **model input** {in_w}x{in_h} px (padded {result.padded_size[1]}x"
        f"{result.padded_size[0]}) · {result.num_queries} queries, {result.num_layers} decoder layers, "
        f"{m} heads × {l} levels × {p} points\n\n| stage | time{cached} |\n|---|---|\n{rows}"
    )
