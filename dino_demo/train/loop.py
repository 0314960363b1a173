"""Train DINO on synthetic shape scenes with the official recipe.

Scenes are drawn in memory from `dino_demo.synthetic` (scene i of the training seed), so the
"data set" is endless and a step's batch depends only on (seed, step). The losses are DINO's
(`dino_demo.criterion`); the optimizer is AdamW with a separate backbone learning rate, gradient
norm clipping and a single 10x learning-rate drop, as officially (only counted in steps).

    python -m dino_demo.train --out runs/tiny --steps 4000 --batch-size 4

writes `OUT/checkpoint.pth` (latest, for --resume), `OUT/best.pth` (best held-out AP so far),
`OUT/log.jsonl`; with `--export weights/dino-tiny.pth` the best model is also written there in
the shipped format (float16 weights).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..io.checkpoint import save_checkpoint
from ..io.preprocess import batch_images, to_tensor_normalized
from ..model.box_ops import box_xyxy_to_cxcywh
from ..model.config import get_config
from ..model.detector import build_model
from .criterion import SetCriterion, build_criterion
from .evaluate import EvalSet, evaluate
from .synthetic import SceneSpec, generate_scene


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `lr_drop` is the step after which both learning rates are divided by 10."""

    out: str
    variant: str = "dino-tiny"
    steps: int = 4000
    batch_size: int = 4
    image_size: int = 256
    max_objects: int = SceneSpec.max_objects
    seed: int = 0
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    lr_drop: int = 3200
    eval_every: int = 500
    eval_seed: int = 1000
    eval_count: int = 100
    checkpoint_every: int = 100
    export: str | None = None
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_count", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.lr_backbone < 0 or self.weight_decay < 0:
            raise ValueError("learning rates must be positive and weight decay >= 0")
        if self.eval_seed == self.seed:
            raise ValueError("the evaluation seed must differ from the training seed")


@dataclass
class TrainState:
    step: int = 0
    best_ap: float = -1.0
    history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Data.

def scene_targets(boxes: np.ndarray, labels: np.ndarray, size: int) -> dict[str, torch.Tensor]:
    """A scene's annotations as DINO targets: labels [n] int64, boxes [n, 4] normalized cxcywh."""
    xyxy = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) / size
    return {"labels": torch.as_tensor(labels, dtype=torch.int64), "boxes": box_xyxy_to_cxcywh(xyxy)}


def training_batch(seed: int, step: int, batch_size: int, spec: SceneSpec):
    """Scenes step*B .. step*B+B-1 of `seed` -> (images [B,3,H,W], masks [B,H,W], targets)."""
    scenes = [generate_scene(seed, step * batch_size + i, spec) for i in range(batch_size)]
    images, masks = batch_images([to_tensor_normalized(s.image) for s in scenes])
    return images, masks, [scene_targets(s.boxes, s.labels, spec.size) for s in scenes]


# ----------------------------------------------------------------------------------------------
# Optimisation.

def is_backbone_parameter(name: str) -> bool:
    return name.startswith("backbone.0.")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the backbone in its own group at `lr_backbone` (official param_dicts)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not is_backbone_parameter(n)], "lr": cfg.lr},
        {"params": [p for n, p in named if is_backbone_parameter(n)], "lr": cfg.lr_backbone},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(model: torch.nn.Module, criterion: SetCriterion, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, masks: torch.Tensor, targets: list[dict],
               clip_max_norm: float) -> dict[str, float]:
    """One optimisation step; returns the weighted total ("loss") and every unweighted term."""
    model.train()
    output = model(images, masks, targets)
    losses = criterion(output, targets)
    total = criterion.total(losses)
    if not math.isfinite(total.item()):
        raise FloatingPointError(f"loss is {total.item()}: {({k: v.item() for k, v in losses.items()})}")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if clip_max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
    optimizer.step()
    return {"loss": total.item(), **{k: v.item() for k, v in losses.items()}}


# ----------------------------------------------------------------------------------------------
# Checkpoints.

