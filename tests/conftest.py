import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official_dino"

torch.set_num_threads(int(os.environ.get("DINO_DEMO_TEST_THREADS", torch.get_num_threads())))


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return OFFICIAL
