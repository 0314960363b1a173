"""Compile the kernels in `csrc/` on first use and load them into the process.

There is one shared library per device type, built by `torch.utils.cpp_extension.load`:

- "cpu":  `ms_deform_attn_cpu.cpp` (CPU kernels);
- "cuda": `ms_deform_attn_cuda.cu` (CUDA kernels).

Both include `ms_deform_attn.h` (the shared input check) and register implementations
(`TORCH_LIBRARY_IMPL`) of the ops whose schema `registration` defines in Python, so either loads
on its own.

Each library is built in its own cache directory `<cache>/ops-<kind>-<hash>`, where `<cache>` is
`$DINO_DEMO_CACHE` or `~/.cache/dino_demo`, and the hash covers every file in `csrc/`, the
compiler flags, the torch, CUDA and Python versions and, for "cuda", the target architectures.
A directory that already holds the library is loaded without compiling, once the library proves
sound: its SHA-256 must equal the one recorded next to it (`<name>.so.sha256`) when it was built
and loaded successfully; a library without that record (an interrupted build, or one from before
records were kept) is first loaded in a child process. A library that fails either check (empty,
truncated, overwritten: loading it could crash the process) is removed and linked again from the
object files, or rebuilt from scratch if that fails. An OS advisory lock in the directory (released
if the holder dies) makes processes starting together build once; the others wait, then load.

`build_in_background(kind)` starts the build in a thread; until it is done, `load(kind)` answers
at once that the kernel is still compiling (the op then serves with Triton or the reference).

CUDA architectures: `TORCH_CUDA_ARCH_LIST` when set, else those of the visible GPUs (capped, as
torch does, at the newest this torch build has kernels for, with PTX for the newest so that a
newer card can still run it), else `DEFAULT_CUDA_ARCH_LIST` (only reachable when compiling
without a GPU, as `build --cuda` does).

Nothing here raises: a library that cannot be built or loaded gives a `LoadResult` whose
reason `dino_demo.ops.backend()` reports, and the op falls back to Triton or the reference.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from .. import env
from ..checksum import file_sha256 as _sha256
from ..checksum import record_path, recorded_sha256, write_record
from ..paths import CSRC_DIR, cache_dir

logger = logging.getLogger(__name__)

CSRC = CSRC_DIR  # a module attribute, so that tests can point it at other sources
SOURCES = {
    "cpu": ("ms_deform_attn_cpu.cpp",),
    "cuda": ("ms_deform_attn_cuda.cu",),
}
DEFAULT_CUDA_ARCH_LIST = "9.0"


def _cxx_flags() -> list[str]:
    """-O3, OpenMP for at::parallel_for on Linux, and AVX2 + FMA on x86 CPUs that have them.

    The flags are part of the cache hash, so a cache shared with an older CPU builds its own copy.
    """
    flags = ["-O3"]
    if sys.platform.startswith("linux"):
        flags.append("-fopenmp")
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


# Tuples: they are part of the cache hash, and cpp_extension.load appends its own libraries to the
# lists it is given, so it only ever gets copies.
_CXX_FLAGS = tuple(_cxx_flags())
_LD_FLAGS = ("-fopenmp",) if sys.platform.startswith("linux") else ()
_NVCC_FLAGS = ("-O3",)


@dataclass(frozen=True)
class LoadResult:
    """Whether a library is loaded, and a one-line reason (where it came from, or why not)."""

    ok: bool
    reason: str


_results: dict[tuple[str, bool], LoadResult] = {}
_building: dict[str, float] = {}  # kind -> when its background build started (time.monotonic)
_lock = threading.Lock()  # guards _results and _building
_key_locks: dict[tuple[str, bool], threading.Lock] = {}


def load(kind: str, *, require_gpu: bool = True) -> LoadResult:
    """Build if needed and load the "cpu" or "cuda" library, once per process.

    `require_gpu=False` compiles and loads the CUDA library even when no GPU is visible (to check
    that it builds); its kernels are then registered but cannot run. While a background build of
    `kind` runs (`build_in_background`), answers at once that the kernel is still compiling.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown library kind {kind!r}, expected one of {sorted(SOURCES)}")
    key = (kind, require_gpu or kind == "cpu")
    with _lock:
        if key in _results:
            return _results[key]
        if kind in _building and threading.current_thread().name != _builder_name(kind):
            seconds = time.monotonic() - _building[kind]
            return LoadResult(False, f"still compiling ({seconds:.0f} s so far; first start on this machine)")
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            if key in _results:
                return _results[key]
        result = _load(kind, require_gpu)
        with _lock:
            _results[key] = result
        return result