def restart_schedule(optimizer: torch.optim.Optimizer, scheduler, lr_drop: int, step: int) -> None:
    """Set the learning rates a run with this `lr_drop` has at `step`.

    StepLR only ever multiplies the current rate, so a resumed run that moves the drop past the
    current step (or back before it) would otherwise keep the rate the checkpoint was saved with.
    """
    scheduler.step_size = lr_drop
    factor = scheduler.gamma ** (step // lr_drop)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def save_training_checkpoint(path: Path, model, optimizer, scheduler, state: TrainState, cfg: TrainConfig) -> None:
    """Everything --resume needs (official key names: model / optimizer / lr_scheduler)."""
    save_checkpoint(model, path, optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                    step=state.step, best_ap=state.best_ap, train_args=asdict(cfg))


def export_weights(path: Path, model, metrics: dict, cfg: TrainConfig, state: TrainState) -> None:
    """The shipped form: float16 weights with the config, metrics and training arguments."""
    save_checkpoint(model, path, half=True, step=state.step, metrics=metrics, train_args=asdict(cfg))


# ----------------------------------------------------------------------------------------------
# The loop.

def train(cfg: TrainConfig, resume: str | None = None) -> TrainState:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    model_cfg = get_config(cfg.variant)
    model = build_model(model_cfg).to(device)
    criterion = build_criterion(model_cfg.num_classes)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_drop, gamma=0.1)
    state = TrainState()
    if resume:
        checkpoint = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["lr_scheduler"])
        state.step, state.best_ap = checkpoint["step"], checkpoint["best_ap"]
        restart_schedule(optimizer, scheduler, cfg.lr_drop, state.step)
        # Different randomness after a resume is fine; the data stream is a function of the step.
        torch.manual_seed(cfg.seed + state.step)
    spec = SceneSpec(size=cfg.image_size, max_objects=cfg.max_objects)
    eval_set = EvalSet(seed=cfg.eval_seed, count=cfg.eval_count, size=cfg.image_size, max_objects=cfg.max_objects)
    log = (out / "log.jsonl").open("a")

    bar = tqdm(total=cfg.steps, initial=state.step, desc="train", mininterval=10, dynamic_ncols=True)
    window_start, window_images, running = time.perf_counter(), 0, None
    while state.step < cfg.steps:
        images, masks, targets = training_batch(cfg.seed, state.step, cfg.batch_size, spec)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        values = train_step(model, criterion, optimizer, images.to(device), masks.to(device), targets,
                            cfg.clip_max_norm)
        scheduler.step()
        state.step += 1
        window_images += cfg.batch_size
        running = values["loss"] if running is None else 0.98 * running + 0.02 * values["loss"]
        throughput = window_images / (time.perf_counter() - window_start)
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", img_s=f"{throughput:.2f}", lr=f"{scheduler.get_last_lr()[0]:.1e}",
                        refresh=False)
        if state.step % 50 == 0:
            log.write(json.dumps({"step": state.step, "loss_avg": running, "img_per_s": throughput,
                                  "time": time.time(), **values}) + "\n")
            log.flush()
            window_start, window_images = time.perf_counter(), 0

        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            metrics = evaluate(model, model_cfg, eval_set)
            record = {"step": state.step, "eval": metrics, "time": time.time()}
            state.history.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            tqdm.write(f"step {state.step}: AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f}")
            if metrics["AP"] > state.best_ap:
                state.best_ap = metrics["AP"]
                save_training_checkpoint(out / "best.pth", model, optimizer, scheduler, state, cfg)
                if cfg.export:
                    export_weights(Path(cfg.export), model, metrics, cfg, state)
            window_start, window_images = time.perf_counter(), 0
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            save_training_checkpoint(out / "checkpoint.pth", model, optimizer, scheduler, state, cfg)
    bar.close()
    log.close()
    return state


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
    defaults = TrainConfig(out="")
    parser = argparse.ArgumentParser(description="Train DINO on synthetic shape scenes.")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, log)")
    parser.add_argument("--resume", default=None, help="training checkpoint to continue from")
    for name, value in asdict(defaults).items():
        if name == "out":
            continue
        kind = type(value) if value is not None else (int if name == "threads" else str)
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    return TrainConfig(**args), resume


def main(argv: list[str] | None = None) -> None:
    cfg, resume = parse_args(argv)
    state = train(cfg, resume)
    print(json.dumps({"step": state.step, "best_ap": state.best_ap}))

