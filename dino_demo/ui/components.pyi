"""Gradio components with one change each, for what the page needs."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import gradio as gr
import numpy as np
from gradio import processing_utils
from PIL import Image

from gradio.events import Dependency

class DrawnImage(gr.Image):
    """An output image drawn by the app, written to Gradio's cache atomically.

    Gradio (6.31) saves an image array under a name derived from its content and rewrites that file
    in place every time, so two sessions drawing the same picture at once (two visitors on one
    example) can serve each other a half-written file: under load, clients saw truncated responses.
    Here the file is written under a temporary name and renamed into place, once.
    """

    def postprocess(self, value):
        if isinstance(value, np.ndarray):
            value = _save_atomically(value, Path(self.GRADIO_CACHE), self.format or "webp")
        return super().postprocess(value)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def _save_atomically(array: np.ndarray, cache: Path, image_format: str) -> str:
    data = processing_utils.encode_pil_to_bytes(Image.fromarray(array.astype(np.uint8, copy=False)), image_format)
    folder = cache / processing_utils.hash_bytes(data)
    target = folder / f"image.{image_format}"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{uuid.uuid4().hex}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, target)
    return str(target)