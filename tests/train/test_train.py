"""The training loop on synthetic scenes: a step lowers the loss, checkpoints resume, the export
loads safely; the official recipe as defaults."""
import json

import pytest
import torch

from dino_demo import VARIANTS, get_config
from dino_demo.model.detector import build_model
from dino_demo.train.criterion import build_criterion
from dino_demo.train.data import SyntheticScenes, collate
from dino_demo.cli.train import parse_args
from dino_demo.train.loop import TrainConfig, build_optimizer, restart_schedule, train, train_step
from dino_demo.train.synthetic import SceneSpec, generate_scene

SMALL = dict(variant="dino-tiny", batch_size=2, image_size=64, max_objects=3, eval_count=2, threads=None, workers=0)


def _loss(model, criterion, images, masks, targets) -> float:
    torch.manual_seed(123)  # the same denoising noise every time
    with torch.no_grad():
        return criterion.total(criterion(model(images, masks, targets), targets)).item()


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = get_config("dino-tiny")
    model = build_model(cfg).train()
    criterion = build_criterion(cfg.num_classes)
    optimizer = build_optimizer(model, TrainConfig(out="unused", lr=1e-3, lr_backbone=1e-3))
    scenes = SyntheticScenes(0, 2, SceneSpec(size=64, max_objects=3))
    images, masks, targets = collate([scenes[(0, 0)], scenes[(1, 0)]])
    before = _loss(model, criterion, images, masks, targets)
    for _ in range(3):
        torch.manual_seed(123)
        values = train_step(model, criterion, optimizer, images, masks, targets, clip_max_norm=0.1)
        assert {"loss", "loss_ce", "loss_bbox_interm", "loss_giou_dn", "loss_ce_dn_0"} <= set(values)
    after = _loss(model, criterion, images, masks, targets)
    assert after < before


def test_optimizer_gives_the_backbone_its_own_learning_rate():
    model = build_model(get_config("dino-tiny"))
    optimizer = build_optimizer(model, TrainConfig(out="unused", lr=1e-4, lr_backbone=1e-5))
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == [1e-4, 1e-5]
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())


def test_scene_targets_are_normalized_cxcywh():
    scene = generate_scene(0, 0, SceneSpec(size=100))
    _, target = SyntheticScenes(0, 1, SceneSpec(size=100))[(0, 0)]
    x0, y0, x1, y1 = scene.boxes[0] / 100
    assert torch.allclose(target["boxes"][0], torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]))
    assert target["labels"].dtype == torch.int64


@pytest.mark.slow
def test_train_checkpoints_resume_and_exports(tmp_path):
    export = tmp_path / "shipped.pth"
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=2, eval_every=2, checkpoint_every=1,
                      export=str(export), **SMALL)
    state = train(cfg)
    assert state.step == 2 and len(state.history) == 1
    assert set(state.history[0]["eval"]) >= {"AP", "AP50"}
    shipped = torch.load(export, weights_only=True)
    assert shipped["variant"] == "dino-tiny" and shipped["dtype"] == "float16"
    assert all(v.dtype != torch.float32 for v in shipped["model"].values())
    model = build_model(get_config("dino-tiny"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in shipped["model"].items()})

    resumed = train(TrainConfig(**{**cfg.__dict__, "steps": 3}), resume=str(tmp_path / "run" / "checkpoint.pth"))
    assert resumed.step == 3
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "eval" in line] == [2, 3]


def _rates(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


def test_a_resumed_schedule_depends_only_on_the_step_and_the_drop():
    model = torch.nn.ModuleDict({"backbone": torch.nn.Linear(2, 2), "head": torch.nn.Linear(2, 2)})
    optimizer = build_optimizer(model, TrainConfig(out="unused", lr=1e-4, lr_backbone=2e-4))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)
    for _ in range(15):
        optimizer.step()
        scheduler.step()
    assert _rates(optimizer) == pytest.approx([1e-5, 2e-5])  # past the first drop

    restart_schedule(optimizer, scheduler, lr_drop=30, step=15)  # the drop moved later: full rate again
    assert _rates(optimizer) == pytest.approx([1e-4, 2e-4]) and scheduler.get_last_lr() == pytest.approx([1e-4, 2e-4])
    for _ in range(15):
        optimizer.step()
        scheduler.step()
    assert _rates(optimizer) == pytest.approx([1e-5, 2e-5])  # dropped at step 30

    restart_schedule(optimizer, scheduler, lr_drop=12, step=30)  # two drops behind already
    assert _rates(optimizer) == pytest.approx([1e-6, 2e-6])


def test_command_line_maps_onto_the_config():
    cfg, resume = parse_args(["--out", "x", "--steps", "5", "--lr-backbone", "2e-4", "--resume", "r.pth",
                              "--no-augment", "--min-size", "64", "--dn-box-noise-scale", "1.0"])
    assert cfg.steps == 5 and cfg.lr_backbone == 2e-4 and cfg.out == "x" and resume == "r.pth"
    assert cfg.augment is False and cfg.min_size == 64 and cfg.max_size is None and cfg.dn_box_noise_scale == 1.0


def test_the_defaults_are_the_official_recipe():
    cfg = TrainConfig(out="x", steps=1200)
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.clip_max_norm, cfg.batch_size) == (1e-4, 1e-5, 1e-4, 0.1, 2)
    assert (cfg.dn_box_noise_scale, cfg.dn_label_noise_ratio) == (0.4, 0.5)
    assert cfg.drop_step == 1100  # after 11 of 12 "epochs"
    assert all(VARIANTS[name].dn_box_noise_scale == 0.4 for name in VARIANTS)


def test_coco_ap_of_the_ground_truth_itself_is_one():
    from dino_demo.train.evaluate import coco_box_ap
    from dino_demo.train.synthetic import coco_annotations

    scenes = [generate_scene(7, i, SceneSpec(size=96)) for i in range(3)]
    gt = coco_annotations(scenes, ["a.png", "b.png", "c.png"])
    results = [{"image_id": image_id, "category_id": int(label) + 1, "score": 1.0, "bbox": [x0, y0, x1 - x0, y1 - y0]}
               for image_id, scene in enumerate(scenes, start=1)
               for label, (x0, y0, x1, y1) in zip(scene.labels, scene.boxes.tolist())]
    metrics = coco_box_ap(gt, results)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    wrong_class = [{**r, "category_id": r["category_id"] % 8 + 1} for r in results]
    assert coco_box_ap(gt, wrong_class)["AP50"] < 0.5


def test_evaluation_goes_through_the_one_inference_path(monkeypatch):
    """evaluate() runs run_batch without internals and scores the results format's COCO list."""
    from dino_demo.runtime import dino as inference
    from dino_demo.train import evaluate as evaluation

    calls = []
    original = inference.run_batch

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(inference, "run_batch", spy)
    model = build_model(get_config("dino-tiny"))
    metrics = evaluation.evaluate(model, get_config("dino-tiny"), SyntheticScenes(5, 3, SceneSpec(size=64)))
    assert set(metrics) == set(evaluation.METRIC_NAMES)
    assert calls and all(call["internals"] is False for call in calls)
