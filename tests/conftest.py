import os
import socket
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official_dino"

torch.set_num_threads(int(os.environ.get("DINO_DEMO_TEST_THREADS", torch.get_num_threads())))


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
