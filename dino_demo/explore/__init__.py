"""One image through DINO with its internals kept (`inference.run`), the views drawn from that
stored result, and the inference-only fast paths."""
