"""Turning images into the padded, normalized, masked batch DINO expects (official recipe)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

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


def resize_image(image: Image.Image, min_size: int = 800, max_size: int | None = 1333) -> Image.Image:
    """PIL bilinear resize to `resize_shape` (what torchvision's F.resize does on PIL images)."""
    height, width = resize_shape(image.height, image.width, min_size, max_size)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.BILINEAR)


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
