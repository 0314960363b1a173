"""Training data: COCO-format detection files or synthetic scenes, the official augmentations, and
each process's stream of batches.

Both data sets are map-style `torch.utils.data.Dataset`s whose samples are
`(image [3, H, W] normalized, {"labels": [n] int64 class index, "boxes": [n, 4] normalized
cxcywh})`, and both are `DetectionSet`s for evaluation (`image(i)` as HxWx3 uint8, `image_id(i)`,
`ground_truth()` as a COCO dict). A sample is requested with a key `(index, seed)`: the seed
drives its random augmentation, so a sample is a pure function of its key whichever process or
worker loads it.

COCO files are read the official way (DINO's `ConvertCocoPolysToMask` and `crop`): crowd
annotations (`iscrowd` 1) are not training targets, boxes are clamped to the image and those
without width or height are dropped, also after a crop. Category ids may be any integers; class
index i is the i-th declared category in id order (`Categories`).

The official training augmentation (`official_transform`) is a horizontal flip, then with equal
chance either a resize of the shorter side to one of 480..800 (step 32, longer side at most 1333)
or a resize to 400/500/600, a random crop of 384..600 px per side and the first resize again.
The sizes scale with the model's input size (`min_size / 800`, the official
`data_aug_scale_overlap` rule), so they are the official numbers for the 800-px models.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..io.preprocess import IMAGENET_MEAN, IMAGENET_STD, batch_images, resize_shape, to_tensor_normalized
from ..model.box_ops import box_xyxy_to_cxcywh
from .synthetic import CLASS_NAMES, SceneSpec, category_id, coco_annotations, generate_scene

# The official augmentation sizes (DINO's `coco_transformer.py`) for a model whose input is
# resized to a shorter side of 800.
OFFICIAL_SHORTER_SIDE = 800
OFFICIAL_SCALES = tuple(range(480, 801, 32))
OFFICIAL_CROP_RESIZES = (400, 500, 600)
OFFICIAL_CROP_SIZE = (384, 600)

Target = dict[str, torch.Tensor]
Sample = tuple[torch.Tensor, Target]
Key = tuple[int, int]  # (sample index, augmentation seed)


@dataclass(frozen=True)
class Categories:
    """A data set's categories in class-index order: `ids` (COCO category ids, increasing) and
    their `names`."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.ids:
            raise ValueError("a data set needs at least one category")
        if len(self.ids) != len(self.names):
            raise ValueError(f"{len(self.ids)} category ids for {len(self.names)} names")
        if list(self.ids) != sorted(set(self.ids)):
            raise ValueError(f"category ids must be distinct and increasing, got {self.ids}")

    def __len__(self) -> int:
        return len(self.ids)

    def class_index(self) -> dict[int, int]:
        """category id -> class index."""
        return {category: index for index, category in enumerate(self.ids)}


class DetectionSet(Protocol):
    """What evaluation needs of a data set."""

    def __len__(self) -> int: ...
    def image(self, index: int) -> np.ndarray: ...
    def image_id(self, index: int) -> int: ...
    def ground_truth(self) -> dict: ...


# ----------------------------------------------------------------------------------------------
# Transforms.

class RandomShorterSide(v2.Transform):
    """Resize so that the shorter side is one of `sizes` (chosen at random) and the longer side at
    most `max_size`, with the official rounding (`io.preprocess.resize_shape`, also used at
    inference)."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        super().__init__()
        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes must be positive, got {sizes}")
        self.sizes, self.max_size = tuple(int(s) for s in sizes), max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        size = self.sizes[int(torch.randint(len(self.sizes), ()))]
        return {"size": list(resize_shape(height, width, size, self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resize(inpt, params["size"])


class RandomSizeCrop(v2.Transform):
    """Crop a random region whose width and height are drawn from [min_size, max_size] (each at
    most the image's), at a random position (the official `RandomSizeCrop`)."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        w = int(torch.randint(min(self.min_size, width), min(width, self.max_size) + 1, ()))
        h = int(torch.randint(min(self.min_size, height), min(height, self.max_size) + 1, ()))
        top = int(torch.randint(height - h + 1, ()))
        left = int(torch.randint(width - w + 1, ()))
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, **params)


def drop_empty_boxes(image: Any, target: dict) -> tuple[Any, dict]:
    """Remove the boxes (XYXY) without width or height, and their labels: the official rule after
    reading the annotations and after every crop."""
    boxes = target["boxes"]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return image, {**target, "boxes": tv_tensors.wrap(boxes[keep], like=boxes), "labels": target["labels"][keep]}


