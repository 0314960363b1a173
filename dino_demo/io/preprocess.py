"""Turning images into the padded, normalized, masked batch DINO expects, as tensors.

`prepare_batch` is the one way images reach the PyTorch model: the arrays of
`model_input.prepare_arrays` (official resize, ImageNet normalization, zero padding with a mask),
as tensors. The rule itself lives in `model_input`, which the ONNX Runtime path shares.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..model.config import DINOConfig
from .model_input import (IMAGENET_MEAN, IMAGENET_STD, model_input_size, normalize, pad_batch, prepare_arrays,
                          resize_shape)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Batch", "batch_images", "model_input_size", "prepare_batch",
           "resize_shape", "to_tensor_normalized"]


def to_tensor_normalized(image: Image.Image | np.ndarray) -> torch.Tensor:
    """uint8 RGB (PIL or HxWx3 array) -> [3, H, W] float32, (x/255 - mean) / std per channel."""
    return torch.from_numpy(normalize(image))


def batch_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad [3, H, W] images to the largest H and W (right/bottom), as `model_input.pad_batch`.

    Returns images [B, 3, H, W] and masks [B, H, W] (True on padding), on the first image's device.
    """
    if not images:
        raise ValueError("batch_images needs at least one image")
    for image in images:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected [3, H, W] tensors, got shape {tuple(image.shape)}")
    batch, masks = pad_batch([image.detach().cpu().numpy() for image in images])
    device = images[0].device
    return torch.from_numpy(batch).to(device), torch.from_numpy(masks).to(device)


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
    """HxWx3 uint8 RGB images -> the model's padded batch (see `model_input.prepare_arrays`)."""
    arrays = prepare_arrays(images, cfg, max_size)
    return Batch(torch.from_numpy(arrays.images), torch.from_numpy(arrays.masks), arrays.input_sizes)
