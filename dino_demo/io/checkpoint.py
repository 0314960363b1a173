"""Reading DINO checkpoints safely: official files, our own, from disk or an http(s) URL.

Official files are `{'model': state_dict, 'args': argparse.Namespace, 'optimizer': ..., ...}`,
sometimes with `module.` key prefixes. They are read with `torch.load(weights_only=True)`, allowing
exactly one extra class (`argparse.Namespace`) so nothing in a file can run code.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import torch

from .. import paths
from ..model.config import VARIANTS, DINOConfig, get_config
from ..model.detector import DINO, build_model

DEFAULT_CHECKPOINT = paths.WEIGHTS_DIR / "dino-tiny.pth"
MAX_DOWNLOAD_BYTES = 2 * 1024**3


class CheckpointError(ValueError):
    """A file that is not a usable DINO checkpoint for the requested variant."""


# -- reading ----------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict:
    """Unpickle a checkpoint file with tensors and plain data only (plus argparse.Namespace).

    A file is untrusted: nothing in it can run code (`weights_only=True`), and a zip archive (the
    format `torch.save` writes) must store its entries uncompressed, as `torch.save` does, so that
    what is read is never larger than the file (no "zip bomb" expanding a small upload).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.name}")
    _check_archive(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path.name}: refused to load: the file contains Python objects other than tensors and "
            f"plain data ({first[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint (truncated or another "
                              f"kind of file): {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _check_archive(path: Path) -> None:
    """Refuse zip archives with compressed entries or more content than the file holds."""
    if not zipfile.is_zipfile(path):
        return  # the legacy format stores tensors raw: what is read is bounded by the file size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint (a damaged archive)") from None
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
        raise CheckpointError(f"{path.name}: refused: its archive has compressed entries, which torch.save never "
                              "writes (a small file could expand to any size)")
    if sum(entry.file_size for entry in entries) > path.stat().st_size:
        raise CheckpointError(f"{path.name}: refused: its archive declares more content than the file holds")


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict, with any `module.` prefixes removed (the one place
    keys are renamed) and half-precision storage widened to float32."""
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            state = checkpoint[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("no tensors found: this is not a model checkpoint")
    renamed = {k.removeprefix("module."): v for k, v in tensors.items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in renamed.items()}


def infer_config(state_dict: dict[str, torch.Tensor], checkpoint: dict | None = None) -> DINOConfig:
    """The variant a checkpoint was made for: its stored `config`/`variant` if it has one, else
    recognized from its keys (backbone, number of feature levels, number of classes)."""
    checkpoint = checkpoint or {}
    if isinstance(checkpoint.get("config"), dict):
        try:
            return DINOConfig.from_dict(checkpoint["config"])
        except ValueError as e:
            raise CheckpointError(f"the checkpoint's stored config is invalid: {e}") from None
    if isinstance(checkpoint.get("variant"), str) and checkpoint["variant"] in VARIANTS:
        return get_config(checkpoint["variant"])
    if "transformer.level_embed" not in state_dict or "class_embed.0.weight" not in state_dict:
        raise CheckpointError("not a DINO checkpoint: it has no transformer.level_embed / class_embed weights")
    levels = state_dict["transformer.level_embed"].shape[0]
    swin = "backbone.0.patch_embed.proj.weight" in state_dict
    name = f"dino-{levels}scale-{'swinl' if swin else 'r50'}"
    if name not in VARIANTS:
        raise CheckpointError(f"unrecognized DINO layout ({levels} feature levels); pass --variant")
    cfg = get_config(name)
    num_classes = state_dict["class_embed.0.weight"].shape[0]
    return cfg if num_classes == cfg.num_classes else cfg.replace(num_classes=num_classes, class_names=())


def mismatch_report(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], limit: int = 8) -> str:
    """Missing, unexpected, wrongly shaped and wrongly typed (floating point or not) keys, or ''
    if the state_dict fits the model."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    dtypes = [f"{k}: checkpoint {state_dict[k].dtype} vs model {v.dtype}" for k, v in expected.items()
              if k in state_dict and state_dict[k].is_floating_point() != v.is_floating_point()]
    lines = []
    for title, items in (("wrong shape", shapes), ("wrong dtype", dtypes), ("missing", missing),
                         ("unexpected", unexpected)):
        if items:
            lines.append(f"{len(items)} {title}: " + "; ".join(items[:limit]) + (" ..." if len(items) > limit else ""))
    return "\n".join(lines)


