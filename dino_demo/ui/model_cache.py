"""The page's models: the app-wide `ModelCache` (models loaded once, downloads in slots of their
own), the slots of model runs every tab shares, and what a model that cannot be downloaded or used
says on the page. The model runs themselves go through `infer` and `encoder_attention` (on
ZeroGPU, the GPU is held only while one runs)."""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from ..explore import encoder
from ..explore.models import DownloadsBusy, ModelCache
from ..sources import zoo
from ..sources.download import DownloadError
from ..runtime import Detector, EncoderToken, InferenceResult, TokenAttention
from . import choices, gpu
from .busy import model_turn
from .memory import release_freed_memory
from .settings import AppSettings

log = logging.getLogger("dino_explorer")

# The longest failure text on the status line: the head of the reason and the whole remedy
# (where to get the file and where to put it), which such texts end with.
MESSAGE_HEAD, MESSAGE_TAIL = 200, 400


class PageModels:
    """`cache`: the loaded models; `slot`: model runs at a time (every tab's), taken only around the
    run itself, so that loading (downloading) a model or reading an image never holds up another
    visitor's run."""

    def __init__(self, settings: AppSettings):
        self.settings = settings
        self.cache = ModelCache(capacity=2, device=settings.device, download_slots=settings.download_concurrency,
                                max_bytes=settings.model_cache_mb * 1024**2 if settings.model_cache_mb else None,
                                released=functools.partial(release_freed_memory, collect=True))
        self.slot = threading.BoundedSemaphore(settings.model_concurrency)
        self._run = gpu.gpu_function(gpu.run_detector, gpu.detect_seconds)  # the GPU only while the model runs
        self._token_attention = gpu.gpu_function(_token_attention, gpu.BASE_SECONDS)
        self.attention = encoder.TokenAttentionCache()

    def preload(self, model_choice: str) -> None:
        """Load a model now (on ZeroGPU: at start-up, outside any GPU function, as it requires)."""
        self.load(choices.resolve(model_choice, "", None))

    def load(self, model: choices.ModelChoice, progress: Callable | None = None) -> Detector:
        """The `runtime.Detector` of `model` from the cache; a ValueError with a message for the page when
        it cannot be downloaded or used."""
        def downloaded(done: int, total: int | None) -> None:  # bytes so far, of total
            if progress is not None:
                progress((done, total) if total else 0.15, desc=f"Downloading {model.model_id}", unit="bytes")

        try:
            return self.cache.get(model.source, model.variant, downloaded)
        except DownloadsBusy as err:  # said as it is: try again shortly
            raise ValueError(str(err)) from None
        except DownloadError as err:  # says why, then where to get the file and where to put it
            log.warning("downloading %s failed: %s", model.model_id, err)
            what = model.model_id if model.source.startswith(zoo.ZOO_PREFIX) else "the checkpoint"  # one answer per URL
            failure = ValueError(f"Could not download {what}: {one_line(err)}")
        except ValueError as err:  # CheckpointError and config errors carry a message for the user
            failure = ValueError(f"Cannot use this checkpoint: {err}")
        except (OSError, RuntimeError) as err:
            log.warning("loading %s failed: %s", model.model_id, err)
            failure = ValueError(f"Loading {model.model_id} failed: {one_line(err)}")
        # Outside the handler: the failed load's tensors are gone before the memory goes back.
        release_freed_memory()
        raise failure

    def infer(self, detector: Detector, image, **options) -> InferenceResult:
        """One model run of the page (in a model slot); `options` as `Detector.run` takes them."""
        with model_turn(self.slot):
            return self._run(detector, image, **options)

    def encoder_attention(self, stored, token: EncoderToken) -> TokenAttention:
        """The attention of encoder `token` of a stored result: cached, else one pass through the
        encoder (a model run: it takes a model slot, and the GPU on ZeroGPU)."""
        return self.attention.get(stored.result, token, lambda: self._recompute(stored, token))

    def _recompute(self, stored, token: EncoderToken) -> TokenAttention:
        if stored.model is None:
            raise ValueError("This result does not say which model made it: press Detect again.")
        detector = self.load(stored.model)
        try:
            with model_turn(self.slot):
                return self._token_attention(detector, stored.result, token)
        except RuntimeError as err:
            log.exception("encoder attention failed")
            raise ValueError(f"Computing the encoder's attention failed: {err}") from None


def _token_attention(detector: Detector, result: InferenceResult, token: EncoderToken
                     ) -> TokenAttention:
    """`detector.token_attention(result, token)`: what runs through `gpu_function`."""
    return detector.token_attention(result, token)


def one_line(err: BaseException) -> str:
    """An error's message on one line, ending with a full stop; a long one keeps its head and its
    whole end (where a download failure says what to do), with "…" between."""
    text = " ".join(str(err).split()) or type(err).__name__
    if len(text) > MESSAGE_HEAD + MESSAGE_TAIL:
        text = text[:MESSAGE_HEAD].rstrip() + " … " + text[-MESSAGE_TAIL:].lstrip()
    return text if text.endswith((".", "!", "?")) else text + "."
