"""What one visitor's page holds between events (the value of its `gr.State`): the key of its
result in the app's `ResultStore` and its folder of downloads. Small on purpose: the result itself
lives in the store, under the app-wide memory budget."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


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