def check_fits(cfg: DINOConfig, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError unless `state_dict` has exactly the keys, shapes and kinds of dtype of
    the model `cfg` builds. The model is built on the meta device: nothing is allocated, so a
    config that asks for a huge model costs nothing when the file's tensors do not match it."""
    with torch.device("meta"):
        skeleton = build_model(cfg)
    report = mismatch_report(skeleton, state_dict)
    if report:
        raise CheckpointError(f"{source} does not fit variant {cfg.name!r} (num_classes={cfg.num_classes}):\n{report}")


# -- the public entry points --------------------------------------------------------------------
def load_model(source: str | os.PathLike, variant: str | None = None, device: str | torch.device = "cpu",
               cache_dir: str | os.PathLike | None = None, sha256: str | None = None) -> tuple[DINO, DINOConfig]:
    """Build the right DINO for a checkpoint (path or http(s) URL) and load it with strict=True.

    `variant` forces a configuration; a checkpoint that does not fit it raises CheckpointError
    listing the mismatching keys and shapes. The model is returned in eval mode.
    """
    path = fetch(str(source), cache_dir, sha256) if _is_url(str(source)) else Path(source)
    checkpoint = read_checkpoint(path)
    try:
        state_dict = extract_state_dict(checkpoint)
        cfg = get_config(variant) if variant else infer_config(state_dict, checkpoint)
        check_fits(cfg, state_dict, path.name)  # before any allocation
    except ValueError as error:
        failure = CheckpointError(str(error))
    else:
        failure = None
    del checkpoint
    if failure is not None:
        # Raised outside the handler, with the file's tensors released: nothing of a failed load
        # stays referenced by the exception or its traceback.
        state_dict = None
        raise failure
    model = build_model(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval(), cfg


def default_model(device: str | torch.device = "cpu") -> tuple[DINO, DINOConfig]:
    """The small DINO shipped in weights/ (works offline)."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(f"the shipped model {DEFAULT_CHECKPOINT} is missing from this checkout")
    return load_model(DEFAULT_CHECKPOINT, device=device)


def save_checkpoint(model: DINO, path: str | os.PathLike, *, half: bool = False, **extra) -> None:
    """The one checkpoint writer: `{'model', 'variant', 'config', 'dtype', **extra}`, readable with
    `weights_only=True` (so `extra` may hold tensors, numbers, strings, lists and dicts: optimizer
    and scheduler states, metrics, training arguments).

    `half` stores floating-point weights as float16 (they load back as float32). The file appears
    atomically: it is written next to `path` and renamed into place, so a reader never sees half a
    checkpoint.
    """
    if getattr(model, "inference_only", False):
        raise ValueError("this model was prepared with optimize_for_inference (inference-only, "
                         "BatchNorm folded): save the original model instead")
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    payload = {"model": state, "variant": model.cfg.name, "config": model.cfg.as_dict(),
               "dtype": "float16" if half else "float32", **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- downloading --------------------------------------------------------------------------------
def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


def default_cache_dir() -> Path:
    return paths.cache_dir("checkpoints")


def fetch(url: str, cache_dir: str | os.PathLike | None = None, sha256: str | None = None, timeout: float = 60) -> Path:
    """Download `url` into the cache (once) and return the local path; verify `sha256` if given."""
    if not _is_url(url):
        raise CheckpointError(f"not an http(s) URL: {url}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint.pth"
    target = cache / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if not target.is_file():
        _download(url, target, timeout)
    if sha256 is not None:
        actual = _file_sha256(target)
        if actual != sha256.lower():
            target.unlink()
            raise CheckpointError(f"{url}: sha256 {actual} does not match the expected {sha256}")
    return target


def _download(url: str, target: Path, timeout: float) -> None:
    """Stream `url` to a temporary file next to `target`, then move it into place."""
    tmp_path = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
            tmp_path = Path(tmp.name)
            copied = 0
            while chunk := response.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_DOWNLOAD_BYTES:
                    raise CheckpointError(f"{url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
                tmp.write(chunk)
        os.replace(tmp_path, target)
    except (OSError, ValueError) as e:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"could not download {url}: {e}") from None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

