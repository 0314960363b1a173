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
from dino_demo.runtime.dino import run
from dino_demo.explore.models import load
import numpy as np
detector = load("untrained:dino-tiny")
model, cfg = detector.model, detector.config
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


# -- a kernel cache that cannot be written ----------------------------------------------------------
REASON_PROBE = PROBE.replace('print(name, same and answered)', 'print(name, same and answered, "|", reason)')


def _probe_env(env: dict) -> tuple[str, str]:
    env = {**os.environ, **env}
    env.pop("DINO_DEMO_OP", None)
    done = subprocess.run([sys.executable, "-c", REASON_PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the op raised ({done.returncode}): {done.stderr[-1500:]}"
    outcome, reason = done.stdout.strip().splitlines()[-1].split(" | ", 1)
    return outcome, reason


def _built_library() -> extension.Path:
    library = extension.cache_dir(f"ops-cpu-{extension._build_hash('cpu', None)}") / "dino_demo_ops_cpu.so"
    if not extension.load("cpu").ok or not library.is_file():
        pytest.skip(f"the CPU kernel is not built here: {extension.load('cpu').reason}")
    return library


def test_an_uncreatable_cache_builds_in_a_private_temporary_folder(tmp_path):
    """DINO_DEMO_CACHE on a read-only file system (/sys): the library goes to <tmp>/dino_demo-<uid>/
    (here a copy of this machine's build is already there, so nothing is compiled)."""
    library = _built_library()
    private = tmp_path / "tmp" / f"dino_demo-{os.getuid()}"
    private.mkdir(parents=True, mode=0o700)
    shutil.copytree(library.parent, private / library.parent.name, ignore=shutil.ignore_patterns("*.lock"))
    outcome, reason = _probe_env({"DINO_DEMO_CACHE": "/sys/dino_demo_cache", "TMPDIR": str(tmp_path / "tmp")})
    assert outcome == "cpu-kernel True" and "temporary folder" in reason and "not writable" in reason, reason


def test_a_cache_path_under_a_file_falls_back_to_the_reference_and_says_why(tmp_path):
    """No usable cache and no compiler: the reference op answers, and the reason (the Runtime
    panel's) says the cache is not writable."""
    (tmp_path / "a-file").write_text("")
    outcome, reason = _probe_env({"DINO_DEMO_CACHE": str(tmp_path / "a-file" / "cache"), "TMPDIR": str(tmp_path),
                                  "CXX": "no-such-compiler"})
    assert outcome == "reference True", (outcome, reason)
    assert "NotADirectoryError" in reason and "not writable" in reason and "no C++ compiler" in reason


def test_a_temporary_folder_of_another_user_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(extension.os, "getuid", lambda: 4242)  # the folder below belongs to the real user
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    planted = tmp_path / "dino_demo-4242"
    planted.mkdir(mode=0o777)
    folder = extension._temporary_build_dir("ops-cpu-x")
    assert folder is not None and planted not in folder.parents and folder.parent.stat().st_mode & 0o077 == 0


def _read_only_mount(source: extension.Path, target: extension.Path) -> list[str] | None:
    """A command prefix that shows `source` read-only at `target` (a private mount namespace; as
    root, which ignores file modes), or None where this machine allows none."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {source} {target} && "
                            f"mount -o remount,ro,bind {target} && ! touch {target}/x"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'mount --bind {source} {target} && mount -o remount,ro,bind {target} && '
            'exec "$0" "$@"']


def test_a_read_only_cache_holding_the_library_is_used_as_it_is(tmp_path):
    library = _built_library()
    cache = tmp_path / "cache"
    shutil.copytree(library.parent, cache / library.parent.name, ignore=shutil.ignore_patterns("*.lock"))
    env = {**os.environ, "DINO_DEMO_CACHE": str(cache), "TMPDIR": str(tmp_path / "no-tmp")}
    env.pop("DINO_DEMO_OP", None)
    if os.geteuid() != 0:
        for path in [cache, *cache.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        prefix = []
    else:
        view = tmp_path / "view"
        view.mkdir()
        prefix = _read_only_mount(cache, view)
        if prefix is None:
            pytest.skip("running as root without mount namespaces: no read-only folder can be made")
        env["DINO_DEMO_CACHE"] = str(view)
    done = subprocess.run([*prefix, sys.executable, "-c", REASON_PROBE], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-1500:]
    outcome, reason = done.stdout.strip().splitlines()[-1].split(" | ", 1)
    assert outcome == "cpu-kernel True" and "read-only cache" in reason, reason
