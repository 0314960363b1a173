"""Train DINO with the official recipe, on your COCO-format data or on synthetic scenes, in one
process or data-parallel under torchrun (the command: `dino_demo.cli.train`).

Data: with the four `--train-*`/`--val-*` options, COCO-format files with the official reading and
augmentation (`train.data`); without them, synthetic scenes drawn in memory (scene i of the
training seed, unaugmented: the data the shipped model was trained on), evaluated on scenes of
`--eval-seed`.

Start: `--init` a trained model (a model zoo id, or any model source: see `sources.source`) with
its class heads re-sized for the data's categories and the official rule for a pretrained backbone (`train.initialize`); without it, `--variant` from scratch.

Recipe (the official DINO defaults, each an option): AdamW, learning rate 1e-4 and 1e-5 for the
backbone, weight decay 1e-4, gradient-norm clipping 0.1, both rates divided by 10 once, after
11/12 of the steps (the official 12-epoch schedule drops after epoch 11) unless `--lr-drop` says
when (as StepLR, again after every multiple of it); contrastive denoising with box noise 0.4 and
label noise 0.5; batches of 2 per process.

Writes (main process only) `OUT/checkpoint.pth` (latest, for `--resume`), `OUT/best.pth` (best
validation AP so far) and `OUT/log.jsonl`; with `--export PATH` the best model also in the shipped
form (float16 weights). Both checkpoints carry the model's config with the data's class names and
category ids, so `python -m dino_demo detect IMAGE --checkpoint OUT/best.pth` and the app use
them as they are.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..sources.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from ..model.config import MIN_INPUT_SIDE
from ..model.detector import DINO
from . import distributed
from .criterion import SetCriterion, build_criterion
from .data import Batches, Categories, CocoDetectionSet, DetectionSet, SyntheticScenes, official_transform
from .evaluate import evaluate
from .initialize import fits, freeze_pretrained_backbone, initial_model, train_mode, with_run_settings
from .synthetic import SceneSpec

# The official schedule: 12 epochs, learning rates divided by 10 after the 11th.
OFFICIAL_DROP_FRACTION = 11 / 12
FILE_OPTIONS = ("train_images", "train_annotations", "val_images", "val_annotations")


def _option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """One training run (each field is a command-line option of the same name)."""

    out: str = _option("", "run folder: checkpoints and log")
    train_images: str | None = _option(None, "training image folder (COCO-format data)")
    train_annotations: str | None = _option(None, "training annotations, COCO format")
    val_images: str | None = _option(None, "validation image folder")
    val_annotations: str | None = _option(None, "validation annotations, COCO format")
    init: str | None = _option(None, "start from this trained model (model zoo id, checkpoint path or URL); "
                                     "class heads are re-sized for the data's categories")
    variant: str = _option("dino-tiny", "the variant built from scratch when there is no --init")
    steps: int = _option(4000, "optimisation steps in all (a resumed run continues to this step)")
    batch_size: int = _option(2, "images per process and step (official: 2)")
    augment: bool = _option(True, "the official augmentation of COCO-format data (flip, multi-scale resize, crop)")
    min_size: int | None = _option(None, "model input: shorter side (default: the model's); augmentation sizes scale with it")
    max_size: int | None = _option(None, "model input: longer-side cap (default: the model's)")
    image_size: int = _option(256, "synthetic scenes: side in pixels")
    max_objects: int = _option(SceneSpec.max_objects, "synthetic scenes: shapes attempted per scene")
    seed: int = _option(0, "seed of the data order, augmentation and denoising noise")
    lr: float = _option(1e-4, "learning rate (official 1e-4)")
    lr_backbone: float = _option(1e-5, "backbone learning rate (official 1e-5; 0 freezes a pretrained backbone)")
    weight_decay: float = _option(1e-4, "AdamW weight decay (official 1e-4)")
    clip_max_norm: float = _option(0.1, "gradient-norm clipping, 0 for none (official 0.1)")
    lr_drop: int | None = _option(None, "both rates are divided by 10 after every multiple of this step, as StepLR does "
                                         "(default: 11/12 of --steps, i.e. once)")
    dn_box_noise_scale: float = _option(0.4, "denoising box noise (official 0.4)")
    dn_label_noise_ratio: float = _option(0.5, "denoising label noise (official 0.5)")
    eval_every: int = _option(500, "evaluate (and keep best.pth) every this many steps, and at the end")
    eval_seed: int = _option(1000, "synthetic scenes: seed of the evaluation set")
    eval_count: int = _option(100, "synthetic scenes: size of the evaluation set")
    checkpoint_every: int = _option(100, "write checkpoint.pth every this many steps, and at the end")
    export: str | None = _option(None, "also write the best model here in the shipped float16 form")
    device: str = _option("cpu", "cpu or cuda (under torchrun: each process's own GPU)")
    threads: int | None = _option(None, "CPU threads per process")
    workers: int = _option(2, "data-loading worker processes per training process")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("a run needs an output folder (--out)")
        for name in ("steps", "batch_size", "eval_every", "eval_count", "checkpoint_every", "image_size", "max_objects"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0 or (self.lr_drop is not None and self.lr_drop < 1):
            raise ValueError("workers must be >= 0 and lr_drop >= 1")
        if self.lr <= 0 or self.lr_backbone < 0 or self.weight_decay < 0 or self.clip_max_norm < 0:
            raise ValueError("the learning rate must be positive; lr_backbone, weight_decay and clip_max_norm >= 0")
        if self.dn_box_noise_scale < 0 or not 0 <= self.dn_label_noise_ratio <= 1:
            raise ValueError("dn_box_noise_scale must be >= 0 and dn_label_noise_ratio in [0, 1]")
        for name in ("min_size", "max_size"):
            if getattr(self, name) is not None and getattr(self, name) < MIN_INPUT_SIDE:
                raise ValueError(f"{name} must be at least {MIN_INPUT_SIDE}, got {getattr(self, name)}")
        given = [name for name in FILE_OPTIONS if getattr(self, name)]
        if given and len(given) != len(FILE_OPTIONS):
            missing = ", ".join("--" + n.replace("_", "-") for n in FILE_OPTIONS if n not in given)
            raise ValueError(f"training on COCO-format files needs all four file options; missing {missing}")
        if not given and self.eval_seed == self.seed:
            raise ValueError("the evaluation seed must differ from the training seed")

    @property
    def on_files(self) -> bool:
        return bool(self.train_annotations)

    @property
    def drop_step(self) -> int:
        return self.lr_drop if self.lr_drop is not None else max(1, round(self.steps * OFFICIAL_DROP_FRACTION))

    def model_settings(self) -> dict:
        """The DINOConfig fields this run sets on its model."""
        settings = {"dn_box_noise_scale": self.dn_box_noise_scale, "dn_label_noise_ratio": self.dn_label_noise_ratio}
        settings.update({name: getattr(self, name) for name in ("min_size", "max_size") if getattr(self, name) is not None})
        return settings


@dataclass
class TrainState:
    step: int = 0
    best_ap: float = -1.0
    history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Data.

def build_datasets(cfg: TrainConfig, world_size: int = 1) -> tuple[torch.utils.data.Dataset, DetectionSet, Categories]:
    """(training set, evaluation set, their categories). A COCO-format training set gets its
    augmentation (`official_transform`) once the model's input size is known."""
    if not cfg.on_files:
        spec = SceneSpec(size=cfg.image_size, max_objects=cfg.max_objects)
        train_set = SyntheticScenes(cfg.seed, cfg.steps * cfg.batch_size * world_size, spec)
        return train_set, SyntheticScenes(cfg.eval_seed, cfg.eval_count, spec), train_set.categories
    train_set = CocoDetectionSet(cfg.train_images, cfg.train_annotations)
    val_set = CocoDetectionSet(cfg.val_images, cfg.val_annotations)
    if val_set.categories != train_set.categories:
        raise ValueError(f"{cfg.val_annotations} declares other categories than {cfg.train_annotations}: "
                         f"{val_set.categories} vs {train_set.categories}")
    return train_set, val_set, train_set.categories


