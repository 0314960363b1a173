"""What a public server bounds beyond single inputs: the cost of a Detect whatever a checkpoint's
stored config asks for, and the disk its sessions and uploads take."""
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from dino_demo.model.config import get_config
from dino_demo.model.detector import build_model
from dino_demo.paths import EXAMPLES_DIR
from dino_demo.sources.checkpoint import save_checkpoint


class _Request:
    def __init__(self, session_hash):
        self.session_hash = session_hash


class _Ran(Exception):
    pass


@pytest.fixture
def huge_input_checkpoint(tmp_path, monkeypatch):
    """dino-tiny weights whose stored config asks for 4096 px inputs (within STORED_LIMITS)."""
    model = build_model(get_config("dino-tiny").replace(min_size=4096, max_size=4096))
    path = tmp_path / "weights" / "huge-input.pth"
    save_checkpoint(model, path)
    monkeypatch.setenv("DINO_CHECKPOINT_DIRS", str(path.parent))
    return path


def _explorer_recording_runs(monkeypatch):
    from dino_demo.ui.callbacks import Explorer
    from dino_demo.ui.settings import AppSettings

    explorer = Explorer(AppSettings(device="cpu", model_concurrency=1))
    runs = []

    def run(model, cfg, image, *, max_size, **kwargs):
        runs.append(max_size)
        raise _Ran()

    explorer._run = run
    return explorer, runs


@pytest.mark.parametrize("public", [True, False])
def test_a_stored_config_cannot_raise_the_input_size_of_a_public_server(huge_input_checkpoint, monkeypatch, public):
    import gradio as gr

    monkeypatch.setattr(gr, "Warning", lambda message: warnings.append(message))
    warnings, described = [], []
    for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC", "DINO_DEMO_INPUT_SIDE_FACTOR"):
        monkeypatch.delenv(variable, raising=False)
    if public:
        monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    explorer, runs = _explorer_recording_runs(monkeypatch)
    progress = lambda *args, desc="", **kwargs: described.append(desc)  # noqa: E731
    with pytest.raises(_Ran):
        explorer.detect_api(None, str(EXAMPLES_DIR / "chelsea.png"), "custom", str(huge_input_checkpoint), "auto",
                            4096, 0.3, 10, request=_Request("cost"), progress=progress)
    if public:  # dino-tiny's usual maximum, not the file's 4096
        assert runs == [512] and any("caps the model input at 512" in w for w in warnings)
    else:
        assert runs == [4096] and not warnings
    # The cost is stated before the model runs: input size and encoder tokens.
    assert any("encoder tokens" in d for d in described), described


def test_the_public_input_bound_is_configurable(monkeypatch):
    from dino_demo.explore import cost

    cfg = get_config("dino-tiny").replace(min_size=4096, max_size=4096)
    assert cost.bounded_max_input(cfg, 4096, public=True) == 512
    monkeypatch.setenv("DINO_DEMO_INPUT_SIDE_FACTOR", "2")
    assert cost.bounded_max_input(cfg, 4096, public=True) == 1024
    assert cost.bounded_max_input(cfg, 300, public=True) == 300
    big = cost.request_cost(cfg, (4096, 4096))
    assert big.relative == pytest.approx(4096 * 4096 / (256 * 512)) and big.tokens > 300_000
