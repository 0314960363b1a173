"""`python -m dino_demo fixture-weights --variant V --out FILE`: write the parity kit's recipe weights
(`dino_demo.parity.recipe`) as a file laid out like an official checkpoint.

The file holds `{"model": state_dict, "args": argparse.Namespace(variant, salt)}`, as official
checkpoints hold their training arguments; it prints the sha256 of the weights.
"""
from __future__ import annotations

import argparse

import torch

from ..model.config import get_config
from ..model.detector import build_model
from ..parity.recipe import SALT, recipe_state_dict, state_dict_sha256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dino_demo fixture-weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="dino-4scale-r50",
                        help="the model variant whose structure the weights fill (default dino-4scale-r50)")
    parser.add_argument("--out", required=True, help="the checkpoint file to write")
    parser.add_argument("--salt", default=SALT,
                        help=f"the recipe's salt: other salts give other weights (default {SALT!r}, the parity kit's)")
    args = parser.parse_args(argv)
    model = build_model(get_config(args.variant))
    state = recipe_state_dict(model.state_dict(), args.salt)
    torch.save({"model": state, "args": argparse.Namespace(variant=args.variant, salt=args.salt)}, args.out)
    print(f"{args.out}: sha256 of weights {state_dict_sha256(state)}")
    return 0
