"""What the page does: one method per user action, each a plain function of one `PageEvent` (the
session, the parsed `PageControls`, the picked encoder token, where a click landed) returning every
view it changes, as a dict keyed by view name (`layout` maps names to components and wires the
events). API endpoints are methods too, with one parameter per value an API client sends.

A Detect runs the model once (`explore.inference.run`) and stores the result in the app-wide
`ResultStore`; every other action re-draws from that stored result with `explore.panels`, without
running the model again. Re-drawing handlers take `(event, stored)` and run through `redraw`, the
one guard that fetches the session's result.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..explore import cost, encoder, panels
from ..explore.detections import query_rows
from ..explore.inference import InferenceResult, run
from ..explore.models import DownloadsBusy, ModelCache
from ..explore.options import SELECTED_QUERY, DetectionOptions, SamplingOptions
from ..explore.stored import StoredResult
from ..explore.views import DetectionView, detection_view, detections_at
from ..io.images import MAX_SIDE, load_image
from ..io.internals import write_internals
from ..io.preprocess import model_input_size
from ..io.results import coco_image_id, coco_results, detections_document, image_record
from ..paths import EXAMPLES_DIR
from ..sources import zoo
from ..sources.download import DownloadError, Policy
from . import choices, cleanup, families_ui, gpu, inputs
from .busy import model_turn
from .files import write_atomically
from .inputs import ControlError, DetectRequest, PageControls
from .memory import release_freed_memory
from .session import Session
from .settings import AppSettings
from .store import ResultStore

log = logging.getLogger("dino_explorer")

Views = dict[str, object]
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The controls a Detect reads besides PageControls.
DETECT_CONTROLS = ("image_in", "model_choice", "checkpoint", "variant", "max_input", "precision", "prompt")


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)


def _no_progress(*args, **kwargs) -> None:
    return None


@dataclass(frozen=True)
class PageEvent:
    """One user action on the page: the visitor's `session` (None before the first Detect), the
    parsed `controls`, the encoder `token` picked earlier (None before a pick), `point` where a
    click on a picture or table landed (Gradio's SelectData index; None for other events), the
    Detect controls' raw values (`detect_values`, parsed by `detect` and the tabs that run the model),
    the `request`, and the raw values of a tab's own controls when its events send them
    (`tab_values`, by view name; each tab parses its own)."""

    session: Session | None
    controls: PageControls
    token: encoder.EncoderToken | None = None
    point: object = None
    detect_values: Mapping[str, object] = field(default_factory=dict)
    request: gr.Request | None = None
    tab_values: Mapping[str, object] = field(default_factory=dict)


class Explorer:
    """The page's behaviour over app-wide services: the model cache, the result store and the
    folder of download files (removed with the app)."""

    def __init__(self, settings: AppSettings, *, result_budget_bytes: int | None = None):
        self.settings = settings
        self.models = ModelCache(capacity=2, device=settings.device, download_slots=settings.download_concurrency,
                                 max_bytes=settings.model_cache_mb * 1024**2 if settings.model_cache_mb else None,
                                 released=functools.partial(release_freed_memory, collect=True))
        self.store = ResultStore(result_budget_bytes or settings.result_budget_mb * 1024**2)
        # Model runs at a time (every tab's). Taken only around the run itself: loading (downloading) a
        # model, or reading an image, never holds up another visitor's run.
        self.model_slot = threading.BoundedSemaphore(settings.model_concurrency)
        self._run = gpu.gpu_function(run)  # on ZeroGPU, the GPU is held only while the model runs
        self._token_attention = gpu.gpu_function(encoder.token_attention, gpu.BASE_SECONDS)
        cleanup.remove_stale_app_folders()  # left by a killed process
        self._files = cleanup.make_app_folder()
        self._example_digests: dict[int, str] | None = None
        self.token_attention = encoder.TokenAttentionCache()
        self._example_lock = threading.Lock()

    @property
    def files_folder(self) -> Path:
        """The folder of the sessions' download files (one subfolder per session)."""
        return Path(self._files.name)

    # -- sessions ---------------------------------------------------------------------------
    def session(self, session: Session | None, request: gr.Request | None) -> Session:
        """This request's Session, named after Gradio's session hash on its first Detect (filled in
        place: the page's state keeps it without being returned); a new one when none is given."""
        session = Session() if session is None else session
        if not session.id:
            raw = getattr(request, "session_hash", None) or "anonymous"
            session.id = re.sub(r"[^A-Za-z0-9_-]", "", raw)[:64] or "anonymous"
            session.folder = Path(self._files.name) / session.id
        return session

    def close_session(self, session: Session | None) -> None:
        """The page closed or its state expired: drop its result and its files."""
        if session is None or not session.id:
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
        """The session's result; `store.ResultExpired` when it has none (any more)."""
        return self.store.get(None if session is None else session.result_key)

    def redraw(self, handler: Callable[[PageEvent, StoredResult], Views], event: PageEvent) -> Views:
        """The one guard of the re-drawing handlers: nothing to re-draw before the first Detect;
        `ResultExpired` when the session's result was dropped."""
        if event.session is None or event.session.result_key is None:
            return {}
        return handler(event, self.stored(event.session))

    # -- Detect -----------------------------------------------------------------------------
    def compute(self, request: DetectRequest, session: Session, progress: Callable) -> StoredResult:
        """Run the model for a Detect (or reuse the example cache) and store the result as the session's."""
        stored, example, reused = self._result(request, progress, by_content=False)
        if not session.shared:
            self.store.discard(session.result_key)
        session.result_key = self.store.put(stored, example or session.id)
        session.shared, session.reused = example is not None, reused
        return stored

    def shared_result(self, request: DetectRequest, progress: Callable = _no_progress) -> StoredResult:
        """The result of `request` for callers without a session (MCP tools): stored under a key made
        from the image's bytes and the model, so that a second call on the same image (detect, then
        inspect) reuses it, and only a caller holding the same image reaches it."""
        stored, key, _ = self._result(request, progress, by_content=True)
        self.store.put(stored, key)
        return stored

    def _result(self, request: DetectRequest, progress: Callable, *, by_content: bool):
        """(stored result, its shared store key or None, whether it was stored before): the model
        runs only when no example result (or, `by_content`, no result of the same image) is stored."""
        progress(0.05, desc="Reading the image")
        try:
            loaded = load_image(request.path, max_side=MAX_SIDE)
        except ValueError as err:
            raise ControlError("image_in", f"Cannot use this image: {err}.") from None
        for note in loaded.notes:
            gr.Warning(f"Image {note}.")

        model_id = request.model.model_id
        progress(0.15, desc=f"Loading {model_id}")
        model, cfg = self.load_model(request.model, progress)
        h, w = loaded.array.shape[:2]
        max_input = cost.bounded_max_input(cfg, request.max_input, Policy.from_env().public)
        if max_input < min(request.max_input, cfg.max_size):
            gr.Warning(f"This server caps the model input at {max_input} px (the usual maximum of {cfg.name}).")
        input_size = model_input_size(cfg, h, w, max_input)
        estimate = cost.request_cost(cfg, input_size)
        log.info("detect with %s: %s", model_id, estimate.describe())

        key = None if request.prompt else self._example_key(request.path, request.model, input_size,
                                                            request.precision)
        if key is None and by_content:
            key = "image:" + _result_digest(_sha256(Path(request.path)), request.model, input_size, request.precision,
                                            request.prompt)
        stored = self.store.peek(key) if key else None
        if stored is not None:
            return stored, key, True
        progress(0.3, desc=f"Running DINO: {estimate.describe()}; backbone")
        try:
            with model_turn(self.model_slot):
                result = self._run(model, cfg, loaded.array, max_size=max_input,
                                   precision=request.precision, model_id=model_id,
                                   source_size=loaded.file_size,
                                   on_stage=None if gpu.on_zerogpu() else _stage_progress(progress),
                                   **({"prompt": request.prompt} if request.prompt else {}))
        except RuntimeError as err:
            log.exception("inference failed")
            raise ValueError(f"Detection failed: {err}") from None
        return StoredResult.of(result, request.file_name, min(max_input, cfg.max_size), request.model,
                               cfg.enc_layers), key, False

    def preload(self, model_choice: str) -> None:
        """Load a model now (on ZeroGPU: at start-up, outside any GPU function, as it requires)."""
        self.load_model(choices.resolve(model_choice, "", None))

    def load_model(self, model: choices.ModelChoice, progress: Callable | None = None):
        """(model, config) of `model` from the app's model cache; a ValueError with a message for the
        page when it cannot be downloaded or used."""
        def downloaded(done: int, total: int | None) -> None:  # bytes so far, of total
            if progress is not None:
                progress((done, total) if total else 0.15, desc=f"Downloading {model.model_id}", unit="bytes")

        try:
            return self.models.get(model.source, model.variant, downloaded)
        except DownloadsBusy as err:  # said as it is: try again shortly
            raise ValueError(str(err)) from None
        except DownloadError as err:  # its first sentence says why; the rest names server folders
            log.warning("downloading %s failed: %s", model.model_id, err)
            what = model.model_id if model.source.startswith(zoo.ZOO_PREFIX) else "the checkpoint"  # one answer per URL
            failure = ValueError(f"Could not download {what}: {_first_line(err).split('. ')[0]}.")
        except ValueError as err:  # CheckpointError and config errors carry a message for the user
            failure = ValueError(f"Cannot use this checkpoint: {err}")
        except (OSError, RuntimeError) as err:
            log.warning("loading %s failed: %s", model.model_id, err)
            failure = ValueError(f"Loading {model.model_id} failed: {_first_line(err)}")
        # Outside the handler: the failed load's tensors are gone before the memory goes back.
        release_freed_memory()
        raise failure

    def detect(self, event: PageEvent, progress: Callable = _no_progress) -> Views:
        """The Detect button: run the model, then draw every view once (the first detection's
        query selected; the encoder view waits for a click)."""
        request = DetectRequest.parse(*(event.detect_values.get(name) for name in DETECT_CONTROLS))
        controls = event.controls.for_new_result()
        session = self.session(event.session, event.request)
        stored = self.compute(request, session, progress)
        progress(0.95, desc="Drawing")
        result = stored.result
        view = detection_view(result, controls.detection.threshold, controls.detection.max_detections)
        slot = panels.listed_slot(result, view, None)
        internals = write_internals(result, session.downloads() / "internals.npz", source=stored.file_name)
        return {
            "session": session,
            **self._detection_views(stored, view, slot, session, controls.detection),
            **self._query_views(stored, view, slot, sampling_options(controls, result), _heatmap(controls, result),
                                controls.detection),
            "proposal_image": panels.proposals_image(stored, view, controls.proposals, slot),
            "sel_maps": panels.score_maps_image(stored),
            "runtime": panels.runtime_markdown(stored, session.reused),
            "download_internals": str(internals),
            **_control_ranges(result, controls.proposals.top_n),
            **self._encoder_reset(stored),
        }

    def check_upload(self, image) -> Views:
        """An image chosen (uploaded or pasted): decoded at once by the library's own reader, so
        that a file that is not a usable image is refused now, not at Detect."""
        path, name = inputs.uploaded_file(image)
        if path is None:
            return {}
        try:
            load_image(path, max_side=MAX_SIDE)
        except ValueError as err:
            raise ControlError("image_in", f"Cannot use {name or 'this file'}: {err}.") from None
        return {}

    # -- re-drawing (each runs through `redraw`) ----------------------------------------------
    def change_detection_options(self, event: PageEvent, stored: StoredResult) -> Views:
        """Threshold or max detections released: the detections, their lists and files, the
        proposals (which of them became detections), the selected query's fate and the heatmaps."""
        controls, result = event.controls, stored.result
        heat = _heatmap(controls, result)
        view = _view(stored, controls)
        slot = None if controls.slot is None else inputs.query_slot(controls.slot, result.num_queries)
        listed = panels.listed_slot(result, view, slot)
        views = {**self._detection_views(stored, view, listed, event.session, controls.detection),
                 "proposal_image": panels.proposals_image(stored, view, controls.proposals, listed),
                 "query_info": "" if listed is None else panels.lineage_markdown(stored, listed, view,
                                                                                 controls.detection.threshold)}
        if heat.source != SELECTED_QUERY or slot is None:  # else: the same query's, unchanged
            views["heatmap_image"] = panels.decoder_heatmaps(stored, view, listed, heat)
        return views

    def select_query(self, event: PageEvent, stored: StoredResult, slot) -> Views:
        """Query `slot` picked (in the list, typed, in the table, among the boxes under the cursor):
        highlight it everywhere and show its attention, layers and refinement."""
        controls, result = event.controls, stored.result
        slot = inputs.query_slot(slot, result.num_queries)
        view = _view(stored, controls)
        heat = _heatmap(controls, result)
        if heat.source != SELECTED_QUERY:
            heat = None  # the heatmap of every shown detection: the selection does not change it
        return {"query": gr.Dropdown(choices=panels.query_choices(result, view, slot), value=slot), "slot": slot,
                "det_image": panels.detections_image(stored, view, slot), "table": panels.detection_table(view, slot),
                "proposal_image": panels.proposals_image(stored, view, controls.proposals, slot),
                "candidates": gr.Radio(visible=False),
                **self._query_views(stored, view, slot, sampling_options(controls, result), heat, controls.detection)}

    def choose_query(self, event: PageEvent, stored: StoredResult) -> Views:
        """A query picked in the list."""
        return self.select_query(event, stored, event.controls.query)

    def type_slot(self, event: PageEvent, stored: StoredResult) -> Views:
        """A slot number typed (Enter, or leaving the box): select it, unless it is the query already
        shown (Enter and then a click elsewhere would otherwise draw every view twice). A slot the
        model does not have is refused once: the box goes back to the query shown."""
        controls = event.controls
        if controls.slot is None or controls.slot == controls.query:
            return {}
        try:
            return self.select_query(event, stored, controls.slot)
        except ValueError as err:
            raise ControlError("slot", str(err)) from None

    def select_candidate(self, event: PageEvent, stored: StoredResult) -> Views:
        """One of the boxes under the cursor chosen: select it, keeping the list of candidates."""
        views = self.select_query(event, stored, event.controls.candidate)
        views.pop("candidates")
        return views

    def select_table_row(self, event: PageEvent, stored: StoredResult) -> Views:
        """A row of the detections table clicked: select its query (one row per query)."""
        rows = query_rows(_view(stored, event.controls))
        if not len(rows):
            return {}
        row = event.point[0] if isinstance(event.point, (list, tuple)) else event.point
        row = inputs.number(row, "Table row", 0, len(rows) - 1, integer=True)
        return self.select_query(event, stored, int(rows.query_slots[row]))

    def click_detections(self, event: PageEvent, stored: StoredResult) -> Views:
        """A click on the detections image selects the smallest detection containing it (else
        the nearest) and, when several contain it, offers all of them."""
        view = _view(stored, event.controls)
        x, y = event.point
        hits = detections_at(view, x / stored.scale, y / stored.scale)
        if not hits:
            gr.Info("No detections above the threshold to select.")
            return {}
        views = self.select_query(event, stored, int(view.query_slots[hits[0]]))
        by_slot: dict[int, list[str]] = {}  # one query slot can be several detections (one per class)
        for i in hits:
            by_slot.setdefault(int(view.query_slots[i]), []).append(f"{view.names[i]} {view.scores[i]:.2f}")
        candidates = [(f"{' · '.join(names)} (slot {s})", s) for s, names in by_slot.items()]
        return {**views, "candidates": _candidates(candidates, "Boxes under the cursor, smallest first")}

    def click_proposals(self, event: PageEvent, stored: StoredResult) -> Views:
        """A click on the proposals image selects the query slot the smallest proposal under the
        cursor seeded (offering every proposal there when several are)."""
        x, y = event.point
        height, width = stored.canvas.shape[:2]
        if not (0 <= x < width and 0 <= y < height):  # the legend below the picture
            return {}
        slots = panels.proposals_at(stored, event.controls.proposals.top_n, x / stored.scale, y / stored.scale)
        if not slots:
            return {}
        views = self.select_query(event, stored, slots[0])
        lineage = {s: panels.query_lineage(stored.result, s) for s in slots[:12]}
        candidates = [(f"slot {s}: encoder score {lineage[s].encoder_score:.2f}", s) for s in lineage]
        return {**views, "candidates": _candidates(candidates, "Proposals under the cursor, smallest first")}

    def inspect(self, event: PageEvent, stored: StoredResult) -> Views:
        """Layer, head, level, colour or extras of the sampling points changed."""
        controls, result = event.controls, stored.result
        if controls.slot is None:
            return {}
        slot = inputs.query_slot(controls.slot, result.num_queries)
        return self.sampling_views(stored, slot, sampling_options(controls, result))

    def change_heatmaps(self, event: PageEvent, stored: StoredResult) -> Views:
        """Heatmap controls changed: the decoder attention heatmaps."""
        controls, result = event.controls, stored.result
        slot = None if controls.slot is None else inputs.query_slot(controls.slot, result.num_queries)
        return {"heatmap_image": panels.decoder_heatmaps(stored, _view(stored, controls), slot,
                                                         _heatmap(controls, result))}

    def change_proposals(self, event: PageEvent, stored: StoredResult) -> Views:
        """Top-N or colouring of the proposals changed."""
        controls = event.controls
        slot = None if controls.slot is None else inputs.query_slot(controls.slot, stored.result.num_queries)
        return {"proposal_image": panels.proposals_image(stored, _view(stored, controls), controls.proposals, slot)}

    # -- the encoder's attention ---------------------------------------------------------------
    def click_encoder(self, event: PageEvent, stored: StoredResult) -> Views:
        """A click on the encoder image picks the token of the chosen level under the cursor."""
        result = stored.result
        x, y = event.point
        height, width = stored.canvas.shape[:2]
        if not (0 <= x < width and 0 <= y < height):  # the legend below the picture
            return {}
        token = encoder.token_at(result, _token_level(event.controls, result), x / stored.scale, y / stored.scale)
        return self._encoder_views(stored, token, event.controls)

    def select_token(self, event: PageEvent, stored: StoredResult) -> Views:
        """A token typed as row and column (Enter): a position outside the level's grid is refused
        once, the boxes going back to the token shown."""
        try:
            return self.typed_token(event, stored)
        except ValueError as err:
            raise ControlError("token_row", str(err)) from None

    def typed_token(self, event: PageEvent, stored: StoredResult) -> Views:
        controls, result = event.controls, stored.result
        if controls.token_row is None or controls.token_col is None:
            raise ValueError("Enter the token's row and column.")
        token = encoder.token(result, _token_level(controls, result), controls.token_row, controls.token_col)
        return self._encoder_views(stored, token, controls)

    def change_token_level(self, event: PageEvent, stored: StoredResult) -> Views:
        """The token level changed: the token of the new level under the centre of the current one."""
        if event.token is None:
            return {}
        result = stored.result
        x0, y0, x1, y1 = encoder.cell_box(result, event.token)
        token = encoder.token_at(result, _token_level(event.controls, result), (x0 + x1) / 2, (y0 + y1) / 2)
        return self._encoder_views(stored, token, event.controls)

    def seed_token(self, event: PageEvent, stored: StoredResult) -> Views:
        """The encoder token that seeded the selected query."""
        result = stored.result
        if event.controls.slot is None:
            return {}
        lineage = panels.query_lineage(result, inputs.query_slot(event.controls.slot, result.num_queries))
        return self._encoder_views(stored, encoder.token(result, lineage.level, *lineage.cell), event.controls)

    def inspect_encoder(self, event: PageEvent, stored: StoredResult) -> Views:
        """Encoder layer, head, level or colour changed: re-draw the picked token's attention."""
        if event.token is None:
            return {}
        return self._encoder_views(stored, event.token, event.controls)

    def _encoder_views(self, stored: StoredResult, token: encoder.EncoderToken, controls: PageControls) -> Views:
        m, l, _ = stored.result.attention_shape
        options = controls.encoder.options(layers=stored.encoder_layers, heads=m, levels=l, layer_name="Encoder layer")
        attention = self.token_attention.get(stored.result, token, lambda: self._recompute(stored, token))
        overlay, points, mass, heat = panels.encoder_panels(stored, attention, options)
        return {"enc_image": overlay, "enc_points": points, "enc_mass": mass, "enc_heatmap": heat,
                "token_info": panels.token_markdown(stored, token), "token_level": str(token.level + 1),
                "token_row": token.cell[0], "token_col": token.cell[1], "enc_token": token}

    def _recompute(self, stored: StoredResult, token: encoder.EncoderToken) -> encoder.TokenAttention:
        """One pass through the encoder (a model run: it takes a model slot, and the GPU on ZeroGPU)."""
        if stored.model is None:
            raise ValueError("This result does not say which model made it: press Detect again.")
        model, _ = self.load_model(stored.model)
        try:
            with model_turn(self.model_slot):
                return self._token_attention(model, stored.result, [token], precision=stored.result.precision)[0]
        except RuntimeError as err:
            log.exception("encoder attention failed")
            raise ValueError(f"Computing the encoder's attention failed: {err}") from None

    def _encoder_reset(self, stored: StoredResult) -> Views:
        """The encoder views of a new result: no token yet, controls sized for the model."""
        m, l, _ = stored.result.attention_shape
        return {"enc_image": panels.encoder_prompt(stored), "enc_heatmap": None, "enc_points": None, "enc_mass": None,
                "token_info": "", "enc_token": None, "token_row": None, "token_col": None,
                **encoder_ranges(stored.encoder_layers, m, l)}

    def choose_model(self, model_choice) -> Views:
        """The model list changed: the path box only for a custom checkpoint, the variant choice for
        any checkpoint file, and the input-size slider sized for the model when it is known."""
        choice = str(model_choice or "")
        views: Views = {"checkpoint": gr.Textbox(visible=choice == choices.CUSTOM),
                        "variant": gr.Dropdown(visible=not choices.variant_is_fixed(choice)),
                        "shipped_note": gr.Column(visible=choice == choices.SHIPPED),
                        "prompt": gr.Textbox(visible=families_ui.prompt_applies(choice))}
        try:
            config = choices.resolve(choice, "-", None).config
        except ValueError:
            config = None
        if config is not None:
            views["max_input"] = gr.Slider(maximum=config.max_size, value=config.max_size,
                                           label=max_input_label(config))
        return views

    # -- views ------------------------------------------------------------------------------
    def _detection_views(self, stored: StoredResult, view: DetectionView, slot: int | None, session: Session,
                         options: DetectionOptions) -> Views:
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

    def _query_views(self, stored: StoredResult, view: DetectionView, slot: int | None, sampling: SamplingOptions,
                     heat, options: DetectionOptions) -> Views:
        """The views of query `slot`; the heatmaps too unless `heat` is None (they cannot change)."""
        views = {} if heat is None else {"heatmap_image": panels.decoder_heatmaps(stored, view, slot, heat)}
        if slot is None:
            return views
        refine_image, refine_table = panels.refinement_panels(stored, slot)
        twice_image, twice_table = panels.look_forward_panels(stored, slot)
        sel_step, sel_info = panels.selection_panels(stored, slot)
        return {**views, **self.sampling_views(stored, slot, sampling),
                "query_info": panels.lineage_markdown(stored, slot, view, options.threshold),
                "token_scores": families_ui.token_scores_markdown(stored.result, slot),
                "layer_grid": panels.layer_grid_image(stored, slot),
                "refine_image": refine_image, "refine_table": refine_table, "twice_image": twice_image,
                "twice_table": twice_table, "sel_step": sel_step, "sel_info": sel_info}

    def sampling_views(self, stored: StoredResult, slot: int, options: SamplingOptions) -> Views:
        overlay, points, mass = panels.sampling_image(stored, slot, options)
        return {"sampling_image": overlay, "points_json": points, "mass": mass}

    # -- the example cache -------------------------------------------------------------------
    def _example_key(self, path: str, model: choices.ModelChoice, input_size: tuple[int, int],
                     precision: str) -> str | None:
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
        return "example:" + _result_digest(digest, model, input_size, precision)


# -- small pure helpers ---------------------------------------------------------------------

def _first_line(err: BaseException) -> str:
    """The first line of an error's message, at most 200 characters (download libraries write pages)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= 200 else text[:199] + "…"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_digest(image_digest: str, model: choices.ModelChoice, input_size: tuple[int, int],
                   precision: str, prompt: str = "") -> str:
    """What identifies a result: the image's bytes, the model, the input size, the precision and
    the prompt."""
    key = (image_digest, model.source, model.variant, input_size, precision, prompt)
    return hashlib.sha256(repr(key).encode()).hexdigest()



def _view(stored: StoredResult, controls: PageControls) -> DetectionView:
    return detection_view(stored.result, controls.detection.threshold, controls.detection.max_detections)


def sampling_options(controls: PageControls, result: InferenceResult) -> SamplingOptions:
    m, l, _ = result.attention_shape
    return controls.sampling.options(layers=result.num_layers, heads=m, levels=l, layer_name="Decoder layer")


def _heatmap(controls: PageControls, result: InferenceResult):
    return controls.heatmap(layers=result.num_layers, heads=result.attention_shape[0])


def _token_level(controls: PageControls, result: InferenceResult) -> int:
    levels = result.attention_shape[1]
    if controls.token_level >= levels:
        raise ControlError("token_level",
                           f"Token level must be between 1 and {levels}, got {controls.token_level + 1}.")
    return controls.token_level


def detections_json(stored: StoredResult, view: DetectionView, options: DetectionOptions) -> dict:
    result = stored.result
    entry = image_record(result, view, image_id=coco_image_id(stored.file_name, 1), file_name=stored.file_name)
    return detections_document([entry], model_id=result.model_id, variant=result.variant,
                               threshold=options.threshold, max_detections=options.max_detections,
                               max_input_side=stored.max_input)


def _stage_progress(progress: Callable) -> Callable[[str, float], None]:
    """An `on_stage` for `explore.inference.run` that moves the page's progress bar as the
    model finishes each stage."""
    following = {"backbone": (0.5, "encoder"), "encoder": (0.75, "decoder"), "decoder": (0.9, "post-processing")}

    def report(stage: str, seconds: float) -> None:
        if stage in following:
            share, after = following[stage]
            progress(share, desc=f"{stage} done in {seconds:.1f} s; {after}")
    return report


def _choices(count: int, *, with_all: bool = True) -> list[str]:
    return ([inputs.ALL] if with_all else []) + [str(i) for i in range(1, count + 1)]


def decoder_ranges(layers: int, heads: int, levels: int, queries: int, top_n: int) -> Views:
    """The decoder controls sized for a model (`layers` decoder layers, `heads` heads, `levels`
    feature levels, `queries` queries)."""
    return {
        "layer": gr.Slider(minimum=1, maximum=layers, value=layers, step=1),
        "head": gr.Radio(choices=_choices(heads), value=inputs.ALL),
        "level": gr.Radio(choices=_choices(levels), value=inputs.ALL),
        "top_n": gr.Slider(maximum=queries, value=min(top_n, queries)),
        "heat_layer": gr.Slider(minimum=1, maximum=layers, value=layers, step=1),
        "heat_head": gr.Radio(choices=_choices(heads), value=inputs.ALL),
    }


def encoder_ranges(layers: int, heads: int, levels: int) -> Views:
    """The encoder controls sized for a model (one without a deformable encoder has 0 layers here:
    its encoder view says why)."""
    return {"enc_layer": gr.Slider(minimum=1, maximum=max(layers, 2), value=max(layers, 1), step=1),
            "enc_head": gr.Radio(choices=_choices(heads), value=inputs.ALL),
            "enc_level": gr.Radio(choices=_choices(levels), value=inputs.ALL),
            "token_level": gr.Radio(choices=_choices(levels, with_all=False), value="1")}


def _control_ranges(result: InferenceResult, top_n: int) -> Views:
    m, l, _ = result.attention_shape
    return decoder_ranges(result.num_layers, m, l, result.num_queries, top_n)


def _candidates(candidates: list[tuple[str, int]], label: str):
    """The list of boxes under the cursor: shown only when there is a choice."""
    return gr.Radio(choices=candidates, value=candidates[0][1] if candidates else None, label=label,
                    visible=len(candidates) > 1)


def max_input_label(config) -> str:
    """The input-size slider's label for a model's config."""
    return (f"Max input side (px; {config.name} resizes to {config.min_size} px short side, "
            f"at most {config.max_size} px long side, below this cap)")
