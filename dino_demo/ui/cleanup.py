"""Keeping the app's temporary files bounded on disk, whoever never says goodbye.

Gradio removes a session's state (and the app its files) when the page's heartbeat stops, but a
client that never opens a heartbeat (an API script, a hostile one) is never seen leaving: its
files stayed until shutdown (about 13 MB per R50 result, plus Gradio's copy). Uploads that are
never detected (up to 50 MB each) stayed in Gradio's cache. And a process killed with SIGKILL
never removes its temporary folder.

Here, every `every_s` seconds (`Sweeper`), the entries of the swept folders (a session's folder, an
upload's folder) not written to for `max_age_s` are removed, then the least recently written
ones until all together fit `quota_bytes`; at start (`remove_stale_app_folders`), the app folders
of processes that are gone are removed. Settings: DINO_DEMO_FILES_MAX_AGE_H (default 1 hour) and
DINO_DEMO_FILES_QUOTA_MB (default 2048); see docs/deployment.md.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import env

log = logging.getLogger(__name__)

APP_FOLDER_PREFIX = "dino-explorer-"
OWNER_FILE = "owner.pid"
DEFAULT_MAX_AGE_H = 1.0
DEFAULT_QUOTA_MB = 2048


@dataclass(frozen=True)
class FileLimits:
    """max_age_s: entries not written to for this long are removed; quota_bytes: what all swept
    folders together may hold; every_s: how often the sweeper looks."""

    max_age_s: float = DEFAULT_MAX_AGE_H * 3600
    quota_bytes: int = DEFAULT_QUOTA_MB << 20
    every_s: float = 60.0

    @classmethod
    def from_env(cls) -> "FileLimits":
        max_age_s = env.positive_number(env.FILES_MAX_AGE_H, DEFAULT_MAX_AGE_H) * 3600
        quota = env.positive_number(env.FILES_QUOTA_MB, DEFAULT_QUOTA_MB)
        return cls(max_age_s=max_age_s, quota_bytes=int(quota * 2**20), every_s=min(60.0, max(1.0, max_age_s / 10)))


@dataclass(frozen=True)
class Swept:
    """What one sweep removed: the entries and their bytes, and what the folders hold after it."""

    removed: tuple[Path, ...]
    freed_bytes: int
    held_bytes: int


def _entry_stats(entry: Path) -> tuple[float, int]:
    """(latest modification time, bytes) of a file or a folder's files (links are not followed)."""
    try:
        info = entry.lstat()
    except OSError:
        return 0.0, 0
    if not entry.is_dir() or entry.is_symlink():
        return info.st_mtime, info.st_size
    latest, size = info.st_mtime, 0
    for root, _, files in os.walk(entry):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            latest, size = max(latest, stat.st_mtime), size + stat.st_size
    return latest, size


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def sweep(folders: list[Path], limits: FileLimits, now: float | None = None, keep: tuple[str, ...] = ()) -> Swept:
    """Remove the entries (files or folders directly inside `folders`) not written to for
    `limits.max_age_s`, then the least recently written ones until the rest fit
    `limits.quota_bytes`. Entries named in `keep` stay."""
    now = time.time() if now is None else now
    entries = []
    for folder in folders:
        try:
            children = list(folder.iterdir())
        except OSError:
            continue
        entries += [(child, *_entry_stats(child)) for child in children if child.name not in keep]
    removed, freed = [], 0
    held = sum(size for _, _, size in entries)
    for entry, written, size in sorted(entries, key=lambda item: item[1]):
        if now - written <= limits.max_age_s and held <= limits.quota_bytes:
            break
        _remove(entry)
        removed.append(entry)
        freed += size
        held -= size
    if removed:
        log.info("removed %d expired temporary entries (%.1f MiB)", len(removed), freed / 2**20)
    return Swept(tuple(removed), freed, held)


class Sweeper(threading.Thread):
    """Sweeps `folders` every `limits.every_s` seconds until `stop()` (a daemon thread)."""

    def __init__(self, folders: list[Path], limits: FileLimits, keep: tuple[str, ...] = ()):
        super().__init__(name="dino-demo-sweeper", daemon=True)
        self.folders, self.limits, self.keep = folders, limits, keep
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.limits.every_s):
            try:
                sweep(self.folders, self.limits, keep=self.keep)
            except Exception:  # noqa: BLE001 - a failed sweep must never end the sweeping
                log.exception("sweeping temporary files failed")

    def stop(self) -> None:
        self._stop_event.set()


def make_app_folder() -> tempfile.TemporaryDirectory:
    """This process's temporary folder (`<tmp>/dino-explorer-*`), marked with its process id so
    that a later start can tell it was left behind."""
    folder = tempfile.TemporaryDirectory(prefix=APP_FOLDER_PREFIX)
    (Path(folder.name) / OWNER_FILE).write_text(str(os.getpid()))
    return folder


def remove_stale_app_folders(root: Path | None = None, min_age_s: float = 86400.0) -> list[Path]:
    """Remove `<tmp>/dino-explorer-*` folders of this user whose process is gone (killed before it
    could remove them). A folder without an owner file (made by an older version, which may still
    be running) is removed only when nothing in it was written for `min_age_s` (a day)."""
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for folder in root.glob(APP_FOLDER_PREFIX + "*"):
        try:
            info = folder.lstat()
            if folder.is_symlink() or not folder.is_dir() or info.st_uid != os.getuid():
                continue
            owner = folder / OWNER_FILE
            if owner.is_file():
                text = owner.read_text().strip()
                if text.isdigit() and _alive(int(text)):
                    continue
            elif time.time() - _entry_stats(folder)[0] < min_age_s:
                continue  # its process may still be running (or creating it right now)
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        log.info("removed %d temporary folders left by processes that are gone", len(removed))
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def gradio_upload_folder() -> Path:
    """Where Gradio keeps uploads and the files it serves (GRADIO_TEMP_DIR)."""
    return Path(env.text("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
