"""The DINO detector, numerically the official IDEA-Research model: `build_model(get_config(name))`."""
from .config import VARIANTS, DINOConfig, get_config

__all__ = ["DINOConfig", "VARIANTS", "get_config"]
