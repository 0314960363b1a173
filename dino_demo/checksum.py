"""SHA-256 of files, and the `<file>.sha256` records kept next to them (the kernel cache and the
download cache). Standard library only, so that any module can use it without importing more."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_CHUNK = 1 << 20
_known: dict[tuple[str, int, int], str] = {}


def _key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (remembered for this process while its size and mtime stay the same)."""
    key = _key(path)
    if key not in _known:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        _known[key] = digest.hexdigest()
    return _known[key]


def remember(path: Path, digest: str) -> None:
    """Note the sha256 of a file that was hashed while it was written, so it is not read again."""
    _known[_key(path)] = digest


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The hash recorded for `path` (first word of `<path>.sha256`), if any."""
    try:
        return record_path(path).read_text().split()[0].lower()
    except (OSError, IndexError):
        return None


def write_record(path: Path, digest: str) -> None:
    """Record `digest` as the hash of `path`, atomically."""
    write_atomic(record_path(path), digest + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write a small text file under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
