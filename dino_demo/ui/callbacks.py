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

from ..explore import encoder
from ..explore.figures import render_detections
from ..explore.inference import InferenceResult, run
from ..explore.models import ModelCache
from ..explore.views import DetectionView, detections_at, detection_view
from ..io.images import MAX_SIDE, load_image
from ..io.internals import write_internals
from ..io.preprocess import model_input_size
from ..io.results import coco_image_id, coco_results, detections_document, image_record
from ..paths import EXAMPLES_DIR
from . import choices, families_ui, gpu, inputs, panels
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
    prompt: str = ""


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
        self._token_attention = gpu.gpu_function(encoder.token_attention, gpu.BASE_SECONDS)
        self._files = tempfile.TemporaryDirectory(prefix="dino-explorer-")
        self._example_digests: dict[int, str] | None = None
        self.token_attention = encoder.TokenAttentionCache()
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
    def parse_detect(self, image, model_choice, checkpoint, variant, max_input, threshold, max_detections,
                     prompt="") -> DetectRequest:
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        model = choices.resolve(model_choice, checkpoint, variant)
        side = inputs.max_input_side(max_input)
        path, file_name = _uploaded_file(image)
        if not path:
            raise ValueError("Upload an image or pick an example first.")
        return DetectRequest(path, file_name, model, side, options, families_ui.parse_prompt(prompt))

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

        example = None if request.prompt else self._example_key(request.path, request.model, input_size)
        stored = self.store.peek(example) if example else None
        if stored is None:
            progress(0.3, desc=f"Running DINO on {input_size[1]}x{input_size[0]} pixels: backbone")
            try:
                with self._model_slot:
                    result = self._run(model, cfg, loaded.array, max_size=request.max_input,
                                       precision=self.settings.precision, model_id=model_id,
                                       on_stage=None if gpu.on_zerogpu() else _stage_progress(progress),
                                       **({"prompt": request.prompt} if request.prompt else {}))
            except RuntimeError as err:
                log.exception("inference failed")
                raise ValueError(f"Detection failed: {err}") from None
            stored, reused = StoredResult.of(result, request.file_name, min(request.max_input, cfg.max_size),
                                             request.model, cfg.enc_layers), False
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
               top_n, proposal_color, layer, head, level, point_color, show=None,
               heat_source=inputs.HEATMAP_SOURCES[0], prompt="", request: gr.Request = None,
               progress=gr.Progress()) -> Views:
        """The Detect button: run the model, then draw every view once (the first detection's
        query selected; the encoder view waits for a click)."""
        parsed = self.parse_detect(image, model_choice, checkpoint, variant, max_input, threshold, max_detections,
                                   prompt)
        proposals = inputs.ProposalOptions.parse(top_n, proposal_color)
        inputs.one_of(point_color, "Colour points by", inputs.POINT_COLORS)
        ticked = inputs.extras(show)
        inputs.one_of(heat_source, "Heatmap of", inputs.HEATMAP_SOURCES)
        session = self.session(session, request)
        stored = self.compute(parsed, session, progress)
        progress(0.95, desc="Drawing")
        result = stored.result
        view = detection_view(result, parsed.options.threshold, parsed.options.max_detections)
        slot = _listed_slot(result, view, None)
        k = result.num_layers
        sampling = inputs.SamplingOptions(k - 1, None, None, point_color, inputs.OFFSETS in ticked, inputs.ZOOM in ticked)
        internals = write_internals(result, session.downloads() / "internals.npz", source=stored.file_name)
        return {
            "session": session,
            **self._detection_views(stored, view, slot, session, parsed.options),
            **self._query_views(stored, view, slot, sampling, inputs.HeatmapOptions(heat_source, k - 1, None),
                                parsed.options.threshold),
            "proposal_image": panels.proposals_image(stored, view, proposals, slot),
            "runtime": _runtime_markdown(stored, session.reused),
            "download_internals": str(internals),
            **_control_ranges(result, proposals.top_n),
            **self._encoder_reset(stored),
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

    def internals_api(self, session) -> Views:
        """`/internals`: the session's result as internals.npz (see `io.internals`)."""
        stored = self.stored(session)
        path = write_internals(stored.result, session.downloads() / "internals.npz", source=stored.file_name)
        return {"download_internals": str(path)}

    # -- re-drawing -------------------------------------------------------------------------
    def change_detection_options(self, session, threshold, max_detections, slot, top_n, proposal_color,
                                 heat_source=inputs.HEATMAP_SOURCES[0], heat_layer=None, heat_head=inputs.ALL) -> Views:
        """Threshold or max detections released: the detections, their lists and files, the
        proposals (which of them became detections), the selected query's fate and the heatmaps."""
        if session is None or session.result_key is None:  # nothing detected yet: nothing to re-draw
            return {}
        stored = self.stored(session)
        result = stored.result
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        heat = self._heatmap_options(result, heat_source, heat_layer, heat_head)
        view = detection_view(result, options.threshold, options.max_detections)
        listed = _listed_slot(result, view, None if slot is None else inputs.query_slot(slot, result.num_queries))
        views = {**self._detection_views(stored, view, listed, session, options),
                 "proposal_image": panels.proposals_image(stored, view,
                                                          inputs.ProposalOptions.parse(top_n, proposal_color), listed),
                 "query_info": "" if listed is None else panels.lineage_markdown(stored, listed, view, options.threshold)}
        if heat.source != inputs.HEATMAP_SOURCES[0] or slot is None:  # else: the same query's, unchanged
            views["heatmap_image"] = panels.decoder_heatmaps(stored, view, listed, heat)
        return views

    def select_query(self, session, slot, threshold, max_detections, layer, head, level, point_color, show=None,
                     top_n=100, proposal_color="score", heat_source=inputs.HEATMAP_SOURCES[0], heat_layer=None,
                     heat_head=inputs.ALL) -> Views:
        """A query picked in the list, typed as a slot number, chosen in the table or among the
        boxes under the cursor: highlight it everywhere and show its attention, layers and
        refinement."""
        if session is None or session.result_key is None:  # nothing detected yet: nothing to select
            return {}
        stored = self.stored(session)
        result = stored.result
        slot = inputs.query_slot(slot, result.num_queries)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        sampling = self._sampling_options(result, layer, head, level, point_color, show)
        heat = self._heatmap_options(result, heat_source, heat_layer, heat_head)
        proposals = inputs.ProposalOptions.parse(top_n, proposal_color)
        view = detection_view(result, options.threshold, options.max_detections)
        if heat.source != inputs.HEATMAP_SOURCES[0]:
            heat = None  # the heatmap of every shown detection: the selection does not change it
        return {"query": gr.Dropdown(choices=_query_choices(result, view, slot), value=slot), "slot": slot,
                "det_image": self._draw_detections(stored, view, slot), "table": panels.detection_table(view, slot),
                "proposal_image": panels.proposals_image(stored, view, proposals, slot),
                "candidates": gr.Radio(visible=False),
                **self._query_views(stored, view, slot, sampling, heat, options.threshold)}

    def type_slot(self, session, slot, shown, *options) -> Views:
        """A slot number typed (Enter, or leaving the box): select it, unless it is the query already
        shown (Enter and then a click elsewhere would otherwise draw every view twice)."""
        try:
            unchanged = shown is not None and float(slot) == float(shown)
        except (TypeError, ValueError):
            unchanged = False  # select_query says what is wrong with the value
        return {} if unchanged else self.select_query(session, slot, *options)

    def select_candidate(self, session, slot, *options) -> Views:
        """One of the boxes under the cursor chosen: select it, keeping the list of candidates."""
        views = self.select_query(session, slot, *options)
        views.pop("candidates")
        return views

    def select_table_row(self, session, threshold, max_detections, layer, head, level, point_color, show, top_n,
                         proposal_color, heat_source, heat_layer, heat_head, evt: gr.SelectData) -> Views:
        """A row of the detections table clicked: select its query."""
        stored = self.stored(session)
        parsed = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(stored.result, parsed.threshold, parsed.max_detections)
        if not len(view):
            return {}
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        row = inputs.number(row, "Table row", 0, len(view) - 1, integer=True)
        return self.select_query(session, int(view.query_slots[row]), threshold, max_detections, layer, head, level,
                                 point_color, show, top_n, proposal_color, heat_source, heat_layer, heat_head)

    def click_detections(self, session, threshold, max_detections, layer, head, level, point_color, show=None,
                         top_n=100, proposal_color="score", heat_source=inputs.HEATMAP_SOURCES[0], heat_layer=None,
                         heat_head=inputs.ALL, evt: gr.SelectData = None) -> Views:
        """A click on the detections image selects the smallest detection containing it (else
        the nearest) and, when several contain it, offers all of them."""
        stored = self.stored(session)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(stored.result, options.threshold, options.max_detections)
        x, y = evt.index
        hits = detections_at(view, x / stored.scale, y / stored.scale)
        if not hits:
            gr.Info("No detections above the threshold to select.")
            return {}
        rest = (threshold, max_detections, layer, head, level, point_color, show, top_n, proposal_color, heat_source,
                heat_layer, heat_head)
        views = self.select_query(session, int(view.query_slots[hits[0]]), *rest)
        by_slot: dict[int, list[str]] = {}  # one query slot can be several detections (one per class)
        for i in hits:
            by_slot.setdefault(int(view.query_slots[i]), []).append(f"{view.names[i]} {view.scores[i]:.2f}")
        candidates = [(f"{' / '.join(names)} (slot {s})", s) for s, names in by_slot.items()]
        return {**views, "candidates": _candidates(candidates, "Boxes under the cursor, smallest first")}

    def click_proposals(self, session, threshold, max_detections, layer, head, level, point_color, show, top_n,
                        proposal_color, heat_source, heat_layer, heat_head, evt: gr.SelectData) -> Views:
        """A click on the proposals image selects the query slot the smallest proposal under the
        cursor seeded (offering every proposal there when several are)."""
        stored = self.stored(session)
        options = inputs.ProposalOptions.parse(top_n, proposal_color)
        x, y = evt.index
        height, width = stored.canvas.shape[:2]
        if not (0 <= x < width and 0 <= y < height):  # the legend below the picture
            return {}
        slots = panels.proposals_at(stored, options.top_n, x / stored.scale, y / stored.scale)
        if not slots:
            return {}
        rest = (threshold, max_detections, layer, head, level, point_color, show, top_n, proposal_color, heat_source,
                heat_layer, heat_head)
        views = self.select_query(session, slots[0], *rest)
        lineage = {s: panels.query_lineage(stored.result, s) for s in slots[:12]}
        candidates = [(f"slot {s}: encoder score {lineage[s].encoder_score:.2f}", s) for s in lineage]
        return {**views, "candidates": _candidates(candidates, "Proposals under the cursor, smallest first")}

    def inspect(self, session, slot, layer, head, level, point_color, show=None) -> Views:
        """Sampling points of one query in one decoder layer (`/inspect`)."""
        stored = self.stored(session)
        result = stored.result
        slot = inputs.query_slot(slot, result.num_queries)
        return self._sampling_views(stored, slot, self._sampling_options(result, layer, head, level, point_color, show))

    def change_heatmaps(self, session, slot, threshold, max_detections, heat_source, heat_layer, heat_head) -> Views:
        """Heatmap controls changed: the decoder attention heatmaps."""
        if session is None or session.result_key is None:
            return {}
        stored = self.stored(session)
        result = stored.result
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        heat = self._heatmap_options(result, heat_source, heat_layer, heat_head)
        slot = None if slot is None else inputs.query_slot(slot, result.num_queries)
        view = detection_view(result, options.threshold, options.max_detections)
        return {"heatmap_image": panels.decoder_heatmaps(stored, view, slot, heat)}

    def change_proposals(self, session, top_n, proposal_color, threshold, max_detections, slot=None) -> Views:
        if session is None or session.result_key is None:
            return {}
        stored = self.stored(session)
        options = inputs.DetectionOptions.parse(threshold, max_detections)
        view = detection_view(stored.result, options.threshold, options.max_detections)
        slot = None if slot is None else inputs.query_slot(slot, stored.result.num_queries)
        return {"proposal_image": panels.proposals_image(stored, view, inputs.ProposalOptions.parse(top_n, proposal_color),
                                                         slot)}

    # -- the encoder's attention ---------------------------------------------------------------
    def click_encoder(self, session, token_level, layer, head, level, point_color, show,
                      evt: gr.SelectData) -> Views:
        """A click on the encoder image picks the token of the chosen level under the cursor."""
        stored = self.stored(session)
        result = stored.result
        x, y = evt.index
        height, width = stored.canvas.shape[:2]
        if not (0 <= x < width and 0 <= y < height):  # the legend below the picture
            return {}
        levels = result.attention_shape[1]
        chosen = inputs.number(token_level, "Token level", 1, levels, integer=True) - 1
        token = encoder.token_at(result, chosen, x / stored.scale, y / stored.scale)
        return self._encoder_views(stored, token, layer, head, level, point_color, show)

    def select_token(self, session, token_level, row, col, layer, head, level, point_color, show=None) -> Views:
        """A token typed as level, row and column (and `/encoder`)."""
        stored = self.stored(session)
        result = stored.result
        choice = inputs.TokenChoice.parse(token_level, row, col, levels=result.attention_shape[1])
        token = encoder.token(result, choice.level, choice.row, choice.col)
        return self._encoder_views(stored, token, layer, head, level, point_color, show)

    def encoder_api(self, session, token_level, row, col, layer, head, level, point_color) -> Views:
        """`/encoder`: a token's sampling points in one encoder layer (overlay, points, mass)."""
        views = self.select_token(session, token_level, row, col, layer, head, level, point_color)
        return {name: views[name] for name in ("enc_image", "enc_points", "enc_mass")}

    def change_token_level(self, session, picked, token_level, layer, head, level, point_color, show) -> Views:
        """The token level changed: the token of the new level under the centre of the current one."""
        if session is None or session.result_key is None or picked is None:
            return {}
        stored = self.stored(session)
        result = stored.result
        chosen = inputs.number(token_level, "Token level", 1, result.attention_shape[1], integer=True) - 1
        x0, y0, x1, y1 = encoder.cell_box(result, picked)
        token = encoder.token_at(result, chosen, (x0 + x1) / 2, (y0 + y1) / 2)
        return self._encoder_views(stored, token, layer, head, level, point_color, show)

    def seed_token(self, session, slot, layer, head, level, point_color, show) -> Views:
        """The encoder token that seeded the selected query."""
        stored = self.stored(session)
        result = stored.result
        lineage = panels.query_lineage(result, inputs.query_slot(slot, result.num_queries))
        token = encoder.token(result, lineage.level, *lineage.cell)
        return self._encoder_views(stored, token, layer, head, level, point_color, show)

    def inspect_encoder(self, session, picked, layer, head, level, point_color, show) -> Views:
        """Encoder layer, head, level or colour changed: re-draw the picked token's attention."""
        if session is None or session.result_key is None or picked is None:
            return {}
        return self._encoder_views(self.stored(session), picked, layer, head, level, point_color, show)

    def _encoder_views(self, stored: StoredResult, token: encoder.EncoderToken, layer, head, level, point_color,
                       show) -> Views:
        result = stored.result
        m, l, _ = result.attention_shape
        options = inputs.SamplingOptions.parse(layer, head, level, point_color, show, layers=stored.encoder_layers,
                                               heads=m, levels=l, layer_name="Encoder layer")
        attention = self.token_attention.get(result, token, lambda: self._recompute(stored, token))
        overlay, points, mass, heat = panels.encoder_panels(stored, attention, options)
        return {"enc_image": overlay, "enc_points": points, "enc_mass": mass, "enc_heatmap": heat,
                "token_info": panels.token_markdown(stored, token), "token_level": str(token.level + 1),
                "token_row": token.cell[0], "token_col": token.cell[1], "enc_token": token}

    def _recompute(self, stored: StoredResult, token: encoder.EncoderToken) -> encoder.TokenAttention:
        """One pass through the encoder (a model run: it takes a model slot, and the GPU on ZeroGPU)."""
        model, _ = self._model_for(stored)
        try:
            with self._model_slot:
                return self._token_attention(model, stored.result, [token], precision=self.settings.precision)[0]
        except RuntimeError as err:
            log.exception("encoder attention failed")
            raise ValueError(f"Computing the encoder's attention failed: {err}") from None

    def _model_for(self, stored: StoredResult):
        """The model that made `stored` (from the model cache, loaded again if it was dropped)."""
        if stored.model is None:
            raise ValueError("This result does not say which model made it: press Detect again.")
        return self._load_model(stored.model)

    def _encoder_reset(self, stored: StoredResult) -> Views:
        """The encoder views of a new result: no token yet, controls sized for the model."""
        result = stored.result
        layers = stored.encoder_layers
        m, l, _ = result.attention_shape
        prompt = panels.encoder_prompt(stored)
        return {"enc_image": prompt, "enc_heatmap": None, "enc_points": None, "enc_mass": None, "token_info": "",
                "enc_token": None, "token_row": None, "token_col": None,
                # a model without a deformable encoder has 0 layers here (its encoder view says why)
                "enc_layer": gr.Slider(minimum=1, maximum=max(layers, 2), value=max(layers, 1), step=1),
                "enc_head": gr.Radio(choices=[inputs.ALL] + [str(i) for i in range(1, m + 1)], value=inputs.ALL),
                "enc_level": gr.Radio(choices=[inputs.ALL] + [str(i) for i in range(1, l + 1)], value=inputs.ALL),
                "token_level": gr.Radio(choices=[str(i) for i in range(1, l + 1)], value="1")}

    def choose_model(self, model_choice) -> Views:
        """The model list changed: the path box only for a custom checkpoint, the variant choice for
        any checkpoint file, and the input-size slider sized for the model when it is known."""
        choice = str(model_choice or "")
        views: Views = {"checkpoint": gr.Textbox(visible=choice == choices.CUSTOM),
                        "variant": gr.Dropdown(visible=not choice.startswith(("untrained:", "zoo:", "hf:"))),
                        "shipped_note": gr.Column(visible=choice == choices.SHIPPED)}
        try:
            config = choices.resolve(choice, "-", None).config
        except ValueError:
            config = None
        if config is not None:
            views["max_input"] = gr.Slider(maximum=config.max_size, value=config.max_size,
                                           label=max_input_label(config))
        return views

    # -- views ------------------------------------------------------------------------------
    def _sampling_options(self, result: InferenceResult, layer, head, level, point_color,
                          show=None) -> inputs.SamplingOptions:
        m, l, _ = result.attention_shape
        return inputs.SamplingOptions.parse(layer, head, level, point_color, show, layers=result.num_layers, heads=m,
                                            levels=l)

    def _heatmap_options(self, result: InferenceResult, source, layer, head) -> inputs.HeatmapOptions:
        return inputs.HeatmapOptions.parse(source, result.num_layers if layer is None else layer, head,
                                           layers=result.num_layers, heads=result.attention_shape[0])

    def _detection_views(self, stored: StoredResult, view: DetectionView, slot: int | None, session: Session,
                         options: inputs.DetectionOptions) -> Views:
        result = stored.result
        document = _document(stored, view, options)
        folder = session.downloads()
        detections_file, coco_file = folder / "detections.json", folder / "coco_results.json"
        write_atomically(detections_file, json.dumps(document, indent=1))
        write_atomically(coco_file, json.dumps(coco_results(document)))
        slot = _listed_slot(result, view, slot)
        listed = _query_choices(result, view, slot)
        return {
            "det_image": self._draw_detections(stored, view, slot),
            "det_json": document,
            "table": panels.detection_table(view, slot),
            "download_json": str(detections_file),
            "download_coco": str(coco_file),
            "query": gr.Dropdown(choices=listed, value=slot),
            "slot": gr.Number(value=slot, maximum=result.num_queries - 1),
            "notice": _notice(stored, view, options, session.reused),
            "candidates": gr.Radio(visible=False),
        }

    def _query_views(self, stored: StoredResult, view: DetectionView, slot: int | None,
                     sampling: inputs.SamplingOptions, heat: inputs.HeatmapOptions | None, threshold: float) -> Views:
        """The views of query `slot`; the heatmaps too unless `heat` is None (they cannot change)."""
        views = {} if heat is None else {"heatmap_image": panels.decoder_heatmaps(stored, view, slot, heat)}
        if slot is None:
            return views
        refine_image, refine_table = panels.refinement_panels(stored, slot)
        return {**views, **self._sampling_views(stored, slot, sampling),
                "token_scores": families_ui.token_scores_markdown(stored.result, slot),
                "query_info": panels.lineage_markdown(stored, slot, view, threshold),
                "layer_grid": panels.layer_grid_image(stored, slot),
                "refine_image": refine_image, "refine_table": refine_table}

    def _sampling_views(self, stored: StoredResult, slot: int, options: inputs.SamplingOptions) -> Views:
        overlay, points, mass = panels.sampling_image(stored, slot, options)
        return {"sampling_image": overlay, "points_json": points, "mass": mass}

    def _draw_detections(self, stored: StoredResult, view: DetectionView, slot: int | None) -> np.ndarray:
        hits = np.flatnonzero(view.query_slots == slot) if slot is not None else np.array([], int)
        return render_detections(stored.canvas, view.boxes * stored.scale, view.captions, view.labels,
                                 selected=int(hits[0]) if hits.size else None)

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


def _listed_slot(result: InferenceResult, view: DetectionView, slot: int | None) -> int | None:
    """The query the list shows selected: `slot`, else the list's first (None for an empty list)."""
    if slot is not None:
        return slot
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


def _notice(stored: StoredResult, view: DetectionView, options: inputs.DetectionOptions, reused: bool) -> str:
    lines = []
    if len(view) == 0:
        best = stored.result.detections.scores
        best_score = float(best[0]) if len(best) else 0.0
        lines.append(f"No detection reaches the score threshold {options.threshold:.2f} (the best score is "
                     f"{best_score:.2f}): lower it to see more. The query list offers the best ones anyway.")
    if reused:
        lines.append("This example's result was computed earlier and reused: the timings in the Runtime tab "
                     "are from that run.")
    backend, reason = stored.result.backend
    if backend == "reference" and not reason.startswith("disabled"):  # not when chosen on purpose
        lines.append(f"This run used the deformable-attention op's pure-PyTorch reference, slower than the "
                     f"compiled kernel: {reason}.")
    return "\n\n".join(lines)


def _stage_progress(progress: Callable) -> Callable[[str, float], None]:
    """An `on_stage` for `explore.inference.run` that moves the page's progress bar as the
    model finishes each stage."""
    following = {"backbone": (0.5, "encoder"), "encoder": (0.75, "decoder"), "decoder": (0.9, "post-processing")}

    def report(stage: str, seconds: float) -> None:
        if stage in following:
            share, after = following[stage]
            progress(share, desc=f"{stage} done in {seconds:.1f} s; {after}")
    return report


def _control_ranges(result: InferenceResult, top_n: int) -> Views:
    """The decoder controls sized for a new result's model."""
    m, l, _ = result.attention_shape
    k = result.num_layers
    heads = [inputs.ALL] + [str(i) for i in range(1, m + 1)]
    return {
        "layer": gr.Slider(minimum=1, maximum=k, value=k, step=1),
        "head": gr.Radio(choices=heads, value=inputs.ALL),
        "level": gr.Radio(choices=[inputs.ALL] + [str(i) for i in range(1, l + 1)], value=inputs.ALL),
        "top_n": gr.Slider(maximum=result.num_queries, value=min(top_n, result.num_queries)),
        "heat_layer": gr.Slider(minimum=1, maximum=k, value=k, step=1),
        "heat_head": gr.Radio(choices=heads, value=inputs.ALL),
    }


def _candidates(candidates: list[tuple[str, int]], label: str):
    """The list of boxes under the cursor: shown only when there is a choice."""
    return gr.Radio(choices=candidates, value=candidates[0][1] if candidates else None, label=label,
                    visible=len(candidates) > 1)


def max_input_label(config) -> str:
    """The input-size slider's label for a model's config."""
    return (f"Max input side (px; {config.name} resizes to {config.min_size} px short side, "
            f"at most {config.max_size} px long side, below this cap)")


def _runtime_markdown(stored: StoredResult, reused: bool) -> str:
    result = stored.result
    t = result.timings
    backend, reason = result.backend
    h, w = result.size
    in_h, in_w = result.input_size
    rows = "\n".join(f"| {stage} | {t.get(stage, 0.0) * 1000:.1f} ms |"
                     for stage in ("preprocess", "backbone", "encoder", "decoder", "model", "postprocess", "total")
                     if stage != "model" or stage in t)  # "model": a transformers detector's one stage
    m, l, p = result.attention_shape
    cached = " (an earlier run's, reused for this example)" if reused else ""
    return (
        f"**Model** {result.model_id} · **device** `{result.device}` · **deformable-attention op** "
        f"`{backend}` ({reason})\n\n"
        f"**Image** {w}x{h} px → **model input** {in_w}x{in_h} px (padded {result.padded_size[1]}x"
        f"{result.padded_size[0]}) · {result.num_queries} queries, {result.num_layers} decoder layers, "
        f"{m} heads × {l} levels × {p} points\n\n| stage | time{cached} |\n|---|---|\n{rows}"
    )
