"""`python -m dino_demo COMMAND ...`: see `dino_demo.cli`."""
import sys

from .cli import main

sys.exit(main())
