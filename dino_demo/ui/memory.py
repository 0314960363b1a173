"""Giving freed memory back to the operating system, and reading how much the process holds.

CPython and PyTorch free tensors into glibc's heap, which keeps much of it: after a failed load of
an official checkpoint the process stays larger (figure in benchmarks/RESULTS.md) until
`malloc_trim` hands the pages back. The app calls `release_freed_memory` after dropping results or failing a load.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Return the heap's free pages to the operating system (glibc only; elsewhere nothing)."""
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
