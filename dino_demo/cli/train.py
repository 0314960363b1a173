"""`python -m dino_demo train ...`: train or fine-tune DINO with the official recipe (see
`dino_demo.train.loop` for the data, the start and the recipe).

    python -m dino_demo train --train-images train/ --train-annotations train.json \\
        --val-images val/ --val-annotations val.json --init weights/dino-tiny.pth --steps 2000 --out runs/mine
    torchrun --nproc_per_node 4 -m dino_demo train ...same options...
    python -m dino_demo train --out runs/tiny --steps 4000 --batch-size 4    # synthetic scenes

Every field of `TrainConfig` is an option (`--help` lists them with their defaults); `--resume`
continues from a training checkpoint. The main process prints `{"step", "best_ap"}` at the end.
"""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields

from ..train import distributed
from ..train.loop import TrainConfig, prepare, run


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
    parser = argparse.ArgumentParser(prog="python -m dino_demo train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--resume", default=None, help="training checkpoint to continue from (with the options that started it)")
    hints = typing.get_type_hints(TrainConfig)
    for spec in fields(TrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        kind = next(t for t in typing.get_args(hints[spec.name]) or (hints[spec.name],) if t is not type(None))
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec.default, help=spec.metadata["help"])
        else:
            parser.add_argument(flag, type=kind, default=spec.default, required=spec.name == "out",
                                help=spec.metadata["help"])
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    return TrainConfig(**args), resume


def main(argv: list[str] | None = None) -> int:
    cfg, resume = parse_args(argv)
    with distributed.process_group(cfg.device) as process:
        state = run(prepare(cfg, resume, process))
    if process.is_main:
        print(json.dumps({"step": state.step, "best_ap": state.best_ap}))
    return 0
