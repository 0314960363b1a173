"""What one visitor's page holds between events (the value of its `gr.State`): the key of its
result in the app's `ResultStore` and its folder of downloads. Small on purpose: the result itself
lives in the store, under the app-wide memory budget. `Sessions` names them and removes what they
leave behind."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from . import cleanup
from .store import ResultStore


@dataclass
class Session:
    """id: Gradio's session hash ("" until the session's first Detect names it); folder: where this
    session's download files are written; result_key: the store key of the current result (None
    before the first Detect); shared: that entry is the example cache's, shared with other
    sessions; reused: it was computed before this session's Detect (for an earlier visitor), so its
    timings are not of this Detect.

    The page's `gr.State` starts from an empty Session (Gradio copies it for each visitor) that the
    handlers fill in place, so that no endpoint has to return the state."""

    id: str = ""
    folder: Path | None = None
    result_key: str | None = None
    shared: bool = False
    reused: bool = False

    def downloads(self) -> Path:
        if self.folder is None:
            raise ValueError("No detection result in this session yet: press Detect (or call /detect) first.")
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def remove_files(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """The app's sessions: each named after Gradio's session hash, with a download folder in the
    app's own folder (removed with the app); a closed session's result and files go at once."""

    def __init__(self, store: ResultStore):
        self.store = store
        cleanup.remove_stale_app_folders()  # left by a killed process
        self._files = cleanup.make_app_folder()

    @property
    def files_folder(self) -> Path:
        """The folder of the sessions' download files (one subfolder per session)."""
        return Path(self._files.name)

    def session(self, session: Session | None, request: gr.Request | None) -> Session:
        """This request's Session, named after Gradio's session hash on its first Detect (filled in
        place: the page's state keeps it without being returned); a new one when none is given."""
        session = Session() if session is None else session
        if not session.id:
            raw = getattr(request, "session_hash", None) or "anonymous"
            session.id = re.sub(r"[^A-Za-z0-9_-]", "", raw)[:64] or "anonymous"
            session.folder = self.files_folder / session.id
        return session

    def close(self, session: Session | None) -> None:
        """The page closed or its state expired: drop its result and its files."""
        if session is None or not session.id:
            return
        if not session.shared:
            self.store.discard(session.result_key)
        session.remove_files()

    def unload(self, request: gr.Request) -> None:
        """`demo.unload`: the browser tab closed. The session's files and result go now, not
        when Gradio finally expires its state."""
        closing = self.session(None, request)
        self.store.discard(closing.id)
        closing.remove_files()
