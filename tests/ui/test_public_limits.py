"""What a public server bounds beyond single inputs: the cost of a Detect whatever a checkpoint's
stored config asks for, and the disk its sessions and uploads take."""
import os
import time
from pathlib import Path

import pytest

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
    monkeypatch.setenv("DINO_DEMO_CHECKPOINT_DIRS", str(path.parent))
    return path


def _services_recording_runs(monkeypatch):
    from dino_demo.ui.services import Services
    from dino_demo.ui.settings import AppSettings

    services = Services.make(AppSettings(device="cpu", model_concurrency=1))
    runs = []

    def run(detector, image, *, max_size, **kwargs):
        runs.append(max_size)
        raise _Ran()

    services.models._run = run
    return services, runs


@pytest.mark.parametrize("public", [True, False])
def test_a_stored_config_cannot_raise_the_input_size_of_a_public_server(huge_input_checkpoint, monkeypatch, public):
    import gradio as gr

    from dino_demo.ui.api import ApiEndpoints

    monkeypatch.setattr(gr, "Warning", lambda message: warnings.append(message))
    warnings, described = [], []
    for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC", "DINO_DEMO_INPUT_SIDE_FACTOR"):
        monkeypatch.delenv(variable, raising=False)
    if public:
        monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    services, runs = _services_recording_runs(monkeypatch)
    progress = lambda *args, desc="", **kwargs: described.append(desc)  # noqa: E731
    with pytest.raises(_Ran):
        ApiEndpoints(services).detect(None, str(EXAMPLES_DIR / "chelsea.png"), "custom", str(huge_input_checkpoint),
                                      "auto", 4096, 0.3, 10, request=_Request("cost"), progress=progress)
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


# -- disk ----------------------------------------------------------------------------------------
def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (then, then))


def test_files_of_sessions_that_never_leave_expire_by_age_and_size(monkeypatch):
    """A session that never opens a heartbeat is never closed: its files go by age, and the oldest
    go first when all together pass the quota."""
    from dino_demo.ui import cleanup
    from dino_demo.ui.services import Services
    from dino_demo.ui.settings import AppSettings

    sessions = Services.make(AppSettings(device="cpu", model_concurrency=1)).sessions
    folders = []
    for name, size, age in (("old", 1000, 7200), ("big", 3 << 20, 600), ("fresh", 1000, 10)):
        session = sessions.session(None, _Request(name))
        (session.downloads() / "internals.npz").write_bytes(b"x" * size)
        _age(session.folder, age)
        folders.append(session.folder)
    limits = cleanup.FileLimits(max_age_s=3600, quota_bytes=2 << 20)
    swept = cleanup.sweep([sessions.files_folder], limits, keep=(cleanup.OWNER_FILE,))
    assert [p.name for p in swept.removed] == ["old", "big"]  # the expired one, then the oldest over the quota
    assert not folders[0].exists() and not folders[1].exists() and folders[2].exists()
    assert (sessions.files_folder / cleanup.OWNER_FILE).is_file()
    assert swept.held_bytes < 2 << 20


def test_the_app_sweeps_its_files_and_on_a_public_server_uploads_never_detected(tmp_path, monkeypatch):
    from dino_demo.ui import build_app

    uploads = tmp_path / "gradio"
    never_detected = uploads / "0123abcd"
    never_detected.mkdir(parents=True)
    (never_detected / "upload.png").write_bytes(b"x" * 4096)
    _age(never_detected, 30)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    monkeypatch.setenv("DINO_DEMO_FILES_MAX_AGE_H", str(5 / 3600))  # 5 s: swept every second
    app = build_app()
    try:
        session = app.services.sessions.session(None, _Request("no-heartbeat"))
        (session.downloads() / "detections.json").write_text("{}")
        _age(session.folder, 30)
        deadline = time.time() + 10
        while (never_detected.exists() or session.folder.exists()) and time.time() < deadline:
            time.sleep(0.2)
        assert not never_detected.exists() and not session.folder.exists()
        assert app.sweeper.limits.max_age_s == pytest.approx(5)
    finally:
        app.sweeper.stop()


def test_folders_left_by_a_killed_process_are_removed_at_start(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from dino_demo.ui import cleanup

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    left = tmp_path / "dino-explorer-killed"
    (left / "session").mkdir(parents=True)
    (left / cleanup.OWNER_FILE).write_text(str(killed.pid))
    (left / "session" / "internals.npz").write_bytes(b"x" * 1000)
    killed.kill()  # SIGKILL: nothing of the process removes its folder
    killed.wait()
    running = tmp_path / "dino-explorer-running"
    running.mkdir()
    (running / cleanup.OWNER_FILE).write_text(str(os.getpid()))
    unmarked_new = tmp_path / "dino-explorer-new"  # being created right now, or an older version's
    unmarked_new.mkdir()
    unmarked_old = tmp_path / "dino-explorer-old"  # an older version's, untouched for two days
    (unmarked_old / "session").mkdir(parents=True)
    _age(unmarked_old, 2 * 86400)

    from dino_demo.ui.services import Services
    from dino_demo.ui.settings import AppSettings

    sessions = Services.make(AppSettings(device="cpu", model_concurrency=1)).sessions  # an app starting
    assert not left.exists() and running.exists() and unmarked_new.exists() and not unmarked_old.exists()
    assert sessions.files_folder.parent == tmp_path
    assert (sessions.files_folder / cleanup.OWNER_FILE).read_text() == str(os.getpid())


def test_the_result_budget_counts_what_is_really_held():
    """A small view keeps its whole storage alive, and a storage shared by two fields is held once:
    the store's budget counts storages, not the elements of each field."""
    from dataclasses import dataclass

    import numpy as np
    import torch

    from dino_demo.explore.stored import _nbytes

    @dataclass
    class Held:
        view: torch.Tensor
        same: torch.Tensor
        rows: np.ndarray

    big = torch.zeros(1000, 1000)  # 4 MB
    pixels = np.zeros((1000, 1000), np.uint8)  # 1 MB
    held = Held(view=big[:1], same=big[1:2], rows=pixels[:10])
    assert _nbytes(held) == big.nbytes + pixels.nbytes
    assert _nbytes([torch.zeros(10), torch.zeros(10)]) == 80