def official_transform(min_size: int, max_size: int, augment: bool = True) -> v2.Compose:
    """(PIL image, {"boxes": BoundingBoxes, "labels"}) -> (normalized float image, boxes in CXCYWH).

    With `augment`, the official training augmentation at sizes scaled by min_size / 800; without,
    the resize inference uses (shorter side `min_size`, longer side at most `max_size`).
    """
    steps: list[Any] = [v2.ConvertBoundingBoxFormat(tv_tensors.BoundingBoxFormat.XYXY), v2.ClampBoundingBoxes(),
                        drop_empty_boxes]
    if augment:
        def scaled(sizes: Sequence[int]) -> list[int]:
            return [max(1, int(s * min_size / OFFICIAL_SHORTER_SIDE)) for s in sizes]

        scales = RandomShorterSide(scaled(OFFICIAL_SCALES), max_size)
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomChoice([scales, v2.Compose([
                RandomShorterSide(scaled(OFFICIAL_CROP_RESIZES)),
                RandomSizeCrop(*scaled(OFFICIAL_CROP_SIZE)),
                drop_empty_boxes,
                scales,
            ])]),
        ]
    else:
        steps.append(RandomShorterSide([min_size], max_size))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
              v2.ConvertBoundingBoxFormat(tv_tensors.BoundingBoxFormat.CXCYWH)]
    return v2.Compose(steps)


def normalized_target(boxes: tv_tensors.BoundingBoxes, labels: torch.Tensor) -> Target:
    """CXCYWH pixel boxes -> the model's target: boxes divided by the image size."""
    height, width = boxes.canvas_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return {"labels": labels.to(torch.int64), "boxes": boxes.as_subclass(torch.Tensor).float() / scale}


# ----------------------------------------------------------------------------------------------
# COCO-format files.