# ----------------------------------------------------------------------------------------------
# Optimisation.

def is_backbone_parameter(name: str) -> bool:
    return name.startswith("backbone.0.")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, the backbone in its own group at `lr_backbone`
    (official param_dicts)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not is_backbone_parameter(n)], "lr": cfg.lr},
        {"params": [p for n, p in named if is_backbone_parameter(n)], "lr": cfg.lr_backbone},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def forward_backward(model: torch.nn.Module, criterion: SetCriterion, images: torch.Tensor, masks: torch.Tensor,
                     targets: list[dict]) -> dict[str, float]:
    """Losses of one batch, their gradients accumulated into the parameters (averaged over the
    processes under DistributedDataParallel). Returns the weighted total ("loss") and every
    unweighted term, each the mean over the processes."""
    output = model(images, masks, targets)
    losses = criterion(output, targets)
    total = criterion.total(losses)
    values = distributed.mean_over_processes(torch.stack([total, *losses.values()]).detach())
    names = ["loss", *losses]
    if not torch.isfinite(values).all():
        raise FloatingPointError(f"the loss is not finite: {dict(zip(names, values.tolist()))}")
    total.backward()
    return dict(zip(names, values.tolist()))


def train_step(model: torch.nn.Module, criterion: SetCriterion, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, masks: torch.Tensor, targets: list[dict],
               clip_max_norm: float) -> dict[str, float]:
    """One optimisation step (frozen BatchNorm stays in eval mode); see `forward_backward`."""
    train_mode(model)
    optimizer.zero_grad(set_to_none=True)
    values = forward_backward(model, criterion, images, masks, targets)
    if clip_max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
    optimizer.step()
    return values


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


