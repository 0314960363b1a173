import os
import socket
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official_dino"

torch.set_num_threads(int(os.environ.get("DINO_DEMO_TEST_THREADS", torch.get_num_threads())))

# Without a GPU, tests/test_ops_triton.py checks the Triton kernels on CPU tensors in Triton's
# interpreter. Triton reads TRITON_INTERPRET when it is imported, and test modules import it
# indirectly at collection (torchvision imports torch._dynamo, which imports triton), so it is set
# here, before any test module is imported. Nothing else in the suite runs Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped when no GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no GPU visible")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return OFFICIAL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """The app served on a free 127.0.0.1 port for one test module."""
    from dino_demo.ui import build_demo, launch

    demo = launch(build_demo(), "127.0.0.1", _free_port(), prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def url(served):
    return served.local_url


@pytest.fixture
def local_zoo(monkeypatch, tmp_path):
    """A zoo entry whose file (the shipped dino-tiny weights, or a random dino-tiny) is served by a
    local http.server on 127.0.0.1, slowly enough (about 2 s) that a download shows its progress."""
    import functools
    import http.server
    import shutil
    import threading
    import time

    from dino_demo.io import zoo
    from dino_demo.io.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint

    served = tmp_path / "served"
    served.mkdir()
    if DEFAULT_CHECKPOINT.is_file():
        shutil.copy(DEFAULT_CHECKPOINT, served / "tiny-zoo.pth")
    else:
        from dino_demo.model.config import get_config
        from dino_demo.model.detector import build_model

        save_checkpoint(build_model(get_config("dino-tiny")), served / "tiny-zoo.pth")

    class Slow(http.server.SimpleHTTPRequestHandler):
        def copyfile(self, source, destination):
            while chunk := source.read(256 * 1024):
                destination.write(chunk)
                time.sleep(0.07)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Slow, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    entry = zoo.ZooEntry("local-tiny", "DINO-tiny from the local server", "dino-tiny", "official", "official",
                         (f"http://127.0.0.1:{server.server_address[1]}/tiny-zoo.pth",), 7, 0.0, 1, "test", "tests")
    monkeypatch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, entry))
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, entry.id: entry})
    monkeypatch.setattr(zoo, "folder", lambda: tmp_path / "zoo")
    for variable in ("SPACE_ID", "DINO_DEMO_PUBLIC", "DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    yield entry
    server.shutdown()
    server.server_close()
