"""Files the page serves, written atomically: under a temporary name, then renamed into place, so
that no reader ever sees half a file."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from gradio import processing_utils
from PIL import Image


def save_drawn_image(array: np.ndarray, cache_dir: str | Path, image_format: str) -> str:
    """Path of `array` encoded as `image_format` in Gradio's cache, named by its content.

    Gradio (6.31) saves an image array the same way but rewrites the file in place every time, so
    two sessions drawing the same picture at once (two visitors on one example) could serve each
    other a half-written file: under load, clients saw truncated responses. Returning the path of a
    file written once, whole, avoids it (Gradio serves files already in its cache as they are).
    """
    data = processing_utils.encode_pil_to_bytes(Image.fromarray(array.astype(np.uint8, copy=False)), image_format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    target = folder / f"image.{image_format}"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)
    return str(target)


def write_atomically(path: Path, data: bytes | str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    if isinstance(data, str):
        temporary.write_text(data)
    else:
        temporary.write_bytes(data)
    os.replace(temporary, path)
