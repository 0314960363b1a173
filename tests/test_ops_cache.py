"""The kernel cache heals: a damaged cached library is never loaded (it could crash the process);
it is linked or built again, and the op keeps answering. A server builds in the background and
serves with the reference until the kernel is ready."""
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from dino_demo.ops import extension

PROBE = """
import torch
from dino_demo import ops
from dino_demo.ops.reference import ms_deform_attn_reference
name, reason = ops.backend("cpu")
shapes = torch.tensor([[5, 7], [3, 4]])
starts = torch.tensor([0, 35])
value = torch.rand(1, 47, 2, 4)
locations = torch.rand(1, 6, 2, 2, 3, 2)
weights = torch.rand(1, 6, 2, 2, 3)
same = torch.allclose(ops.ms_deform_attn(value, shapes, starts, locations, weights),
                      ms_deform_attn_reference(value, shapes, starts, locations, weights), atol=1e-6)
from dino_demo.explore.inference import run
from dino_demo.explore.models import load
import numpy as np
model, cfg = load("untrained:dino-tiny")
answered = len(run(model, cfg, np.zeros((64, 64, 3), np.uint8)).detections) > 0
print(name, same and answered)
"""


@pytest.fixture
def cache_copy(tmp_path):
    """A copy of this machine's built CPU kernel directory in a cache of its own."""
    built = extension.cache_dir(f"ops-cpu-{extension._build_hash('cpu', None)}")
    library = built / "dino_demo_ops_cpu.so"
    if not extension.load("cpu").ok or not library.is_file():
        pytest.skip(f"the CPU kernel is not built here: {extension.load('cpu').reason}")
    copy = tmp_path / "cache" / built.name
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("*.lock"))
    return tmp_path / "cache", copy / "dino_demo_ops_cpu.so"


def _probe(cache) -> str:
    env = {**os.environ, "DINO_DEMO_CACHE": str(cache)}
    env.pop("DINO_DEMO_OP", None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the process died ({done.returncode}): {done.stderr[-1500:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_cached_library_is_rebuilt_and_the_op_answers(cache_copy, damage):
    cache, library = cache_copy
    original = library.read_bytes()
    record = library.with_name(library.name + ".sha256")
    if damage == "truncated":  # what crashed the server with SIGBUS on every start
        library.write_bytes(original[: len(original) // 3])
    else:  # same size, other bytes: only the checksum tells
        library.write_bytes(original[:4096] + bytes(len(original) - 4096))
    assert _probe(cache) == "cpu-kernel True"
    assert library.stat().st_size > 0 and record.is_file()
    assert record.read_text().strip() == extension._sha256(library)


@pytest.mark.slow
def test_a_library_without_a_record_is_checked_in_a_child_process(cache_copy):
    cache, library = cache_copy
    record = library.with_name(library.name + ".sha256")
    record.unlink(missing_ok=True)
    assert _probe(cache) == "cpu-kernel True"
    assert record.read_text().strip() == extension._sha256(library)


def test_a_background_build_does_not_hold_up_the_op(monkeypatch):
    release = threading.Event()

    def slow_build(kind, require_gpu):
        release.wait(30)
        return extension.LoadResult(False, "test build finished")

    monkeypatch.setattr(extension, "_results", {})
    monkeypatch.setattr(extension, "_building", {})
    monkeypatch.setattr(extension, "_key_locks", {})
    monkeypatch.setattr(extension, "_load", slow_build)
    extension.build_in_background("cpu")
    start = time.perf_counter()
    waiting = extension.load("cpu")
    assert time.perf_counter() - start < 1.0
    assert not waiting.ok and waiting.reason.startswith("still compiling")
    release.set()
    deadline = time.time() + 30
    while extension._building and time.time() < deadline:
        time.sleep(0.05)
    assert extension.load("cpu").reason == "test build finished"
