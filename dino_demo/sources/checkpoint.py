"""Reading DINO checkpoints safely: official, detrex, MMDetection and our own files, from disk, an
http(s) URL, the model zoo (`zoo:<id>`) or the shipped model (`shipped`); see sources/source.py.

Files are read with `torch.load(weights_only=True)`, allowing one extra class (`argparse.Namespace`,
in official files). Metadata objects of MMDetection, detectron2 or numpy (MMDetection's `meta`,
message hub, numpy scalars) are read as inert placeholders (`Opaque`): nothing in a file runs. This
holds for both of torch's formats: the zip archive and the legacy one MMDetection's files use.
Foreign layouts are converted to the official one in `sources/layouts.py`, the one renaming place.
Every file is untrusted: sizes are bounded and checked against the file's tensors on the meta
device before a model is built.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import pickletools
import re
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import paths
from ..model.config import STORED_LIMITS, VARIANTS, DINOConfig, get_config
from ..model.skeleton import on_meta
from ..model.detector import DINO, build_model
from . import download, layouts, zoo
from .download import Progress
from .layouts import Converted, LayoutError
from .source import SHIPPED_CHECKPOINT, Source, SourceKind

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = SHIPPED_CHECKPOINT  # found from the package: works from any working directory
MAX_DOWNLOAD_BYTES = download.MAX_DOWNLOAD_BYTES
# What a file's tensors may take as float32 beyond twice its size (aliased heads, small tensors).
TENSOR_SLACK_BYTES = 64 << 20
# Modules whose pickled objects foreign checkpoints carry as metadata; they load as Opaque.
_METADATA_MODULES = ("mmengine.", "mmdet.", "mmcv.", "detectron2.", "fvcore.", "detrex.", "omegaconf.", "iopath.",
                     "libreyolo.")
_NUMPY_GLOBALS = {f"{prefix}.{name}" for prefix in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")} | {"numpy.ndarray", "numpy.dtype"}


class CheckpointError(ValueError):
    """A file that is not a usable DINO checkpoint for the requested variant."""


class Opaque:
    """Stands in for a metadata object of another code base in a checkpoint: keeps nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return "<opaque metadata>"


