"""Synthetic shape scenes: the detection data set the offline "dino-tiny" model is trained on.

A scene is a square RGB image with a few filled shapes of the eight classes of the "dino-tiny"
variant (circle, square, triangle, star, ring, cross, hexagon, ellipse) on a textured, noisy
background. Every scene is a pure function of (seed, index, size), so the trainer draws scenes in
memory and a held-out set is simply another seed.

Rules the annotations follow:
- Shapes are painted in order; later shapes cover earlier ones. Drawing is aliased (hard masks),
  so "the pixels of an object" is exact: the pixels painted with its colour and not covered by a
  later shape.
- Boxes tightly enclose the visible pixels (pixel-edge convention: x0 = leftmost visible column,
  x1 = rightmost visible column + 1), so a partly covered shape gets the box of what is visible.
- A shape whose visible area is below `MIN_VISIBLE_FRACTION` of its own area is removed from the
  scene (not painted, not annotated). Removing a shape only uncovers the others, so every shape
  left keeps at least that fraction visible.
- Class index (model label) = COCO `category_id` - 1; `category_id` runs 1..8 in the order of
  `CLASS_NAMES`, which is the order of the model's `class_names`.

The command `python -m dino_demo synthetic` (`dino_demo.cli.synthetic`): `python -m dino_demo synthetic --seed S --count N --size 320 --out DIR` writes
`DIR/000000.png ...` and `DIR/annotations.json` (COCO format); `--category-ids` numbers the eight
categories differently (a data set whose ids are not the model's, to fine-tune on).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "ellipse")
MIN_VISIBLE_FRACTION = 0.6
# Shape diameters (before rotation) are log-uniform between 12 px and half the image side.
MIN_DIAMETER_PX = 12.0
MAX_DIAMETER_FRACTION = 0.5


def category_id(label: int) -> int:
    """COCO category id of a model class index."""
    return int(label) + 1


def label_of(category: int) -> int:
    """Model class index of a COCO category id."""
    return int(category) - 1


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are drawn. `max_objects` shapes are attempted; occlusion may remove some."""

    size: int = 320
    min_objects: int = 1
    max_objects: int = 6
    pixel_noise: float = 8.0

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"scene size must be >= 32 px, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.pixel_noise < 0:
            raise ValueError(f"pixel_noise must be >= 0, got {self.pixel_noise}")


@dataclass
class Scene:
    """One generated scene.

    image: [H, W, 3] uint8. boxes: [N, 4] float32 xyxy pixels (pixel-edge convention).
    labels: [N] int64 model class index. masks: [N, H, W] bool visible pixels of each object.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


# ----------------------------------------------------------------------------------------------
# Shape outlines on the unit disc (radius 1), as polygons.

def _regular_polygon(sides: int, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(sides) / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(half_width: float) -> np.ndarray:
    a, w = 1.0, half_width
    return np.array([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w),
                     (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)])


def _ellipse(ratio: float, vertices: int = 72) -> np.ndarray:
    angles = 2 * math.pi * np.arange(vertices) / vertices
    return np.stack([np.cos(angles), ratio * np.sin(angles)], axis=1)


def _outlines(label: int, rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    """Polygons of one shape on the unit disc; each (polygon, filled) — unfilled ones are holes."""
    name = CLASS_NAMES[label]
    if name == "circle":
        return [(_ellipse(1.0), True)]
    if name == "square":
        return [(_regular_polygon(4, math.pi / 4), True)]
    if name == "triangle":
        return [(_regular_polygon(3, -math.pi / 2), True)]
    if name == "star":
        return [(_star(5, rng.uniform(0.38, 0.5)), True)]
    if name == "ring":
        return [(_ellipse(1.0), True), (_ellipse(1.0) * rng.uniform(0.45, 0.65), False)]
    if name == "cross":
        return [(_cross(rng.uniform(0.25, 0.38)), True)]
    if name == "hexagon":
        return [(_regular_polygon(6), True)]
    if name == "ellipse":
        return [(_ellipse(rng.uniform(0.4, 0.65)), True)]
    raise ValueError(f"unknown class index {label}")


def _shape_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Full (unoccluded) [size, size] bool mask of one randomly sized, rotated and placed shape."""
    diameter = math.exp(rng.uniform(math.log(MIN_DIAMETER_PX), math.log(MAX_DIAMETER_FRACTION * size)))
    radius = diameter / 2
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = rng.uniform(radius, size - radius, size=2)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon, filled in _outlines(label, rng):
        points = polygon @ rotation.T * radius + centre
        draw.polygon([tuple(p) for p in points.tolist()], fill=255 if filled else 0)
    return np.asarray(canvas) > 0


# ----------------------------------------------------------------------------------------------
# Backgrounds and colours.

