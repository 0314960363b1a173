"""Fine-tuning on COCO-format data: reading the files the official way, the augmentation, re-sized
class heads, resuming, and the fine-tuned model's classes in `detect`."""
import json

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT, load_model
from dino_demo.train import distributed
from dino_demo.train.data import (Batches, Categories, CocoDetectionSet, RandomShorterSide, RandomSizeCrop,
                                  drop_empty_boxes, official_transform)
from dino_demo.train.initialize import train_mode
from dino_demo.train.loop import TrainConfig, prepare, train

SHIPPED = str(DEFAULT_CHECKPOINT)
ONE_PROCESS = distributed.Process(0, 1, torch.device("cpu"))


def _config(shapes_coco, out, **changes) -> TrainConfig:
    settings = dict(out=str(out), init=SHIPPED, min_size=64, max_size=128, workers=0, steps=2, eval_every=2,
                    checkpoint_every=1, **shapes_coco)
    return TrainConfig(**{**settings, **changes})


def test_coco_files_are_read_the_official_way(shapes_coco):
    data = CocoDetectionSet(shapes_coco["train_images"], shapes_coco["train_annotations"],
                            official_transform(64, 128, augment=False))
    assert data.categories == Categories((5, 17, 42), ("round", "polygon", "spiky"))
    annotations = json.loads(open(shapes_coco["train_annotations"]).read())["annotations"]
    own = [a for a in annotations if a["image_id"] == 100]
    assert len(own) == 4  # two shapes, a crowd box and a box without width
    image, target = data[(0, 0)]
    assert image.shape == (3, 64, 64) and type(image) is torch.Tensor
    assert target["labels"].tolist() == [[5, 17, 42].index(a["category_id"]) for a in own[:2]]
    x, y, w, h = own[0]["bbox"]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([x + w / 2, y + h / 2, w, h]) / 64)


def _write(path, text):
    path.write_text(text)
    return path


def test_bad_annotation_files_raise_useful_errors(tmp_path, shapes_coco):
    images = shapes_coco["train_images"]
    good = json.loads(open(shapes_coco["train_annotations"]).read())
    with pytest.raises(ValueError, match="not found"):
        CocoDetectionSet(images, tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not a JSON file"):
        CocoDetectionSet(images, _write(tmp_path / "a.json", "{"))
    with pytest.raises(ValueError, match="not a COCO detection file.*'categories'"):
        CocoDetectionSet(images, _write(tmp_path / "b.json", json.dumps({"images": [], "annotations": []})))
    undeclared = {**good, "annotations": good["annotations"] + [{**good["annotations"][0], "category_id": 99}]}
    with pytest.raises(ValueError, match="category 99, which is not in 'categories'"):
        CocoDetectionSet(images, _write(tmp_path / "c.json", json.dumps(undeclared)))
    missing = {**good, "images": good["images"] + [{"id": 7, "file_name": "nowhere.png", "width": 64, "height": 64}]}
    with pytest.raises(ValueError, match="not in .*nowhere.png"):
        CocoDetectionSet(images, _write(tmp_path / "d.json", json.dumps(missing)))
    with pytest.raises(ValueError, match="missing --val-images, --val-annotations"):
        TrainConfig(out="x", train_images=images, train_annotations=shapes_coco["train_annotations"])


def test_the_augmentation_keeps_boxes_and_labels_together():
    image = Image.new("RGB", (640, 480))
    boxes = tv_tensors.BoundingBoxes([[10, 10, 60, 50], [600, 440, 640, 480], [300, 200, 340, 260]],
                                     format="XYXY", canvas_size=(480, 640))
    sample = {"boxes": boxes, "labels": torch.tensor([0, 1, 2])}
    transform = official_transform(800, 1333)
    sizes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        tensor, target = transform(image, sample)
        height, width = tensor.shape[-2:]
        sizes.add(min(height, width))
        assert len(target["boxes"]) == len(target["labels"]) and max(height, width) <= 1333
        assert target["boxes"].format == tv_tensors.BoundingBoxFormat.CXCYWH and (target["boxes"][:, 2:] > 0).all()
    assert sizes <= set(range(480, 801, 32)) and len(sizes) > 2
    # A crop that misses a box drops it and its label, as the official crop does.
    crop = v2.Compose([RandomSizeCrop(100, 100), drop_empty_boxes])
    dropped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        _, target = crop(image, {"boxes": boxes, "labels": torch.tensor([0, 1, 2])})
        assert len(target["boxes"]) == len(target["labels"])
        dropped += 3 - len(target["labels"])
    assert dropped > 0
    # Sizes follow the model's input size: 480..800 of an 800-px model are 153..256 of a 256-px one.
    scaled = official_transform(256, 512).transforms[4].transforms[0]
    assert isinstance(scaled, RandomShorterSide) and scaled.sizes[0] == 153 and scaled.sizes[-1] == 256


@pytest.mark.slow
def test_finetuning_the_shipped_model_resizes_its_heads_and_lowers_the_loss(tmp_path, shapes_coco):
    job = prepare(_config(shapes_coco, tmp_path), None, ONE_PROCESS)
    model, (shipped, _) = job.model, load_model(SHIPPED)
    assert model.cfg.class_names == ("round", "polygon", "spiky") and model.cfg.category_ids == (5, 17, 42)
    assert model.class_embed[0].weight.shape == (3, 128) and model.label_enc.weight.shape == (4, 128)
    assert model.transformer.enc_out_class_embed.weight.shape == (3, 128)
    kept = shipped.state_dict()
    for key in ("transformer.level_embed", "bbox_embed.0.layers.0.weight", "backbone.0.body.layer3.0.conv1.weight"):
        torch.testing.assert_close(model.state_dict()[key], kept[key])
    # Official rule for a pretrained ResNet: stem and layer1 fixed, BatchNorm fixed.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.0.body.conv1.weight" not in trainable and "backbone.0.body.layer1.0.conv1.weight" not in trainable
    assert "backbone.0.body.layer2.0.conv1.weight" in trainable and "backbone.0.body.layer2.0.bn1.weight" not in trainable

    images, masks, targets = next(job.batches.from_step(0))

    def loss() -> float:
        torch.manual_seed(7)  # the same denoising noise every time
        with torch.no_grad():
            return job.criterion.total(job.criterion(job.net(images, masks, targets), targets)).item()

    train_mode(job.net)
    before = loss()
    for _ in range(3):
        job.step(images, masks, targets)
    assert not job.model.backbone[0].body.bn1.training  # frozen BatchNorm stays in eval mode
    assert loss() < before


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, shapes_coco):
    """A run of two steps (learning rates dropped after step 2), then resumed for a third."""
    out = tmp_path_factory.mktemp("finetuned")
    cfg = _config(shapes_coco, out, lr_drop=2)
    first = train(cfg)
    resumed = train(TrainConfig(**{**cfg.__dict__, "steps": 3}), resume=str(out / "checkpoint.pth"))
    return out, first, resumed


