"""ZeroGPU support, with a stand-in for the `spaces` package (installed on every Hugging Face
Space): the model runs inside a `spaces.GPU` function whose duration fits the model and input,
the default model is placed at start-up, and without `spaces` nothing changes."""
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dino_demo.model.config import VARIANTS
from dino_demo.paths import EXAMPLES_DIR
from dino_demo.ui import gpu
from dino_demo.ui.events import PageEvent
from dino_demo.ui.model_cache import PageModels
from dino_demo.ui.inputs import PageControls
from dino_demo.ui.services import Services
from dino_demo.ui.settings import AppSettings

import page_support


@pytest.fixture
def stand_in(monkeypatch):
    """A `spaces` module that records what it decorates, the durations asked and the calls."""
    record = types.SimpleNamespace(decorated=[], durations=[], calls=0)
    spaces = types.ModuleType("spaces")
    spaces.config = types.SimpleNamespace(Config=types.SimpleNamespace(zero_gpu=True))

    def GPU(duration=60):  # noqa: N802 - the real name
        def decorate(fn):
            record.decorated.append(fn)

            def on_gpu(*args, **kwargs):
                record.durations.append(duration(*args, **kwargs) if callable(duration) else duration)
                record.calls += 1
                return fn(*args, **kwargs)
            return on_gpu
        return decorate

    spaces.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    return record


class _Request:
    session_hash = "zerogpu"


def _detect(services):
    detect = {"image_in": str(EXAMPLES_DIR / "chelsea.png"), "model_choice": "untrained:dino-tiny", "checkpoint": "",
              "variant": "auto", "max_input": 1333}
    return page_support.detect(services, PageEvent(None, PageControls.parse(threshold=0.0, max_detections=5), None, None, detect,
                                     _Request()))


def test_the_model_runs_inside_a_gpu_function(stand_in):
    assert gpu.on_zerogpu()
    services = Services.make(AppSettings(device="cpu", model_concurrency=1))
    decorated = [fn.__name__ for fn in stand_in.decorated]
    assert decorated == ["run_detector", "_token_attention"]  # a Detect, and the encoder view's pass
    views = _detect(services)
    assert views["det_json"]["images"][0]["detections"]
    assert stand_in.calls == 1 and gpu.BASE_SECONDS <= stand_in.durations[0] <= gpu.MAX_SECONDS
    views = _detect(services)  # an example image: its result is reused, no second GPU call
    assert stand_in.calls == 1
    page_support.redraw(services, "seed_token", PageEvent(views["session"], PageControls.parse(slot=views["slot"].value)))
    assert stand_in.calls == 2 and stand_in.durations[1] == gpu.BASE_SECONDS


def test_durations_fit_the_model_and_input():
    image = np.zeros((600, 800, 3), np.uint8)
    tiny = gpu.run_seconds(None, VARIANTS["dino-tiny"], image)
    r50 = gpu.run_seconds(None, VARIANTS["dino-4scale-r50"], image)
    swin = gpu.run_seconds(None, VARIANTS["dino-5scale-swinl"], image)
    small = gpu.run_seconds(None, VARIANTS["dino-4scale-r50"], image, max_size=320)
    assert tiny <= small < r50 < swin <= gpu.MAX_SECONDS


def test_the_default_model_is_placed_at_start_up(stand_in, monkeypatch):
    from dino_demo.ui import layout

    placed = []
    monkeypatch.setattr(PageModels, "preload", lambda self, choice: placed.append((choice, self.settings.device)))
    monkeypatch.setattr(layout.AppSettings, "from_env", classmethod(lambda cls: cls(device="cuda", model_concurrency=1)))
    layout.build_demo()
    assert placed and placed[0][1] == "cuda"


def test_without_spaces_nothing_changes(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    assert gpu.spaces_module() is None and not gpu.on_zerogpu()

    def fn():
        return 1

    assert gpu.gpu_function(fn) is fn
    assert Path(gpu.__file__).name == "gpu.py"
