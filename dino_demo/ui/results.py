"""The page's results: a Detect's model run (or the stored result it can reuse) put in the app's
`ResultStore` under the session's key, the example cache (an example image's result is shared by
every session), results by image content for callers without a session (MCP tools), and `redraw`,
the one guard of the handlers that re-draw from a session's stored result."""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..explore.stored import StoredResult
from ..io.images import MAX_SIDE, load_image
from ..paths import EXAMPLES_DIR
from . import choices, gpu
from .cost_policy import run_size
from .inputs import ControlError, DetectRequest
from .model_cache import PageModels
from .session import Session
from .store import ResultStore

log = logging.getLogger("dino_explorer")

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)


def no_progress(*args, **kwargs) -> None:
    return None


class Results:
    """Stored results (`store`) and the runs that make them (through `models`)."""

    def __init__(self, store: ResultStore, models: PageModels):
        self.store, self.models = store, models
        self._example_digests: dict[int, str] | None = None
        self._example_lock = threading.Lock()

    def stored(self, session: Session | None) -> StoredResult:
        """The session's result; `store.ResultExpired` when it has none (any more)."""
        return self.store.get(None if session is None else session.result_key)

    def redraw(self, handler: Callable, event) -> dict:
        """Run a re-drawing `handler(event, stored)`: nothing to re-draw before the first Detect;
        `ResultExpired` when the session's result was dropped."""
        if event.session is None or event.session.result_key is None:
            return {}
        return handler(event, self.stored(event.session))

    def compute(self, request: DetectRequest, session: Session, progress: Callable = no_progress) -> StoredResult:
        """Run the model for a Detect (or reuse the example cache) and store the result as the session's."""
        stored, example, reused = self._result(request, progress, by_content=False)
        if not session.shared:
            self.store.discard(session.result_key)
        session.result_key = self.store.put(stored, example or session.id)
        session.shared, session.reused = example is not None, reused
        return stored

    def shared(self, request: DetectRequest, progress: Callable = no_progress) -> StoredResult:
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
        detector = self.models.load(request.model, progress)
        cfg = detector.config
        size = run_size(cfg, model_id, request.max_input, loaded.array.shape[:2])

        key = None if request.prompt else self._example_key(request.path, request.model, size.input_size,
                                                            request.precision)
        if key is None and by_content:
            key = "image:" + _result_digest(_sha256(Path(request.path)), request.model, size.input_size,
                                            request.precision, request.prompt)
        stored = self.store.peek(key) if key else None
        if stored is not None:
            return stored, key, True
        progress(0.3, desc=f"Running DINO: {size.estimate.describe()}; backbone")
        try:
            result = self.models.infer(detector.named(model_id), loaded.array, max_size=size.max_input,
                                       precision=request.precision, source_size=loaded.file_size,
                                       on_stage=None if gpu.on_zerogpu() else _stage_progress(progress),
                                       **({"prompt": request.prompt} if request.prompt else {}))
        except RuntimeError as err:
            log.exception("inference failed")
            raise ValueError(f"Detection failed: {err}") from None
        return StoredResult.of(result, request.file_name, min(size.max_input, cfg.max_size), request.model,
                               cfg.enc_layers), key, False

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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_digest(image_digest: str, model: choices.ModelChoice, input_size: tuple[int, int],
                   precision: str, prompt: str = "") -> str:
    """What identifies a result: the image's bytes, the model, the input size, the precision and
    the prompt."""
    key = (image_digest, model.source, model.variant, input_size, precision, prompt)
    return hashlib.sha256(repr(key).encode()).hexdigest()


def _stage_progress(progress: Callable) -> Callable[[str, float], None]:
    """An `on_stage` for `Detector.run` that moves the page's progress bar as the
    model finishes each stage."""
    following = {"backbone": (0.5, "encoder"), "encoder": (0.75, "decoder"), "decoder": (0.9, "post-processing")}

    def report(stage: str, seconds: float) -> None:
        if stage in following:
            share, after = following[stage]
            progress(share, desc=f"{stage} done in {seconds:.1f} s; {after}")
    return report
