"""The model input in numpy (`io.model_input`), which the PyTorch and ONNX Runtime paths share."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from dino_demo import get_config
from dino_demo.io.model_input import (IMAGENET_MEAN, IMAGENET_STD, model_input_size, normalize, pad_batch,
                                      prepare_arrays)
from dino_demo.io.preprocess import batch_images, prepare_batch, to_tensor_normalized

from conftest import ROOT


def test_normalize_is_bitwise_the_torch_arithmetic():
    image = np.random.default_rng(0).integers(0, 256, (17, 256, 3), dtype=np.uint8)
    image[0, :, :] = np.arange(256)[:, None]  # every value in every channel
    as_torch = torch.tensor(image).permute(2, 0, 1).float().div(255)
    as_torch = (as_torch - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    np.testing.assert_array_equal(normalize(image), as_torch.numpy())
    np.testing.assert_array_equal(to_tensor_normalized(image).numpy(), as_torch.numpy())


def test_prepare_batch_is_prepare_arrays_as_tensors():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((90, 120, 3), (130, 70, 3))]
    cfg = get_config("dino-tiny")
    arrays, tensors = prepare_arrays(images, cfg, max_size=200), prepare_batch(images, cfg, max_size=200)
    np.testing.assert_array_equal(arrays.images, tensors.images.numpy())
    np.testing.assert_array_equal(arrays.masks, tensors.masks.numpy())
    assert arrays.input_sizes == tensors.input_sizes == ((150, 200), (200, 108))


def test_a_canvas_fits_the_official_rule_into_it():
    r50 = get_config("dino-4scale-r50")
    assert model_input_size(r50, 480, 640, canvas=(800, 1333)) == model_input_size(r50, 480, 640) == (800, 1066)
    assert model_input_size(r50, 1000, 4000, canvas=(800, 1333)) == (333, 1332)
    assert model_input_size(r50, 640, 480, canvas=(800, 1333)) == (800, 600)  # portrait: fits the height
    assert model_input_size(r50, 640, 480, canvas=(1333, 800)) == (1066, 800)
    assert model_input_size(r50, 640, 480, max_size=400, canvas=(1333, 800)) == (400, 300)


def test_padding_to_a_canvas():
    images, masks = pad_batch([np.ones((3, 4, 5), np.float32)], size=(6, 8))
    assert images.shape == (1, 3, 6, 8) and images[0, :, :4, :5].all() and not images[0, :, 4:].any()
    assert masks[0, :4, :5].sum() == 0 and masks.sum() == 6 * 8 - 4 * 5
    batch, batch_masks = batch_images([torch.ones(3, 4, 5), torch.ones(3, 6, 2)])
    assert batch.shape == (2, 3, 6, 5) and batch_masks[1, :, 2:].all() and not batch_masks[1, :, :2].any()
    with pytest.raises(ValueError, match="cannot pad"):
        pad_batch([np.ones((3, 4, 5), np.float32)], size=(3, 8))


def test_the_onnx_runtime_path_imports_no_torch():
    modules = ("dino_demo.io.model_input", "dino_demo.io.results", "dino_demo.runtime.detections",
               "dino_demo.explore.draw.pixels", "dino_demo.export.metadata", "dino_demo.export.runtime",
               "dino_demo.cli.detect")
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
