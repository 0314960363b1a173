"""Giving freed memory back to the operating system, and reading how much the process holds.

CPython and PyTorch free tensors into glibc's heap, which keeps much of it: after a failed load of
an official checkpoint the process stays larger (figure in benchmarks/RESULTS.md) until
`malloc_trim` hands the pages back. The app calls `release_freed_memory` after dropping results or failing a load.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

from .. import env


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


# glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8


def tune_allocator(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Make glibc's heap give memory back as a server switching models needs: at most `arenas`
    heaps for all threads (one per thread, the default, strands freed memory in each), and blocks
    of `mmap_threshold` bytes or more (activations, weights) always mapped on their own, so that
    freeing one returns it (glibc otherwise raises the threshold as large blocks are freed, and
    they stay in the heap). A setting the operator made (MALLOC_ARENA_MAX,
    MALLOC_MMAP_THRESHOLD_) is left alone. Measured in benchmarks/RESULTS.md (issue 25). Returns
    whether glibc took the settings (False elsewhere)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = True
    if env.text("MALLOC_ARENA_MAX") is None:
        ok &= bool(libc.mallopt(_M_ARENA_MAX, arenas))
    if env.text("MALLOC_MMAP_THRESHOLD_") is None:
        ok &= bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    return ok


def release_freed_memory(collect: bool = False) -> None:
    """Return the heap's free pages to the operating system (glibc only; elsewhere nothing);
    `collect`: first free what only reference cycles still hold (a dropped model's modules)."""
    if collect:
        gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process (this one by default) in MiB (Linux; 0.0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