def build_in_background(kind: str) -> None:
    """Build and load the `kind` library in a daemon thread; `load(kind)` does not wait for it."""
    with _lock:
        if kind in _building or any(k == kind for k, _ in _results):
            return
        _building[kind] = time.monotonic()

    def build() -> None:
        try:
            load(kind)
        finally:
            with _lock:
                _building.pop(kind, None)

    threading.Thread(target=build, name=_builder_name(kind), daemon=True).start()


def _builder_name(kind: str) -> str:
    return f"dino-demo-build-{kind}"


def loaded(kind: str) -> bool:
    """Whether the library of `kind` is loaded in this process (its kernels registered)."""
    with _lock:
        return any(result.ok for (loaded_kind, _), result in _results.items() if loaded_kind == kind)


def _load(kind: str, require_gpu: bool) -> LoadResult:
    if kind == "cuda":
        if torch.version.cuda is None:
            return LoadResult(False, "not compiled: this torch build has no CUDA support")
        if require_gpu and not torch.cuda.is_available():
            return LoadResult(False, "not compiled: no GPU visible")
    missing = [name for name in SOURCES[kind] if not (CSRC / name).is_file()]
    if missing:
        return LoadResult(False, f"not compiled: sources {missing} not found in {CSRC.name}/")
    arch_list = _cuda_arch_list() if kind == "cuda" else None
    name = f"dino_demo_ops_{kind}"
    build_dir = cache_dir(f"ops-{kind}-{_build_hash(kind, arch_list)}")
    build_dir.mkdir(parents=True, exist_ok=True)
    library = build_dir / f"{name}.so"
    archs = f" for sm {arch_list}" if arch_list else ""
    loaded_from = LoadResult(True, f"compiled{archs}, cache {build_dir.name}")
    # An OS lock on the build directory, released when its holder dies.
    with FileLock(str(build_dir / "dino_demo.lock")):
        damaged = False
        if library.exists():  # a sound cached library loads without any toolchain
            problem = _check_library(library)
            if problem is None:
                try:
                    torch.ops.load_library(str(library))
                except Exception as error:  # noqa: BLE001 - loading must never break the caller
                    return LoadResult(False, f"load failed: {_first_error_line(str(error))}")
                return loaded_from
            logger.warning("the cached dino_demo %s kernel library %s: building it again", kind, problem)
            _remove(library)
            damaged = True
        missing_tool = _missing_toolchain(kind)
        if missing_tool is not None:
            return LoadResult(False, f"not compiled: {missing_tool}")
        if not damaged:
            logger.warning("compiling the dino_demo %s kernels into %s (first use, takes a few minutes)",
                           kind, build_dir)
        error = _build(name, kind, build_dir, arch_list)
        if error is not None and damaged:
            # Object files from a damaged build can fail the link too: start from nothing, once.
            logger.warning("dino_demo %s kernels: %s; rebuilding from scratch", kind, error)
            for path in build_dir.iterdir():
                if path.name != "dino_demo.lock":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            error = _build(name, kind, build_dir, arch_list)
        if error is not None:
            reason = f"build failed: {error}"
            logger.warning("dino_demo %s kernels unavailable: %s (build log in %s)", kind, reason, build_dir)
            return LoadResult(False, reason)
        write_record(library, _sha256(library))
    return loaded_from


def _missing_toolchain(kind: str) -> str | None:
    """What is missing to compile the `kind` library, or None."""
    if kind == "cuda" and _cuda_home() is None:
        return "nvcc not found (set CUDA_HOME)"
    compiler = env.text("CXX") or "c++"
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found)"
    if not _cpp_extension().is_ninja_available():
        return "ninja not found (pip install ninja)"
    return None