# ----------------------------------------------------------------------------------------------
# Checkpoints.

def save_training_checkpoint(path: Path, job: Run, metrics: dict | None = None) -> None:
    """Everything --resume needs (official key names: model / optimizer / lr_scheduler), plus the
    evaluation `metrics` of best.pth."""
    extra = {"metrics": metrics} if metrics else {}
    save_checkpoint(job.model, path, optimizer=job.optimizer.state_dict(), lr_scheduler=job.scheduler.state_dict(),
                    step=job.state.step, best_ap=job.state.best_ap, train_args=asdict(job.cfg), **extra)


def export_weights(path: Path, job: Run, metrics: dict) -> None:
    """The shipped form: float16 weights with the config, metrics and training arguments."""
    save_checkpoint(job.model, path, half=True, step=job.state.step, metrics=metrics, train_args=asdict(job.cfg))


def resumed_model(path: str, cfg: TrainConfig, categories: Categories):
    """(model, checkpoint) of a training checkpoint, read with weights_only=True; its data must
    have had the same categories."""
    checkpoint = read_checkpoint(path)
    for key in ("optimizer", "lr_scheduler", "step", "best_ap"):
        if key not in checkpoint:
            raise ValueError(f"{path} is not a training checkpoint (no {key!r}); start from it with --init instead")
    saved, saved_cfg, _ = model_from_checkpoint(checkpoint, Path(path).name)
    if not fits(saved_cfg, categories):
        raise ValueError(f"{path} was trained on other categories than this run's data")
    return with_run_settings(saved, saved_cfg.replace(**cfg.model_settings())), checkpoint


# ----------------------------------------------------------------------------------------------
# The loop.

@dataclass
class Run:
    """Everything one process of a run works with, as `prepare` builds it. `model` is the plain
    model (evaluated and saved); `net` is what trains (the model under DistributedDataParallel
    when there are several processes)."""

    cfg: TrainConfig
    process: distributed.Process
    model: DINO
    net: torch.nn.Module
    criterion: SetCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    batches: Batches
    eval_set: DetectionSet
    state: TrainState

    def step(self, images: torch.Tensor, masks: torch.Tensor, targets: list[dict]) -> dict[str, float]:
        """One optimisation step on this process's share of a batch, then the schedule's."""
        device = self.process.device
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        values = train_step(self.net, self.criterion, self.optimizer, images.to(device), masks.to(device), targets,
                            self.cfg.clip_max_norm)
        self.scheduler.step()
        self.state.step += 1
        return values