@pytest.mark.slow
def test_resume_continues_the_schedule_and_the_data(finetuned, shapes_coco):
    out, first, resumed = finetuned
    assert first.step == 2 and resumed.step == 3
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    assert checkpoint["step"] == 3
    assert [group["lr"] for group in checkpoint["optimizer"]["param_groups"]] == pytest.approx([1e-5, 1e-6])
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "eval" in line] == [2, 3]
    assert [line["start"] for line in lines if "start" in line] == [0, 2]
    # The batch a resumed run starts with is the one the uninterrupted run would have taken.
    data = CocoDetectionSet(shapes_coco["train_images"], shapes_coco["train_annotations"], official_transform(64, 128))
    batches = Batches(data, 2, seed=0)
    uninterrupted = batches.from_step(0)
    expected = [next(uninterrupted) for _ in range(4)][3]  # step 3: the second epoch's first batch
    continued = next(batches.from_step(3))
    torch.testing.assert_close(continued[0], expected[0])
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(continued[2], expected[2]))


@pytest.mark.slow
def test_the_finetuned_checkpoint_names_its_classes_in_detect(finetuned, shapes_coco, tmp_path):
    from dino_demo.cli import main

    out, _, _ = finetuned
    image = f"{shapes_coco['val_images']}/100.png"
    assert main(["detect", image, "--checkpoint", str(out / "best.pth"), "--threshold", "0",
                 "--max-detections", "5", "--out", str(tmp_path)]) == 0
    detections = json.loads((tmp_path / "detections.json").read_text())["images"][0]["detections"]
    assert len(detections) == 5
    for detection in detections:
        assert (detection["label"], detection["category_id"]) in {("round", 5), ("polygon", 17), ("spiky", 42)}


@pytest.mark.slow
def test_a_model_that_already_predicts_the_data_keeps_its_heads():
    from dino_demo.train.data import SYNTHETIC_CATEGORIES
    from dino_demo.train.initialize import initial_model, with_categories

    shipped, cfg = load_model(SHIPPED)
    model = initial_model(SYNTHETIC_CATEGORIES, init=SHIPPED, dn_box_noise_scale=0.4)
    torch.testing.assert_close(model.state_dict(), shipped.state_dict())
    assert model.cfg == cfg.replace(dn_box_noise_scale=0.4)
    # Named classes numbered 1..N need no stored ids; any other numbering is stored.
    renamed = with_categories(cfg, Categories((1, 2), ("a", "b")))
    assert renamed.num_classes == 2 and renamed.category_ids == ()
    assert with_categories(cfg, Categories((0, 2), ("a", "b"))).category_ids == (0, 2)


def test_init_takes_a_model_zoo_id_bare_or_prefixed():
    from dino_demo.train.initialize import init_source

    assert init_source("dino-4scale-r50") == "zoo:dino-4scale-r50"
    assert init_source("zoo:mmdet-dino-4scale-r50") == "zoo:mmdet-dino-4scale-r50"
    assert init_source(SHIPPED) == SHIPPED and init_source("https://host/x.pth") == "https://host/x.pth"


@pytest.mark.slow
def test_a_run_starts_from_a_model_zoo_entry(local_zoo, tmp_path, shapes_coco):
    """`--init <zoo id>`: downloaded through the zoo (a local server here), heads re-sized."""
    job = prepare(_config(shapes_coco, tmp_path, init=local_zoo.id), None, ONE_PROCESS)
    shipped, _ = load_model(SHIPPED)
    assert job.model.cfg.category_ids == (5, 17, 42) and job.model.class_embed[0].weight.shape == (3, 128)
    torch.testing.assert_close(job.model.transformer.level_embed, shipped.transformer.level_embed)
