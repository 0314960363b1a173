"""The model's input, defined once in numpy and PIL: the official resize rule, ImageNet
normalization, zero padding with a padding mask.

Both inference paths build their input here: the PyTorch one (`preprocess.prepare_batch` wraps
these arrays in tensors) and the ONNX Runtime one (`export.runtime`), which must not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..model.config import MIN_INPUT_SIDE, DINOConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_shape(height: int, width: int, min_size: int = 800, max_size: int | None = 1333) -> tuple[int, int]:
    """Output (h, w) of the official resize: shorter side to `min_size` unless the longer side
    would exceed `max_size`, then the longer side to about `max_size` (DETR's rounding)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    size = min_size
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def model_input_size(cfg: DINOConfig, height: int, width: int, max_size: int | None = None,
                     canvas: tuple[int, int] | None = None) -> tuple[int, int]:
    """(h, w) the official resize gives for an image of `height` x `width`, with the longer side
    additionally capped at `max_size` when given (the shorter-side target shrinks with it).

    canvas: (H, W) the result must fit in (a fixed-size model input): the shorter-side target and
    the longer-side cap are also limited by the canvas sides along the image's shorter and longer
    axes. A canvas of (min_size, max_size) leaves the official size of landscape images unchanged.

    Raises ValueError when the result is too small for the detector (very thin images)."""
    cap = cfg.max_size if max_size is None else min(int(max_size), cfg.max_size)
    target = min(cfg.min_size, cap)
    if canvas is not None:
        along_short, along_long = canvas if height <= width else canvas[::-1]
        cap, target = min(cap, along_long), min(target, along_short)
    if cap < MIN_INPUT_SIDE:
        raise ValueError(f"the maximum input size must be at least {MIN_INPUT_SIDE} pixels, got {cap}")
    h, w = resize_shape(height, width, target, cap)
    if min(h, w) < MIN_INPUT_SIDE:
        raise ValueError(
            f"a {width}x{height} image becomes {w}x{h} at the model input; its aspect ratio is too extreme "
            f"(each side must reach {MIN_INPUT_SIDE} pixels)")
    return h, w


def normalize(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 RGB (PIL or HxWx3 array) -> [3, H, W] float32, (x/255 - mean) / std per channel."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {array.dtype} shape {array.shape}")
    scaled = array.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    return (scaled - mean) / std


def pad_batch(images: list[np.ndarray], size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad [C, h, w] arrays (right/bottom) to `size`, by default the largest h and w.

    Returns images [B, C, H, W] (dtype of the first) and masks [B, H, W] bool, True on padding,
    as the official `nested_tensor_from_tensor_list`.
    """
    if not images:
        raise ValueError("pad_batch needs at least one image")
    for image in images:
        if image.ndim != 3:
            raise ValueError(f"expected [C, H, W] arrays, got shape {image.shape}")
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    if size is not None:
        if size[0] < height or size[1] < width:
            raise ValueError(f"cannot pad a {width}x{height} image to {size[1]}x{size[0]}")
        height, width = size
    batch = np.zeros((len(images), images[0].shape[0], height, width), dtype=images[0].dtype)
    masks = np.ones((len(images), height, width), dtype=bool)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
        masks[i, : image.shape[1], : image.shape[2]] = False
    return batch, masks


@dataclass(frozen=True)
class ArrayBatch:
    """images [B, 3, H, W] float32 normalized and zero-padded; masks [B, H, W] bool, True on
    padding; input_sizes: (h, w) of each image after resizing, before padding."""

    images: np.ndarray
    masks: np.ndarray
    input_sizes: tuple[tuple[int, int], ...]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def prepare_arrays(images: list[np.ndarray], cfg: DINOConfig, max_size: int | None = None,
                   canvas: tuple[int, int] | None = None) -> ArrayBatch:
    """HxWx3 uint8 RGB images -> the model's padded batch, each resized by `model_input_size`
    (PIL bilinear, as torchvision's resize of PIL images in the official transforms) and padded
    to the largest image, or to the `canvas` it was fitted into."""
    arrays, sizes = [], []
    for image in images:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8 RGB images, got {getattr(image, 'dtype', type(image))} "
                             f"{getattr(image, 'shape', '')}")
        height, width = image.shape[:2]
        size = model_input_size(cfg, height, width, max_size, canvas)
        pil = Image.fromarray(image)
        if size != (height, width):
            pil = pil.resize((size[1], size[0]), Image.BILINEAR)
        arrays.append(normalize(pil))
        sizes.append(size)
    batch, masks = pad_batch(arrays, canvas)
    return ArrayBatch(batch, masks, tuple(sizes))
