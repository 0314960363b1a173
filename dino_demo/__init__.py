"""DINO Explorer: the DINO detector with its internals as outputs."""
from .config import VARIANTS, DINOConfig, get_config

__all__ = ["DINOConfig", "VARIANTS", "get_config"]