def _build(name: str, kind: str, build_dir: Path, arch_list: str | None) -> str | None:
    """Compile (what ninja finds out of date) and load the library; the first error line, or None."""
    cpp_extension = _cpp_extension()
    try:
        with _env("TORCH_CUDA_ARCH_LIST", arch_list):
            cpp_extension.load(
                name=name,
                sources=[str(CSRC / source) for source in SOURCES[kind]],
                extra_cflags=list(_CXX_FLAGS),
                extra_cuda_cflags=list(_NVCC_FLAGS),
                extra_ldflags=list(_LD_FLAGS),
                extra_include_paths=[str(CSRC)],
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - a failed build or load must never break the caller
        return _first_error_line(str(error))
    return None


def _check_library(library: Path) -> str | None:
    """Why a cached library must not be loaded into this process, or None when it is sound: its
    checksum equals the recorded one, or (no record) it loads in a child process."""
    expected = recorded_sha256(library)
    if expected is not None:
        return None if _sha256(library) == expected else "does not match the checksum recorded when it was built"
    probe = subprocess.run([sys.executable, "-c", "import sys, torch; torch.ops.load_library(sys.argv[1])",
                            str(library)], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        return f"failed to load in a child process (exit status {probe.returncode})"
    write_record(library, _sha256(library))
    return None


def _remove(library: Path) -> None:
    library.unlink(missing_ok=True)
    record_path(library).unlink(missing_ok=True)


def _cpp_extension():
    """Import `torch.utils.cpp_extension`, pointing it at /usr/local/cuda when CUDA_HOME is unset.

    Without CUDA_HOME, cpp_extension derives the CUDA root from the `nvcc` on PATH, which is wrong
    when that is a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc).
    """
    if env.text("CUDA_HOME") is None and env.text("CUDA_PATH") is None and "torch.utils.cpp_extension" not in sys.modules:
        default = Path("/usr/local/cuda")
        if (default / "bin" / "nvcc").exists():
            os.environ["CUDA_HOME"] = str(default)
    from torch.utils import cpp_extension

    return cpp_extension


def _cuda_home() -> str | None:
    home = _cpp_extension().CUDA_HOME
    if home is None or not (Path(home) / "bin" / "nvcc").exists():
        return None
    return home


def _cuda_arch_list() -> str:
    """The TORCH_CUDA_ARCH_LIST to build with, e.g. "8.6;12.0+PTX" for an RTX 3090 and an RTX 5090."""
    configured = env.text("TORCH_CUDA_ARCH_LIST")
    if configured:
        return configured
    if not torch.cuda.is_available():
        return DEFAULT_CUDA_ARCH_LIST
    built_for = [arch for arch in torch.cuda.get_arch_list() if arch.startswith("sm_")]
    newest = max((int(arch[3:].rstrip("af")) for arch in built_for), default=None)
    capabilities = set()
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        if newest is not None and major * 10 + minor > newest:
            major, minor = divmod(newest, 10)
        capabilities.add((major, minor))
    archs = [f"{major}.{minor}" for major, minor in sorted(capabilities)]
    archs[-1] += "+PTX"
    return ";".join(archs)


def _build_hash(kind: str, arch_list: str | None) -> str:
    digest = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    flags = [kind, arch_list, list(_CXX_FLAGS), list(_LD_FLAGS), list(_NVCC_FLAGS), env.text("CXX") or "c++"]
    versions = [torch.__version__, torch.version.cuda, sys.version_info[:2], sys.platform]
    digest.update(repr((flags, versions)).encode())
    return digest.hexdigest()[:16]


def _first_error_line(message: str) -> str:
    """The first compiler/linker error in a cpp_extension failure message, else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\berror\b", line, flags=re.IGNORECASE) and not line.startswith(("Error building", "FAILED")):
            return line
    return lines[0] if lines else "unknown error"


@contextlib.contextmanager
def _env(key: str, value: str | None):
    """Set (or leave alone, when `value` is None) one environment variable for a block."""
    if value is None:
        yield
        return
    previous = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[key]
        else:
            os.environ[key] = previous
