"""The parity kit's deterministic weight recipe (see tests/fixtures/official_dino/README.md).

Fills a state_dict with values derived only from each key's name and shape, so that the official
code and this one can be run on identical weights without shipping a checkpoint.
"""
from __future__ import annotations

import hashlib
import math
import re
import zlib

import torch

SALT = "dino-explorer-fixture-v2"
_SHARED_HEAD = re.compile(r"^(transformer\.decoder\.)?(class_embed|bbox_embed)\.\d+\.")


def canonical_key(key: str) -> str:
    """Shared-head keys collapse onto `class_embed.0.` / `bbox_embed.0.`."""
    return _SHARED_HEAD.sub(lambda m: f"{m.group(2)}.0.", key)


def recipe_tensor(key: str, shape: tuple[int, ...], salt: str = SALT) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{salt}|{canonical_key(key)}".encode()))
    n = torch.randn(shape, generator=generator, dtype=torch.float64)
    if key.endswith("running_var"):
        value = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.5
    elif key.endswith("running_mean"):
        value = 0.1 * n
    elif key.endswith(("level_embed", "tgt_embed.weight", "label_enc.weight")):
        value = n
    elif len(shape) == 1 and key.endswith("weight"):
        value = 1 + 0.1 * n
    elif len(shape) == 1:
        value = 0.05 * n
    else:
        value = n / math.sqrt(math.prod(shape[1:]))
    return value.float()


def recipe_state_dict(reference: dict[str, torch.Tensor], salt: str = SALT) -> dict[str, torch.Tensor]:
    """Recipe values for every floating-point entry of `reference`; other entries are kept."""
    return {key: recipe_tensor(key, tuple(t.shape), salt) if t.is_floating_point() else t.clone()
            for key, t in reference.items()}


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over float entries in sorted key order: key bytes then float32 C-order bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if t.is_floating_point():
            digest.update(key.encode())
            digest.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
