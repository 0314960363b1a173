"""Turning images into the padded, normalized, masked batch DINO expects (official recipe).

`prepare_batch` is the one way images reach the model: the official resize (shorter side to
`min_size`, longer side at most `max_size`, optionally capped lower), ImageNet normalization,
zero padding to a common size with a padding mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
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


def model_input_size(cfg: DINOConfig, height: int, width: int, max_size: int | None = None) -> tuple[int, int]:
    """(h, w) the official resize gives for an image of `height` x `width`, with the longer side
    additionally capped at `max_size` when given (the shorter-side target shrinks with it).

    Raises ValueError when the result is too small for the detector (very thin images)."""
    cap = cfg.max_size if max_size is None else min(int(max_size), cfg.max_size)
    if cap < MIN_INPUT_SIDE:
        raise ValueError(f"the maximum input size must be at least {MIN_INPUT_SIDE} pixels, got {cap}")
    h, w = resize_shape(height, width, min(cfg.min_size, cap), cap)
    if min(h, w) < MIN_INPUT_SIDE:
        raise ValueError(
            f"a {width}x{height} image becomes {w}x{h} at the model input; its aspect ratio is too extreme "
            f"(each side must reach {MIN_INPUT_SIDE} pixels)")
    return h, w


def to_tensor_normalized(image: Image.Image | np.ndarray) -> torch.Tensor:
    """uint8 RGB (PIL or HxWx3 array) -> [3, H, W] float32, (x/255 - mean) / std per channel."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {array.dtype} shape {array.shape}")
    tensor = torch.tensor(array).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def batch_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad normalized [3, H, W] images to the largest H and W (right/bottom).

    Returns images [B, 3, H, W] and masks [B, H, W] (True on padding), as the official
    `nested_tensor_from_tensor_list`.
    """
    if not images:
        raise ValueError("batch_images needs at least one image")
    for image in images:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected [3, H, W] tensors, got shape {tuple(image.shape)}")
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = images[0].new_zeros((len(images), 3, height, width))
    masks = torch.ones((len(images), height, width), dtype=torch.bool, device=images[0].device)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
        masks[i, : image.shape[1], : image.shape[2]] = False
    return batch, masks


@dataclass(frozen=True)
class Batch:
    """images [B, 3, H, W] normalized and zero-padded; masks [B, H, W] True on padding;
    input_sizes: (h, w) of each image after resizing, before padding."""

    images: torch.Tensor
    masks: torch.Tensor
    input_sizes: tuple[tuple[int, int], ...]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def prepare_batch(images: list[np.ndarray], cfg: DINOConfig, max_size: int | None = None) -> Batch:
    """HxWx3 uint8 RGB images -> the model's padded batch, each resized by `model_input_size`
    (PIL bilinear, as torchvision's resize of PIL images in the official transforms)."""
    tensors, sizes = [], []
    for image in images:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8 RGB images, got {getattr(image, 'dtype', type(image))} "
                             f"{getattr(image, 'shape', '')}")
        height, width = image.shape[:2]
        size = model_input_size(cfg, height, width, max_size)
        pil = Image.fromarray(image)
        if size != (height, width):
            pil = pil.resize((size[1], size[0]), Image.BILINEAR)
        tensors.append(to_tensor_normalized(pil))
        sizes.append(size)
    batch, masks = batch_images(tensors)
    return Batch(batch, masks, tuple(sizes))