def read_coco(path: str | Path) -> dict:
    """A COCO detection file, checked: `images`, `annotations` and `categories` lists, unique ids,
    every annotation on a declared image and category with a 4-number `bbox`. Missing `area`
    (box area) and `iscrowd` (0) are filled in, as pycocotools' evaluation needs them."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON file: {error}") from None
    except RecursionError:
        raise ValueError(f"{path} is not a COCO detection file: its JSON nests too deeply") from None
    where = f"{path} is not a COCO detection file"
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise ValueError(f"{where}: it needs the lists 'images', 'annotations' and 'categories'")
    try:
        images = {int(image["id"]): image for image in data["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: every image needs an 'id' and every category an 'id' and a 'name' "
                         f"({type(error).__name__}: {error})") from None
    if len(images) != len(data["images"]) or len(categories) != len(data["categories"]):
        raise ValueError(f"{where}: image ids and category ids must be unique")
    if not categories:
        raise ValueError(f"{where}: it declares no categories")
    annotations = []
    for n, annotation in enumerate(data["annotations"]):
        try:
            box = [float(v) for v in annotation["bbox"]]
            image_id, category = int(annotation["image_id"]), int(annotation["category_id"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: annotation {n} needs 'image_id', 'category_id' and a numeric 'bbox'") from None
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"{where}: annotation {n} has bbox {annotation['bbox']}, expected 4 finite numbers [x, y, w, h]")
        if image_id not in images:
            raise ValueError(f"{where}: annotation {n} refers to image {image_id}, which is not in 'images'")
        if category not in categories:
            raise ValueError(f"{where}: annotation {n} uses category {category}, which is not in 'categories' "
                             f"(declared: {sorted(categories)})")
        annotations.append({"area": box[2] * box[3], "iscrowd": 0, **annotation, "id": annotation.get("id", n + 1)})
    return {**data, "annotations": annotations}


class CocoDetectionSet(Dataset):
    """The images of `image_dir` with their annotations in the COCO file `annotations`.

    Training samples go through `transform` (`official_transform`); `image(i)` is the unaltered
    image for evaluation. Images are read as the official code reads them (PIL, converted to RGB,
    no EXIF rotation, which COCO annotations do not assume) and must have the size their entry in
    the file gives.
    """

    def __init__(self, image_dir: str | Path, annotations: str | Path, transform: v2.Compose | None = None) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise ValueError(f"image folder not found: {self.image_dir}")
        self.data = read_coco(annotations)
        self.source = str(annotations)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.coco = COCO()
            self.coco.dataset = self.data
            self.coco.createIndex()
        self.ids = sorted(self.coco.imgs)
        if not self.ids:
            raise ValueError(f"{annotations} lists no images")
        missing = [self.coco.imgs[i]["file_name"] for i in self.ids
                   if not (self.image_dir / self.coco.imgs[i]["file_name"]).is_file()]
        if missing:
            raise ValueError(f"{len(missing)} images of {annotations} are not in {self.image_dir}, e.g. {missing[:3]}")
        declared = sorted(self.coco.cats)
        self.categories = Categories(tuple(declared), tuple(self.coco.cats[c]["name"] for c in declared))
        self.transform = transform
        self._class_index = self.categories.class_index()

    def __len__(self) -> int:
        return len(self.ids)

    def image_id(self, index: int) -> int:
        return self.ids[index]

    def _load(self, index: int) -> Image.Image:
        entry = self.coco.imgs[self.ids[index]]
        path = self.image_dir / entry["file_name"]
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        expected = (entry.get("width", image.width), entry.get("height", image.height))
        if image.size != expected:
            raise ValueError(f"{path} is {image.width}x{image.height} but {self.source} says {expected[0]}x{expected[1]}")
        return image

    def image(self, index: int) -> np.ndarray:
        return np.asarray(self._load(index))

    def ground_truth(self) -> dict:
        return self.data

    def __getitem__(self, key: Key) -> Sample:
        index, seed = key
        if self.transform is None:
            raise ValueError("this data set has no training transform")
        image = self._load(index)
        annotations = [a for a in self.coco.imgToAnns[self.ids[index]] if not a.get("iscrowd", 0)]
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4),
            format=tv_tensors.BoundingBoxFormat.XYWH, canvas_size=(image.height, image.width))
        labels = torch.tensor([self._class_index[a["category_id"]] for a in annotations], dtype=torch.int64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tensor, target = self.transform(image, {"boxes": boxes, "labels": labels})
        return tensor.as_subclass(torch.Tensor), normalized_target(target["boxes"], target["labels"])


# ----------------------------------------------------------------------------------------------
# Synthetic scenes.

SYNTHETIC_CATEGORIES = Categories(tuple(category_id(i) for i in range(len(CLASS_NAMES))), CLASS_NAMES)


class SyntheticScenes(Dataset):
    """Scenes 0..length-1 of `seed` (`train.synthetic`), unaugmented: the data the shipped
    dino-tiny was trained on, and its held-out sets."""

    categories = SYNTHETIC_CATEGORIES

    def __init__(self, seed: int, length: int, spec: SceneSpec = SceneSpec()) -> None:
        if length < 1:
            raise ValueError(f"a synthetic set needs at least one scene, got {length}")
        self.seed, self.length, self.spec = seed, length, spec
        self._ground_truth: dict | None = None

    def __len__(self) -> int:
        return self.length

    def image_id(self, index: int) -> int:
        return index + 1

    def image(self, index: int) -> np.ndarray:
        return generate_scene(self.seed, index, self.spec).image

    def ground_truth(self) -> dict:
        if self._ground_truth is None:  # drawn once: every evaluation of a run scores against it
            scenes = [generate_scene(self.seed, i, self.spec) for i in range(self.length)]
            self._ground_truth = coco_annotations(scenes, [f"{i:06d}.png" for i in range(self.length)])
        return self._ground_truth

    def __getitem__(self, key: Key) -> Sample:
        scene = generate_scene(self.seed, key[0], self.spec)
        xyxy = torch.as_tensor(scene.boxes, dtype=torch.float32).reshape(-1, 4) / self.spec.size
        target = {"labels": torch.as_tensor(scene.labels, dtype=torch.int64), "boxes": box_xyxy_to_cxcywh(xyxy)}
        return to_tensor_normalized(scene.image), target


# ----------------------------------------------------------------------------------------------
# Batches.

def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, list[Target]]:
    """Samples -> (images [B, 3, H, W] zero-padded, masks [B, H, W] True on padding, targets)."""
    images, masks = batch_images([image for image, _ in samples])
    return images, masks, [target for _, target in samples]


class Batches:
    """One process's training batches, epoch after epoch, as the official loop draws them: a
    `DistributedSampler` (shuffled with `seed` and the epoch, or in order) split into batches of
    `batch_size` with the incomplete last batch dropped; process `rank` of `world_size` gets its
    share of every global batch.

    `from_step(step)` starts anywhere (a resumed run continues the epoch it stopped in), and a
    sample's augmentation seed depends only on (seed, epoch, index), so the stream is the same
    however often a run is resumed or however many loader workers it has.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0, workers: int = 0) -> None:
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        per_process = math.ceil(len(dataset) / world_size)
        self.steps_per_epoch = per_process // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(dataset)} training images cannot fill one batch of {batch_size} "
                             f"in each of {world_size} processes")

    def epoch_keys(self, epoch: int) -> list[list[Key]]:
        """This process's batches of `epoch` as lists of (index, augmentation seed)."""
        sampler = DistributedSampler(self.dataset, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=self.shuffle, seed=self.seed)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        seeds = np.random.SeedSequence([self.seed, epoch]).generate_state(len(self.dataset), dtype=np.uint64)
        keys = [(index, int(seeds[index] >> 1)) for index in indices]
        b = self.batch_size
        return [keys[i:i + b] for i in range(0, self.steps_per_epoch * b, b)]

    def from_step(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[Target]]]:
        epoch, skip = divmod(step, self.steps_per_epoch)
        while True:
            loader = DataLoader(self.dataset, batch_sampler=self.epoch_keys(epoch)[skip:], collate_fn=collate,
                                num_workers=self.workers, generator=torch.Generator().manual_seed(self.seed + epoch))
            yield from loader
            epoch, skip = epoch + 1, 0