def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size, 3] low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, size=(cells, cells, 3)).astype(np.float32)
    layers = [np.asarray(Image.fromarray(grid[..., c]).resize((size, size), Image.BILINEAR)) for c in range(3)]
    return np.stack(layers, axis=-1)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size, 3] float32 textured background: base colour, blotches, and stripes or checks."""
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    image = base + rng.uniform(15, 45) * _smooth_noise(size, int(rng.integers(3, 9)), rng)
    texture = rng.integers(0, 3)
    if texture > 0:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        period = rng.uniform(6, 30)
        angle = rng.uniform(0, math.pi)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        if texture == 1:
            pattern = np.sin(2 * math.pi * u / period)
        else:
            v = -xx * math.sin(angle) + yy * math.cos(angle)
            pattern = np.sign(np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / period))
        image = image + rng.uniform(6, 18) * pattern[..., None]
    return image


def _distinct_colour(avoid: list[np.ndarray], rng: np.random.Generator, min_distance: float = 90.0) -> np.ndarray:
    """A random RGB colour at least `min_distance` (L2) from every colour in `avoid`, or the
    best of 16 tries."""
    best, best_distance = None, -1.0
    for _ in range(16):
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        distance = min(float(np.linalg.norm(colour - other)) for other in avoid)
        if distance >= min_distance:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


# ----------------------------------------------------------------------------------------------
# Scenes.

def _mask_box(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each mask when they are painted in order (later ones on top)."""
    covered = np.zeros_like(masks[0]) if masks else None
    visible = [None] * len(masks)
    for i in range(len(masks) - 1, -1, -1):
        visible[i] = masks[i] & ~covered
        covered = covered | masks[i]
    return visible


def generate_scene(seed: int, index: int, spec: SceneSpec = SceneSpec()) -> Scene:
    """Scene `index` of the data set `seed`; identical for identical arguments."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got {seed}, {index}")
    rng = np.random.default_rng([seed, index, spec.size])
    size = spec.size
    image = _background(size, rng)
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    labels = rng.integers(0, len(CLASS_NAMES), size=count)
    masks = [_shape_mask(int(label), size, rng) for label in labels]
    colours = []
    for i, mask in enumerate(masks):
        avoid = [image[mask].mean(axis=0) if mask.any() else image.mean(axis=(0, 1))]
        avoid += [colours[j] for j in range(i) if (masks[j] & mask).any()]
        colours.append(_distinct_colour(avoid, rng))
    shading = [rng.uniform(0, 25) for _ in masks]

    visible = visible_masks(masks)
    keep = [i for i, (full, seen) in enumerate(zip(masks, visible))
            if full.any() and seen.sum() >= MIN_VISIBLE_FRACTION * full.sum()]
    masks = [masks[i] for i in keep]
    visible = visible_masks(masks)

    texture = _smooth_noise(size, 6, rng)
    for i, mask in zip(keep, masks):
        image[mask] = colours[i] + shading[i] * texture[mask]
    if spec.pixel_noise > 0:
        image = image + rng.normal(0, spec.pixel_noise, size=image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    boxes = np.stack([_mask_box(m) for m in visible]) if keep else np.zeros((0, 4), np.float32)
    stacked = np.stack(visible) if keep else np.zeros((0, size, size), bool)
    return Scene(image=image, boxes=boxes, labels=labels[keep].astype(np.int64), masks=stacked)


# ----------------------------------------------------------------------------------------------
# COCO export.

def coco_categories(ids: tuple[int, ...] | None = None) -> list[dict]:
    """The eight categories, numbered `ids` (in `CLASS_NAMES` order; default 1..8)."""
    ids = ids or tuple(category_id(i) for i in range(len(CLASS_NAMES)))
    if len(ids) != len(CLASS_NAMES) or len(set(ids)) != len(ids):
        raise ValueError(f"need {len(CLASS_NAMES)} distinct category ids, got {ids}")
    return [{"id": int(i), "name": name, "supercategory": "shape"} for i, name in zip(ids, CLASS_NAMES)]


def coco_annotations(scenes: list[Scene], file_names: list[str], category_ids: tuple[int, ...] | None = None) -> dict:
    """COCO detection dict of scenes (image id = position + 1, bbox = xywh of the visible pixels),
    categories numbered `category_ids` (default 1..8)."""
    categories = coco_categories(category_ids)
    images, annotations = [], []
    for image_id, (scene, file_name) in enumerate(zip(scenes, file_names), start=1):
        height, width = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for box, label, mask in zip(scene.boxes.tolist(), scene.labels.tolist(), scene.masks):
            x0, y0, x1, y1 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": categories[label]["id"],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()), "iscrowd": 0,
            })
    return {"images": images, "annotations": annotations, "categories": categories}


def write_dataset(out: Path, seed: int, count: int, spec: SceneSpec = SceneSpec(),
                  category_ids: tuple[int, ...] | None = None) -> dict:
    """Write `count` scenes of `seed` as PNGs plus `annotations.json` into `out`; returns the COCO dict."""
    out.mkdir(parents=True, exist_ok=True)
    scenes, names = [], []
    for index in range(count):
        scene = generate_scene(seed, index, spec)
        name = f"{index:06d}.png"
        Image.fromarray(scene.image).save(out / name)
        scenes.append(scene)
        names.append(name)
    coco = coco_annotations(scenes, names, category_ids)
    (out / "annotations.json").write_text(json.dumps(coco))
    return coco
