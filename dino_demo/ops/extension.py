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
A directory that already holds the library is loaded without compiling. `cpp_extension` builds
under a lock file in that directory (an OS advisory lock, released if the holder dies), so
processes starting together compile once and the others wait and then load the result.

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
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

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


_CXX_FLAGS = _cxx_flags()
_LD_FLAGS = ["-fopenmp"] if sys.platform.startswith("linux") else []
_NVCC_FLAGS = ["-O3"]


@dataclass(frozen=True)
class LoadResult:
    """Whether a library is loaded, and a one-line reason (where it came from, or why not)."""

    ok: bool
    reason: str


_results: dict[tuple[str, bool], LoadResult] = {}
_lock = threading.RLock()


def load(kind: str, *, require_gpu: bool = True) -> LoadResult:
    """Build if needed and load the "cpu" or "cuda" library, once per process.

    `require_gpu=False` compiles and loads the CUDA library even when no GPU is visible (to check
    that it builds); its kernels are then registered but cannot run.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown library kind {kind!r}, expected one of {sorted(SOURCES)}")
    key = (kind, require_gpu or kind == "cpu")
    with _lock:
        if key not in _results:
            _results[key] = _load(kind, require_gpu)
        return _results[key]


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
        if _cuda_home() is None:
            return LoadResult(False, "not compiled: nvcc not found (set CUDA_HOME)")
    missing = [name for name in SOURCES[kind] if not (CSRC / name).is_file()]
    if missing:
        return LoadResult(False, f"not compiled: sources {missing} not found in {CSRC}")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return LoadResult(False, f"not compiled: no C++ compiler ({compiler!r} not found)")
    cpp_extension = _cpp_extension()
    if not cpp_extension.is_ninja_available():
        return LoadResult(False, "not compiled: ninja not found (pip install ninja)")

    arch_list = _cuda_arch_list() if kind == "cuda" else None
    name = f"dino_demo_ops_{kind}"
    build_dir = cache_dir(f"ops-{kind}-{_build_hash(kind, arch_list)}")
    build_dir.mkdir(parents=True, exist_ok=True)
    if not (build_dir / f"{name}.so").exists():
        logger.warning(
            "compiling the dino_demo %s kernels into %s (first use, takes a few minutes)", kind, build_dir
        )
    try:
        with _env("TORCH_CUDA_ARCH_LIST", arch_list):
            cpp_extension.load(
                name=name,
                sources=[str(CSRC / source) for source in SOURCES[kind]],
                extra_cflags=_CXX_FLAGS,
                extra_cuda_cflags=_NVCC_FLAGS,
                extra_ldflags=_LD_FLAGS,
                extra_include_paths=[str(CSRC)],
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - a failed build or load must never break the caller
        reason = f"build failed: {_first_error_line(str(error))}"
        logger.warning("dino_demo %s kernels unavailable: %s (build log in %s)", kind, reason, build_dir)
        return LoadResult(False, reason)
    archs = f" for sm {arch_list}" if arch_list else ""
    return LoadResult(True, f"compiled{archs} in {build_dir}")


def _cpp_extension():
    """Import `torch.utils.cpp_extension`, pointing it at /usr/local/cuda when CUDA_HOME is unset.

    Without CUDA_HOME, cpp_extension derives the CUDA root from the `nvcc` on PATH, which is wrong
    when that is a wrapper script outside the toolkit (e.g. /usr/local/bin/nvcc).
    """
    if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ and "torch.utils.cpp_extension" not in sys.modules:
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
    configured = os.environ.get("TORCH_CUDA_ARCH_LIST")
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
    flags = [kind, arch_list, _CXX_FLAGS, _LD_FLAGS, _NVCC_FLAGS, os.environ.get("CXX", "c++")]
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
