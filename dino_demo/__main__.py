"""Command line: `python -m dino_demo {detect,dump,fixture-weights} ...`."""
from __future__ import annotations

import importlib
import logging
import sys

COMMANDS = {
    "detect": ("dino_demo.detect", "detect objects in images, write annotated copies and detections.json"),
    "dump": ("dino_demo.dump", "write a batch's outputs and internals to .npz (parity/export)"),
    "fixture-weights": ("dino_demo.fixture_weights", "write a checkpoint holding the parity kit's recipe weights"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:16s} {help_}" for name, (_, help_) in COMMANDS.items())
        print(f"usage: python -m dino_demo COMMAND [options]\n\ncommands:\n{lines}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .checkpoint import CheckpointError
    from .images import ImageError
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return module.main(argv[1:])
    except (CheckpointError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