# -- reading ----------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict:
    """Unpickle a checkpoint file with tensors and plain data only (plus argparse.Namespace, and
    Opaque placeholders for other code bases' metadata objects).

    A file is untrusted: nothing in it can run code (`weights_only=True`), and a zip archive (the
    format `torch.save` writes) must store its entries uncompressed, as `torch.save` does, so that
    what is read is never larger than the file (no "zip bomb" expanding a small upload).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.name}")
    _check_archive(path)
    allowed: list = [argparse.Namespace]
    stand_ins = _metadata_stand_ins(path)  # read from the pickle's text, before any tensor is
    if stand_ins:
        log.info("%s: metadata objects read as placeholders: %s", path.name, ", ".join(sorted(stand_ins)))
        allowed += [(Opaque, name) for name in stand_ins]
    try:
        obj = _load(path, allowed)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path.name}: refused to load: the file contains Python objects other than tensors and "
            f"plain data ({first[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name}: expected a dict of tensors, found {type(obj).__name__}")
    check_tensors(obj, path.name, max_bytes=2 * path.stat().st_size + TENSOR_SLACK_BYTES)
    return obj


def check_tensors(obj: object, name: str = "checkpoint", max_bytes: int | None = None) -> None:
    """Refuse tensors that converting them could expand beyond what the file holds, looking only
    at sizes, strides and storage sizes (nothing is read, copied or converted).

    A tensor in a file is a view of a storage: `torch.save` keeps an expanded view (stride 0) of
    a 2-byte storage as 2 bytes, and widening it to float32 would allocate every element (a 4 KB
    file whose 30000 x 30000 float16 view took a process from 1.0 to 4.45 GB). Refused: views with
    more elements than their storage holds past their offset, tensors that are not plain strided
    ones (sparse, quantized, nested), and, with `max_bytes` (twice the file's size and some slack
    for a file: what its float16 tensors take as float32), more float32 bytes over all tensors
    (shared storages counted once per tensor, as a conversion copies them) than that.
    """
    total = 0
    for key, tensor in _tensors(obj):
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
            raise CheckpointError(f"{name}: refused: {key} is a {tensor.layout} tensor; checkpoints hold dense ones")
        itemsize = tensor.element_size()
        available = tensor.untyped_storage().nbytes() - tensor.storage_offset() * itemsize
        if tensor.numel() * itemsize > available:
            raise CheckpointError(
                f"{name}: refused: {key} is a {tuple(tensor.shape)} view of a storage of {max(available, 0)} bytes "
                f"(strides {tuple(tensor.stride())}): converting it would allocate {tensor.numel() * 4} bytes")
        total += tensor.numel() * max(itemsize, 4)
        if max_bytes is not None and total > max_bytes:
            raise CheckpointError(f"{name}: refused: its tensors would take more than {max_bytes >> 20} MiB as "
                                  "float32, more than the file can hold")


def _tensors(obj: object, max_depth: int = 16):
    """(dotted key, tensor) of every tensor in dicts, lists, tuples and Namespaces nested in `obj`."""
    stack = [("", obj, 0)]
    while stack:
        key, value, depth = stack.pop()
        if isinstance(value, torch.Tensor):
            yield key or "<root>", value
        elif depth >= max_depth:
            continue
        elif isinstance(value, dict):
            stack += [(f"{key}.{k}" if key else str(k), v, depth + 1) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(f"{key}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, argparse.Namespace):
            stack += [(f"{key}.{k}", v, depth + 1) for k, v in vars(value).items()]


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


def _load(path: Path, allowed: list) -> object:
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as e:
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint (truncated or another "
                              f"kind of file): {type(e).__name__}") from None


def _metadata_stand_ins(path: Path) -> list[str]:
    """The globals a file needs beyond weights_only's and argparse.Namespace, when all are known
    metadata types (read as `Opaque`); else none, and loading refuses the file."""
    try:
        if zipfile.is_zipfile(path):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        else:
            names = _legacy_unsafe_globals(path)
    except Exception:  # unreadable, or pickle operations the scan does not know: no stand-ins
        return []
    names = [name for name in names if name != "argparse.Namespace"]
    ok = all(re.fullmatch(r"[A-Za-z_][\w.]*", n) and (n in _NUMPY_GLOBALS or n.startswith(_METADATA_MODULES))
             for n in names)
    return names if ok else []


def _legacy_unsafe_globals(path: Path) -> list[str]:
    """What `torch.serialization.get_unsafe_globals_in_checkpoint` says of a zip checkpoint, for
    torch's legacy (non-zip) format, which MMDetection's published files use: the globals its main
    pickle names beyond weights_only's, read from the pickle's text without running any of it.

    The legacy format is four pickles in a row (magic number, protocol version, system info, the
    object with its storages as persistent ids) followed by the raw storages; the first three hold
    plain values only and are skipped.
    """
    from torch import _weights_only_unpickler as unpickler

    with open(path, "rb") as file:
        for _ in range(3):
            for _ in pickletools.genops(file):  # reads up to and including the pickle's STOP
                pass
        found = unpickler.get_globals_in_pkl(file)
    safe = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    return sorted(found - safe)


def convert_checkpoint(checkpoint: dict, flavour: str | None = None) -> Converted:
    """The checkpoint's weights under official names (converted from detrex or MMDetection when
    needed, half precision widened to float32) and what follows from the file (see layouts)."""
    check_tensors(checkpoint)  # a dict handed over directly has not been through read_checkpoint
    try:
        converted = layouts.to_official(checkpoint, flavour)
    except LayoutError as e:
        raise CheckpointError(str(e)) from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in converted.state_dict.items()}
    return Converted(state, converted.layout, converted.flavour, converted.config_changes, converted.notes)


def infer_config(state_dict: dict[str, torch.Tensor], checkpoint: dict | None = None,
                 changes: dict | None = None) -> DINOConfig:
    """The configuration a checkpoint was made for: its stored `config` (our own files), else the
    released variant recognized from its keys (backbone, feature levels) with the sizes its tensors
    have (layers, queries, classes, FFN width) and `changes` (flavour, heads, class names from a
    conversion). Sizes are checked against tight bounds before anything is built."""
    checkpoint = checkpoint or {}
    if isinstance(checkpoint.get("config"), dict):
        try:
            cfg = DINOConfig.from_dict(checkpoint["config"])
        except ValueError as e:
            raise CheckpointError(f"the checkpoint's stored config is invalid: {e}") from None
        return check_sizes(cfg)
    if isinstance(checkpoint.get("variant"), str) and checkpoint["variant"] in VARIANTS:
        return _with_changes(get_config(checkpoint["variant"]), changes)
    if "transformer.level_embed" not in state_dict or "class_embed.0.weight" not in state_dict:
        raise CheckpointError("not a DINO checkpoint: it has no transformer.level_embed / class_embed weights")
    levels, hidden = state_dict["transformer.level_embed"].shape
    swin = "backbone.0.patch_embed.proj.weight" in state_dict
    name = f"dino-{levels}scale-{'swinl' if swin else 'r50'}"
    if name not in VARIANTS:
        raise CheckpointError(f"unrecognized DINO layout ({levels} feature levels); pass --variant")
    base = get_config(name)

    def layers(prefix: str) -> int:
        found = {int(m[1]) for k in state_dict if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return len(found)

    sizes = {
        "hidden_dim": int(hidden),
        "enc_layers": layers(r"transformer\.encoder\.layers"),
        "dec_layers": layers(r"transformer\.decoder\.layers"),
        "num_classes": int(state_dict["class_embed.0.weight"].shape[0]),
        "num_queries": int(state_dict["transformer.tgt_embed.weight"].shape[0]) if "transformer.tgt_embed.weight" in state_dict else base.num_queries,
        "ffn_dim": int(state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0])
        if "transformer.encoder.layers.0.linear1.weight" in state_dict else base.ffn_dim,
    }
    differ = {k: v for k, v in sizes.items() if v != getattr(base, k)}
    if differ:
        if "num_classes" in differ:
            differ["class_names"] = ()
        differ["num_select"] = min(base.num_select, sizes["num_queries"] * sizes["num_classes"])
        try:
            base = check_sizes(base.replace(**differ))
        except ValueError as e:
            raise CheckpointError(f"the checkpoint's sizes make no DINO: {e}") from None
    return _with_changes(base, changes)


def _with_changes(cfg: DINOConfig, changes: dict | None) -> DINOConfig:
    try:
        return check_sizes(cfg.replace(**(changes or {})))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"the checkpoint's settings make no valid config: {e}") from None


def check_sizes(cfg: DINOConfig) -> DINOConfig:
    """`cfg` if its sizes lie within STORED_LIMITS (what any DINO checkpoint needs: a file cannot make
    us build a model of unbounded size); CheckpointError otherwise."""
    over = {k: getattr(cfg, k) for k, bound in STORED_LIMITS.items() if getattr(cfg, k) > bound}
    if over:
        raise CheckpointError(f"the checkpoint asks for sizes beyond any DINO: {over}")
    return cfg


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
    with on_meta():
        skeleton = build_model(cfg)
    report = mismatch_report(skeleton, state_dict)
    if report:
        raise CheckpointError(f"{source} does not fit variant {cfg.name!r} (num_classes={cfg.num_classes}):\n{report}")
    if cfg.shared_heads and not layouts.heads_are_shared(state_dict):
        # Loading would keep only the last layer's head in the one shared module.
        raise CheckpointError(f"{source} has a different class/box head per decoder layer; the variant "
                              f"{cfg.name!r} shares one (use a config with shared_heads=False)")


# -- the public entry points --------------------------------------------------------------------
def resolve_source(source: str | os.PathLike | Source, cache_dir: str | os.PathLike | None = None,
                   sha256: str | None = None, progress: Progress | None = None) -> Path:
    """A local file for a checkpoint source (see `Source.parse`): a path, `shipped`, an http(s) URL
    (downloaded into the cache once) or `zoo:<id>` (see sources/zoo.py)."""
    source = Source.parse(source)
    if source.kind is SourceKind.ZOO:
        return zoo.resolve(source.value, progress)
    if source.kind is SourceKind.URL:
        cache = Path(cache_dir) if cache_dir else paths.url_checkpoints_dir()
        return download.fetch_url(source.value, cache / url_file_name(source.value), sha256=sha256,
                                  progress=progress, cache_folders=zoo.cache_folders())
    if source.kind in (SourceKind.SHIPPED, SourceKind.FILE):
        return source.path
    raise CheckpointError(f"{source} is not a checkpoint file: {source.kind.value} sources are loaded by "
                          "explore.models.build")


def load_model(source: str | os.PathLike | Source, variant: str | None = None, device: str | torch.device = "cpu",
               cache_dir: str | os.PathLike | None = None, sha256: str | None = None,
               progress: Progress | None = None, flavour: str | None = None) -> tuple[DINO, DINOConfig]:
    """Build the right DINO for a checkpoint (path, `shipped`, http(s) URL or `zoo:<id>`) and load
    it with strict=True.

    Official, detrex and MMDetection layouts are recognised from the keys and converted; the model
    computes as the weights' code base did (its flavour; `flavour` overrides it). `variant`
    forces a configuration; a checkpoint that does not fit it raises CheckpointError listing the
    mismatching keys and shapes. `progress(done_bytes, total_bytes)` reports a download. The
    model is returned in eval mode.
    """
    loaded = open_checkpoint(source, variant, cache_dir, sha256, progress, flavour)
    return loaded.model.to(device).eval(), loaded.cfg


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint made into a model: the model (eval mode, on the CPU) with its config, how its
    weights were converted, the local file they came from and, for a `zoo:` source, its entry."""

    model: DINO
    cfg: DINOConfig
    converted: Converted
    path: Path
    entry: zoo.ZooEntry | None


