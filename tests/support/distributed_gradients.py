"""Run by test_distributed.py: `torchrun --nproc_per_node 2 tests/support/distributed_gradients.py DATA.json OUT`
computes the gradients of one step over a global batch of four images (two per process) into
OUT/gradients.pt, then trains two steps with `python -m dino_demo train`'s entry point into
OUT/run. The test computes the same gradients in one process with `gradients`.
"""
import json
import sys
from pathlib import Path

import torch

from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.train import distributed
from dino_demo.train.initialize import train_mode
from dino_demo.cli.train import main
from dino_demo.train.loop import TrainConfig, forward_backward, prepare

GLOBAL_BATCH = 4


def gradients(data: dict[str, str], out: Path, process: distributed.Process) -> dict[str, torch.Tensor]:
    """Gradients of the first batch of a fine-tuning run from the shipped model, without
    augmentation or denoising noise (so that an image's computation does not depend on the other
    images of its process), as every process holds them after backward."""
    cfg = TrainConfig(out=str(out), init=str(DEFAULT_CHECKPOINT), min_size=64, max_size=128, augment=False,
                      dn_box_noise_scale=0.0, dn_label_noise_ratio=0.0, batch_size=GLOBAL_BATCH // process.world_size,
                      workers=0, **data)
    job = prepare(cfg, None, process)
    train_mode(job.net)
    forward_backward(job.net, job.criterion, *next(job.batches.from_step(0)))
    return {name: p.grad for name, p in job.model.named_parameters() if p.grad is not None}


if __name__ == "__main__":
    data, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    with distributed.process_group("cpu") as process:
        grads = gradients(data, out / "unused", process)
        if process.is_main:
            torch.save(grads, out / "gradients.pt")
        options = [f"--{key.replace('_', '-')}={value}" for key, value in data.items()]
        main(options + ["--init", str(DEFAULT_CHECKPOINT), "--out", str(out / "run"), "--steps", "2", "--eval-every", "2",
                        "--checkpoint-every", "1", "--min-size", "64", "--max-size", "128", "--workers", "0"])