def prepare(cfg: TrainConfig, resume: str | None, process: distributed.Process) -> Run:
    """Data, model (from `resume`, `--init` or scratch), optimizer and schedule of one process."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + process.rank)
    train_set, eval_set, categories = build_datasets(cfg, process.world_size)
    state = TrainState()
    if resume:
        model, checkpoint = resumed_model(resume, cfg, categories)
        state.step, state.best_ap = int(checkpoint["step"]), float(checkpoint["best_ap"])
        # A resume re-seeds the denoising noise; the data stream is a function of the step.
        torch.manual_seed(cfg.seed + process.rank + state.step)
    else:
        with distributed.main_first():  # a download into the cache happens once
            model = initial_model(categories, init=cfg.init, variant=cfg.variant, **cfg.model_settings())
    if cfg.init:
        freeze_pretrained_backbone(model, train_backbone=cfg.lr_backbone > 0)
    if isinstance(train_set, CocoDetectionSet):
        train_set.transform = official_transform(model.cfg.min_size, model.cfg.max_size, cfg.augment)
    model = model.to(process.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.drop_step, gamma=0.1)
    if resume:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError:
            raise ValueError(f"{resume} was trained with other parameters frozen: resume with the options "
                             "that started it (the same --init and --lr-backbone)") from None
        scheduler.load_state_dict(checkpoint["lr_scheduler"])
        restart_schedule(optimizer, scheduler, cfg.drop_step, state.step)
    batches = Batches(train_set, cfg.batch_size, rank=process.rank, world_size=process.world_size,
                      shuffle=cfg.on_files, seed=cfg.seed, workers=cfg.workers)
    return Run(cfg, process, model, distributed.wrap(model, process), build_criterion(model.cfg.num_classes),
               optimizer, scheduler, batches, eval_set, state)


def train(cfg: TrainConfig, resume: str | None = None) -> TrainState:
    """Run `cfg` to its last step (from `resume`'s step when given), in the process group of a
    torchrun launch if there is one."""
    with distributed.process_group(cfg.device) as process:
        return run(prepare(cfg, resume, process))


def run(job: Run) -> TrainState:
    """Train to the last step, evaluating and writing checkpoints on the way; every process of
    the group runs this and returns the same state. Only the main process writes."""
    cfg, state, out = job.cfg, job.state, Path(job.cfg.out)
    log = None
    if job.process.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log = (out / "log.jsonl").open("a")
        log.write(json.dumps({"start": state.step, "steps": cfg.steps, "processes": job.process.world_size,
                              "steps_per_epoch": job.batches.steps_per_epoch, "lr_drop": cfg.drop_step,
                              "classes": job.model.cfg.num_classes, "time": time.time()}) + "\n")
        log.flush()

    images_per_step = cfg.batch_size * job.process.world_size
    bar = tqdm(total=cfg.steps, initial=state.step, desc="train", unit="step", mininterval=10, dynamic_ncols=True,
               disable=not job.process.is_main)
    window_start, window_images, running = time.perf_counter(), 0, None
    stream = job.batches.from_step(state.step)
    while state.step < cfg.steps:
        values = job.step(*next(stream))
        window_images += images_per_step
        running = values["loss"] if running is None else 0.98 * running + 0.02 * values["loss"]
        throughput = window_images / (time.perf_counter() - window_start)
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", img_s=f"{throughput:.2f}", lr=f"{job.scheduler.get_last_lr()[0]:.1e}",
                        refresh=False)
        if log and state.step % 50 == 0:
            eta = (cfg.steps - state.step) * images_per_step / throughput
            log.write(json.dumps({"step": state.step, "epoch": round(state.step / job.batches.steps_per_epoch, 3),
                                  "loss_avg": running, "img_per_s": throughput, "eta_s": round(eta),
                                  "lr": job.scheduler.get_last_lr()[0], "time": time.time(), **values}) + "\n")
            log.flush()
            window_start, window_images = time.perf_counter(), 0

        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            metrics = evaluate(job.model, job.model.cfg, job.eval_set)
            state.history.append({"step": state.step, "eval": metrics, "time": time.time()})
            improved = metrics["AP"] > state.best_ap
            state.best_ap = max(state.best_ap, metrics["AP"])
            if log:
                log.write(json.dumps(state.history[-1]) + "\n")
                log.flush()
                tqdm.write(f"step {state.step}: AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f}")
                if improved:
                    save_training_checkpoint(out / "best.pth", job, metrics)
                    if cfg.export:
                        export_weights(Path(cfg.export), job, metrics)
            window_start, window_images = time.perf_counter(), 0
        if log and (state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps):
            save_training_checkpoint(out / "checkpoint.pth", job)
    bar.close()
    if log:
        log.close()
    return state
