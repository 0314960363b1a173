"""Loading untrusted images into RGB uint8 arrays.

Everything a user can upload goes through `load_image`: it refuses what is not an image, what is
too large to decode safely (decompression bombs) and what is too small to hold anything, and it
turns every colour mode into RGB (grayscale, palette, alpha, 16-bit, float, CMYK, ...) with the
EXIF orientation applied. Each conversion is reported as a human-readable note.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse to decode images with more pixels than this (a 40 MP photo is about 7300 x 5500).
MAX_PIXELS = 40_000_000
# Smaller sides than this cannot hold anything a detector could find.
MIN_SIDE = 8
# Larger images are downscaled to this longer side by the app and the command line (the model
# input is at most 1333 px anyway; a 4096 x 4096 RGB array is already 50 MB).
MAX_SIDE = 4096

ImageSource = str | Path | bytes | BinaryIO | Image.Image | np.ndarray


class ImageError(ValueError):
    """The input cannot be used as an image; the message says why, for the person who sent it."""


@dataclass(frozen=True)
class LoadedImage:
    """array: [H, W, 3] uint8 RGB, upright. file_size: (H, W) of the decoded, upright image
    before any downscaling; array is smaller only when `load_image` was given `max_side`.
    notes: what was done to the input, for the person who sent it."""

    array: np.ndarray
    file_size: tuple[int, int]
    notes: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        """File pixels per array pixel (1.0 unless the image was downscaled)."""
        return self.file_size[0] / self.array.shape[0]


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
    min_side: int = MIN_SIDE,
) -> LoadedImage:
    """Decode `source` (a path, bytes, a binary file, a PIL image or an array) into RGB uint8.

    Raises ImageError for non-images, corrupt or truncated files, images above `max_pixels`,
    images with a side below `min_side` and unsupported colour modes. Images whose longer side
    exceeds `max_side` are downscaled to it, with a note.
    """
    if isinstance(source, np.ndarray):
        image = _image_from_array(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    try:
        _check_size(image.size, max_pixels)
        notes: list[str] = []
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"the image file is corrupt or truncated ({err})") from None
        if getattr(image, "n_frames", 1) > 1:
            notes.append("animated image: using its first frame")
        array = _to_rgb(_upright(image, notes), notes)
    finally:
        if image is not source:
            image.close()

    h, w = array.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"the image is {w}x{h} pixels; both sides must be at least {min_side} pixels")
    file_size = (h, w)
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if min(new_w, new_h) < min_side:
            raise ImageError(f"the image is {w}x{h} pixels: its aspect ratio is too extreme (downscaled to at most "
                             f"{max_side} pixels, its shorter side would be {min(new_w, new_h)} pixels, under "
                             f"the {min_side}-pixel minimum)")
        array = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.Resampling.LANCZOS))
        notes.append(f"downscaled from {w}x{h} to {new_w}x{new_h} for the model; boxes are given in the "
                     f"{w}x{h} pixels")
    return LoadedImage(array=np.ascontiguousarray(array), file_size=file_size, notes=tuple(notes))


def _open(source: str | Path | bytes | BinaryIO) -> Image.Image:
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageError(f"no such file: {Path(source).name}")
    with warnings.catch_warnings():
        # PIL warns between MAX_IMAGE_PIXELS and twice that; treat both as refusals.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"the image is too large to decode safely ({err})") from None
        except UnidentifiedImageError:
            raise ImageError("the file is not an image in a format this app can read") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"the image file is corrupt or unreadable ({err})") from None


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError(
            f"the image is {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:.0f} megapixels")


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype == np.uint8:
        mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
        return Image.fromarray(np.ascontiguousarray(array), mode=mode)
    if array.dtype == np.uint16:
        return Image.fromarray(np.ascontiguousarray((array // 257).astype(np.uint8)))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("the image array contains NaN or infinite values")
        scaled = array * 255.0 if array.max(initial=0.0) <= 1.0 else array
        return Image.fromarray(np.clip(scaled, 0, 255).round().astype(np.uint8))
    raise ImageError(f"unsupported image array dtype {array.dtype}")


def _upright(image: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF blocks raise all kinds of errors inside PIL
        notes.append("could not read the EXIF orientation; using the image as stored")
        return image
    if orientation in (None, 1):
        return image
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:
        notes.append("could not apply the EXIF orientation; using the image as stored")
        return image
    notes.append(f"rotated upright from EXIF orientation {orientation}")
    return upright


def _to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        notes.append(f"converted {_MODE_NAMES.get(mode, mode)} to 8-bit RGB")
        return _gray_to_rgb8(np.asarray(image), high_bit_depth=mode != "F")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        notes.append("composited the transparent parts onto white")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    try:
        rgb = image.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported colour mode {mode}") from None
    if mode not in ("L", "P", "1"):
        notes.append(f"converted {_MODE_NAMES.get(mode, mode)} to RGB")
    return np.asarray(rgb)


_MODE_NAMES = {
    "I;16": "16-bit grayscale", "I;16L": "16-bit grayscale", "I;16B": "16-bit grayscale",
    "I;16N": "16-bit grayscale", "I": "32-bit integer grayscale", "F": "floating-point grayscale",
    "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV",
}


def _gray_to_rgb8(values: np.ndarray, *, high_bit_depth: bool) -> np.ndarray:
    values = values.astype(np.float64)
    if high_bit_depth:
        # 16-bit data (also what 16-bit PNGs decode to in mode "I").
        gray = np.clip(values / 257.0, 0, 255)
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        gray = np.nan_to_num((values - lo) / (hi - lo or 1.0)) * 255.0
    gray8 = gray.round().astype(np.uint8)
    return np.repeat(gray8[:, :, None], 3, axis=2)
