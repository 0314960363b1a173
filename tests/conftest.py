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
