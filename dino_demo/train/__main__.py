"""`python -m dino_demo.train ...` (the same as `python -m dino_demo train ...`; torchrun runs it
with `-m dino_demo.train`)."""
import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
