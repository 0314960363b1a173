"""Whether a result comes from a model that knows only the eight synthetic shapes run on an image
that is not one of their synthetic scenes (a photo, a drawing, a screenshot): its detections then
mean little, and the person is told so, with the model zoo as the remedy.

How a synthetic scene is recognised: `train.synthetic.generate_scene` adds noise drawn
independently for every pixel and every colour channel (`SceneSpec.pixel_noise`, σ = 8 grey
levels). What is left of the colour (chroma) after removing each pixel's local mean is that noise,
everywhere in the scene: its median absolute value is 0.75·σ (6.0 levels). In a photo the fine
detail moves the three channels together (light changes from pixel to pixel, colour hardly; JPEG
keeps colour at half resolution), so the same figure is 5 to 30 times smaller (0.05-1.2 on the
example photos), and a drawing or screenshot has almost none. A scene saved as JPEG or resized
loses that noise and counts as "not a scene": the note then says what is true anyway.

No torch here: the ONNX Runtime path of the command line uses it too.
"""
from __future__ import annotations

import numpy as np

from ..sources.source import UNTRAINED_PREFIX
from ..train.synthetic import CLASS_NAMES, SceneSpec

# Median absolute chroma residual of a scene, per grey level of its pixel noise: the residual of
# iid noise after subtracting the mean of the 4 neighbours has standard deviation sqrt(1 + 4/16)·σ,
# and a Gaussian's median absolute value is 0.6745 of its standard deviation.
SCENE_CHROMA_PER_SIGMA = 0.6745 * 1.25 ** 0.5
# A scene's figure lies within this factor of the expected one (seen: 0.97-1.03 of it; pixels
# clipped at 0 or 255 lower it a little).
SCENE_TOLERANCE = (0.6, 1.5)
# The measure reads at most this many pixels on a side, from the image's centre.
CROP_SIDE = 512
ZOO_HINT = "docs/zoo.md"
# Where a person names a zoo model: the command line, and the page and its API.
CLI_REMEDY = "--checkpoint zoo:dino-4scale-r50"
APP_REMEDY = 'dino-4scale-r50 in the Model menu (model_choice "zoo:dino-4scale-r50" over the API)'


def chroma_noise(image: np.ndarray) -> float:
    """Median absolute chroma residual of an [H, W, 3] uint8 RGB image (grey levels): each pixel
    minus the mean of its 4 neighbours, projected on the two colour axes orthogonal to grey,
    over a centre crop of at most `CROP_SIDE` pixels a side; 0.0 for images under 3 x 3 pixels."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {tuple(image.shape)}")
    h, w = image.shape[:2]
    top, left = max(0, (h - CROP_SIDE) // 2), max(0, (w - CROP_SIDE) // 2)
    x = image[top:top + CROP_SIDE, left:left + CROP_SIDE].astype(np.float32)
    if min(x.shape[:2]) < 3:
        return 0.0
    residual = x[1:-1, 1:-1] - 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
    red, green, blue = residual[..., 0], residual[..., 1], residual[..., 2]
    chroma = np.concatenate([((red - green) / 2 ** 0.5).ravel(), ((red + green - 2 * blue) / 6 ** 0.5).ravel()])
    return float(np.median(np.abs(chroma)))


def looks_like_synthetic_scene(image: np.ndarray, pixel_noise: float = SceneSpec.pixel_noise) -> bool:
    """Whether an [H, W, 3] uint8 RGB image carries the per-channel pixel noise of a synthetic scene
    drawn with `pixel_noise` (see the module docstring)."""
    expected = SCENE_CHROMA_PER_SIGMA * pixel_noise
    low, high = SCENE_TOLERANCE
    return low * expected <= chroma_noise(image) <= high * expected


def knows_only_synthetic_shapes(class_names, model_id: str = "") -> bool:
    """Whether a model with these class names (and results' model id) is a trained model of the
    eight synthetic shapes, like the shipped one (an untrained model knows nothing at all)."""
    return tuple(class_names) == CLASS_NAMES and not model_id.startswith(UNTRAINED_PREFIX)


def synthetic_model_note(result, remedy: str) -> str | None:
    """One sentence for the person when `result` (anything with `image` [H, W, 3] uint8,
    `class_names` and `model_id`, e.g. an `InferenceResult` before it is stored) comes from a model
    of the eight synthetic shapes run on an image that is not a synthetic scene; None otherwise
    (other models, synthetic scenes, results without their image). `remedy`: how to choose a zoo
    model where the person is (`CLI_REMEDY`, `APP_REMEDY`)."""
    image = getattr(result, "image", None)
    model_id = getattr(result, "model_id", "") or ""
    if image is None or not knows_only_synthetic_shapes(getattr(result, "class_names", ()), model_id):
        return None
    if looks_like_synthetic_scene(np.asarray(image)):
        return None
    # The same words whoever runs it (PyTorch or an exported file), so results files agree.
    return (f"This model knows only eight synthetic shapes ({', '.join(CLASS_NAMES)}) and this image is not one "
            f"of its synthetic scenes, so these detections mean little; for photos use a zoo model: "
            f"{remedy} ({ZOO_HINT}).")
