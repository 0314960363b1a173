"""`python -m dino_demo.train ...` (the same as `python -m dino_demo train ...`)."""
import sys

from .loop import main

sys.exit(main())