def open_checkpoint(source: str | os.PathLike | Source, variant: str | None = None,
                    cache_dir: str | os.PathLike | None = None, sha256: str | None = None,
                    progress: Progress | None = None, flavour: str | None = None) -> LoadedCheckpoint:
    """What `load_model` does, keeping what `convert` writes down: the conversion and the file."""
    source = Source.parse(source)
    entry = zoo.get(source.value) if source.kind is SourceKind.ZOO else None
    path = resolve_source(source, cache_dir, sha256, progress)
    model, cfg, converted = model_from_checkpoint(read_checkpoint(path), path.name, variant,
                                                  flavour or (entry.flavour if entry else None), entry)
    return LoadedCheckpoint(model, cfg, converted, path, entry)


def model_from_checkpoint(checkpoint: dict, name: str = "checkpoint", variant: str | None = None,
                          flavour: str | None = None, entry: zoo.ZooEntry | None = None) -> tuple[DINO, DINOConfig, Converted]:
    """(model with the checkpoint's weights loaded strictly, its config, the conversion) for a
    checkpoint dict read by `read_checkpoint`; `entry`: the zoo entry it should be. Nothing is
    allocated before the weights are known to fit (`check_fits`), and a refused checkpoint's
    tensors are released before the error is raised (this function holds the last reference when
    the caller passes the dict directly)."""
    try:
        converted = convert_checkpoint(checkpoint, flavour)
        if variant:
            cfg = _with_changes(get_config(variant), converted.config_changes)
        else:
            cfg = infer_config(converted.state_dict, checkpoint, converted.config_changes)
        if entry is not None and cfg.name != entry.variant:
            raise CheckpointError(f"{name} holds a {cfg.name}, not the {entry.variant} the zoo lists for {entry.id}")
        check_fits(cfg, converted.state_dict, name)  # before any allocation
    except ValueError as error:
        failure = CheckpointError(str(error))
    else:
        failure = None
    del checkpoint
    if failure is not None:
        # Raised outside the handler, with the file's tensors released: nothing of a failed load
        # stays referenced by the exception or its traceback.
        converted = None
        raise failure
    model = build_model(cfg)
    model.load_state_dict(converted.state_dict, strict=True)
    for note in converted.notes:
        log.info("%s: %s", name, note)
    return model.eval(), cfg, converted


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
def url_file_name(url: str) -> str:
    """The cache file name of a URL: a hash of the whole URL and the last path component."""
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint.pth"
    name = re.sub(r"[^\w.-]", "_", name)[-100:]
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
