"""Bounds on a transformers model folder, checked on its files before anything is built.

`transformers` builds every parameter the config asks for before a single weight is read, so a
folder's `config.json` alone (with an empty, valid safetensors file) decides how much memory a
load takes; its processor decides the input size. `check_folder` reads the folder's JSON files
(sizes in bytes first, nesting depth, then the values) and refuses, with one line naming the
field, anything outside what the families' published configurations need with room to spare:

| bounded | default limit | published (largest) |
|---|---|---|
| queries (`num_queries`, `two_stage_num_proposals`) | 3000 | 900 (Grounding DINO) |
| encoder / decoder layers | 24 | 6 |
| backbone and text layers (`num_hidden_layers`) | 48 | 12 (BERT, DINOv2 base) |
| model widths (`d_model`, `hidden_size`, `embed_dim`, ...) | 2048 | 768 |
| feed-forward widths | 8192 | 3072 |
| attention heads | 64 | 24 (Swin-B) |
| feature levels / sampling points per level | 8 / 32 | 5 / 6 |
| labels (`id2label` entries and keys) | 25 000 | 13 204 (V3Det) |
| backbone channels / blocks per stage | 4096 / 64 | 2048 / 23 |
| text length (`max_text_len`) / positions | 1024 / 4096 | 256 / 1024 |
| vocabulary | 300 000 | 30 522 |
| processor sides (every form: `shortest_edge`, `longest_edge`, `height`, `width`, `max_size`, ...) | 4096 | 1333 |
| tokenizer files (`vocab.txt`, `tokenizer.json`, ...), each | 16 MiB | 0.7 MiB |
| memory estimate: parameters and one image's activations at the processor's size | 8 GiB | under 2 GiB |

Any other whole number in a config above a million is refused too. The command line may go
further with `--allow-large-model` (`DINO_DEMO_ALLOW_LARGE_MODEL=1`): four times the counts, 8192
px sides, 32 GiB, never unbounded and never in public mode (`SPACE_ID` / `DINO_DEMO_PUBLIC`).

The estimate (`estimate`) counts float32 bytes from the config alone: the parameters (twice: the
built model and the weights read into it) and the largest activations of one image at the input
size the processor uses (backbone feature maps, the encoder's sampled values, attention maps,
per-layer outputs the explorer keeps). It is an upper estimate, not a measurement.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import env
from ..io.set_limits import json_depth

LARGE_VARIABLE = env.ALLOW_LARGE_MODEL
CONFIG = "config.json"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "image_processor_config.json")
TOKENIZER_NAMES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
MAX_JSON_BYTES = 4 * 1024 ** 2
MAX_DEPTH = 16
MAX_LIST = 64
MAX_ANY_NUMBER = 1_000_000
FLOAT_BYTES = 4

# field name -> largest value (at any nesting level of config.json; lists: every element).
COUNTS: dict[str, int] = {
    **dict.fromkeys(("num_queries", "two_stage_num_proposals"), 3000),
    "num_denoising": 1000,
    "group_detr": 64,
    **dict.fromkeys(("encoder_layers", "decoder_layers"), 24),
    "num_hidden_layers": 48,
    **dict.fromkeys(("d_model", "hidden_size", "embed_dim", "embedding_size", "encoder_hidden_dim",
                     "projector_out_channels", "lqe_hidden_dim", "head_dim"), 2048),
    **dict.fromkeys(("encoder_ffn_dim", "decoder_ffn_dim", "intermediate_size"), 8192),
    **dict.fromkeys(("encoder_attention_heads", "decoder_attention_heads", "num_attention_heads",
                     "decoder_self_attention_heads", "decoder_cross_attention_heads", "num_heads"), 64),
    **dict.fromkeys(("num_feature_levels", "decoder_n_levels"), 8),
    **dict.fromkeys(("encoder_n_points", "decoder_n_points"), 32),
    "num_labels": 25_000,
    **dict.fromkeys(("hidden_sizes", "encoder_in_channels", "decoder_in_channels", "stem_channels",
                     "stage_in_channels", "stage_mid_channels", "stage_out_channels"), 4096),
    **dict.fromkeys(("depths", "stage_num_blocks", "stage_numb_of_layers"), 64),
    "max_text_len": 1024,
    "max_position_embeddings": 4096,
    "vocab_size": 300_000,
    "type_vocab_size": 16,
    "max_num_bins": 256,
    **dict.fromkeys(("image_size", "pretrain_image_size"), 4096),
    **dict.fromkeys(("window_size", "num_windows"), 256),
    "mlp_ratio": 16,
    "num_channels": 4,
}
MIN_PATCH = 2
MAX_LABEL_CHARS = 256
SIDE_FIELDS = ("shortest_edge", "longest_edge", "height", "width", "max_size", "max_height", "max_width")


@dataclass(frozen=True)
class ModelLimits:
    """How far a folder may go: `scale` multiplies the counts of COUNTS; `max_side` bounds every
    processor side (pixels); `memory_bytes` bounds `estimate(...).total`; `file_bytes` bounds
    each tokenizer file."""

    scale: int = 1
    max_side: int = 4096
    memory_bytes: int = 8 * 1024 ** 3
    file_bytes: int = 16 * 1024 ** 2

    @classmethod
    def large(cls) -> "ModelLimits":
        """What `--allow-large-model` allows (the command line only): larger, still bounded."""
        return cls(scale=4, max_side=8192, memory_bytes=32 * 1024 ** 3, file_bytes=64 * 1024 ** 2)

    @classmethod
    def from_env(cls) -> "ModelLimits":
        """The default limits; the large ones with DINO_DEMO_ALLOW_LARGE_MODEL, except in public mode."""
        from ..sources.download import Policy

        if env.flag(LARGE_VARIABLE) and not Policy.from_env().public:
            return cls.large()
        return cls()


@dataclass(frozen=True)
class Estimate:
    """Float32 bytes a load and one image's run take, from the config: `parameters` (count),
    `weights` (bytes: the model and the weights read into it), `activations` (bytes)."""

    parameters: int
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


def check_folder(folder: Path, name: str, limits: ModelLimits | None = None) -> Estimate:
    """Check a transformers folder's config, processor and tokenizer files (`name`: how the folder
    is shown in messages); ValueError naming the field for anything outside `limits`. Returns the
    memory estimate."""
    limits = limits or ModelLimits.from_env()
    for path in sorted(folder.iterdir()):
        if path.name in TOKENIZER_NAMES and path.is_file() and path.stat().st_size > limits.file_bytes:
            raise ValueError(f"{name}: tokenizer file {path.name} is larger than {limits.file_bytes >> 20} MiB "
                             f"({path.stat().st_size >> 20} MiB)")
    config = read_json(folder / CONFIG, name)
    if not isinstance(config, dict):
        raise ValueError(f"{name}: {CONFIG} is not a JSON object")
    check_config(config, name, limits)
    height, width = 0, 0
    for file_name in PROCESSOR_FILES:
        if (folder / file_name).is_file():
            processor = read_json(folder / file_name, name)
            h, w = input_extent(processor, name, limits)
            height, width = max(height, h), max(width, w)
    if not height:
        height, width = 800, 1333  # what the families' processors default to
    estimated = estimate(config, height, width)
    if estimated.total > limits.memory_bytes:
        raise ValueError(f"{name}: its config asks for about {estimated.total / 1024 ** 3:.1f} GiB "
                         f"({estimated.parameters / 1e6:.0f} M parameters, one {height}x{width} image), more than "
                         f"the {limits.memory_bytes / 1024 ** 3:.0f} GiB this server allows")
    return estimated


def read_json(path: Path, name: str):
    """A JSON file at most MAX_JSON_BYTES long and MAX_DEPTH deep (checked before parsing)."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{name}: {path.name} is larger than {MAX_JSON_BYTES >> 20} MiB")
    data = path.read_bytes()
    if json_depth(data) > MAX_DEPTH:
        raise ValueError(f"{name}: {path.name} is nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{name}: {path.name} is not valid JSON ({str(error)[:80]})") from None


def check_config(config: dict, name: str, limits: ModelLimits) -> None:
    """ValueError naming the first field of `config` (a config.json as read) outside `limits`."""
    labels = config.get("id2label")
    most_labels = COUNTS["num_labels"] * limits.scale
    if labels is not None:
        if not isinstance(labels, dict) or len(labels) > most_labels:
            raise ValueError(f"{name}: config field id2label holds more than {most_labels} labels")
        for key, value in labels.items():
            if not (isinstance(key, str) and key.isdigit() and int(key) < most_labels):
                raise ValueError(f"{name}: config field id2label has key {key[:20]!r}: keys are class indices "
                                 f"below {most_labels}")
            if not isinstance(value, str) or len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"{name}: config field id2label[{key}] is not a name of at most "
                                 f"{MAX_LABEL_CHARS} characters")
    label2id = config.get("label2id")
    if label2id is not None and (not isinstance(label2id, dict) or len(label2id) > most_labels):
        raise ValueError(f"{name}: config field label2id holds more than {most_labels} labels")
    _check_values(config, "", name, limits)


def _check_values(value, field: str, name: str, limits: ModelLimits) -> None:
    key = field.rsplit(".", 1)[-1]
    if key in ("id2label", "label2id"):
        return
    if isinstance(value, dict):
        for child, item in value.items():
            _check_values(item, f"{field}.{child}" if field else str(child), name, limits)
        return
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ValueError(f"{name}: config field {field} lists more than {MAX_LIST} values")
        for item in value:
            _check_values(item, field, name, limits)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ValueError(f"{name}: config field {field} is not a finite number")
    most = COUNTS.get(key)
    if most is not None:
        most *= limits.scale
        if value > most:
            raise ValueError(f"{name}: config field {field} is {_quote(value)}; at most {most} here "
                             "(published models need far less)")
        if value < 0:
            raise ValueError(f"{name}: config field {field} is negative ({_quote(value)})")
    elif key == "patch_size" and not MIN_PATCH <= value <= 64:
        raise ValueError(f"{name}: config field {field} is {_quote(value)}; it must be in {MIN_PATCH}..64")
    elif abs(value) > MAX_ANY_NUMBER * limits.scale and key not in ("positional_encoding_temperature",):
        raise ValueError(f"{name}: config field {field} is {_quote(value)}; no field of these models needs "
                         f"more than {MAX_ANY_NUMBER * limits.scale}")


def _quote(value) -> str:
    return str(value)[:24]


def input_extent(processor: dict, name: str, limits: ModelLimits) -> tuple[int, int]:
    """(height, width) the largest model input a processor config (preprocessor_config.json or
    processor_config.json, its image processor nested) asks for; ValueError naming a side beyond
    `limits.max_side`."""
    if not isinstance(processor, dict):
        raise ValueError(f"{name}: the processor config is not a JSON object")
    nested = processor.get("image_processor")
    if isinstance(nested, dict):
        return input_extent(nested, name, limits)
    sides: dict[str, int] = {}

    def side(field: str, value) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= limits.max_side:
            raise ValueError(f"{name}: processor field {field} is {_quote(value)}; sides are 1..{limits.max_side} "
                             "pixels here")
        return int(value)

    for key in ("size", "pad_size", "crop_size"):
        value = processor.get(key)
        if isinstance(value, dict):
            for field in SIDE_FIELDS:
                checked = side(f"{key}.{field}", value.get(field))
                if key == "size" and checked is not None:
                    sides[field] = checked
        elif value is not None:
            checked = side(key, value)
            if key == "size":
                sides["shortest_edge"] = checked
    for field in SIDE_FIELDS:   # the older top-level forms (`max_size`, ...)
        checked = side(field, processor.get(field))
        if checked is not None:
            sides.setdefault(field, checked)
    if "height" in sides and "width" in sides:
        return sides["height"], sides["width"]
    short = sides.get("shortest_edge", 800)
    long = sides.get("longest_edge") or sides.get("max_size") or limits.max_side
    return min(short, long), long


# -- the estimate ---------------------------------------------------------------------------------

def _int(config: dict, key: str, default: int) -> int:
    value = config.get(key)
    if isinstance(value, list):
        return int(sum(value)) if value else default
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _labels(config: dict) -> int:
    labels = config.get("id2label")
    return max(len(labels), 1 + max(map(int, labels))) if isinstance(labels, dict) and labels else 91


def estimate(config: dict, height: int, width: int) -> Estimate:
    """Float32 bytes of a model built from `config` (a checked config.json) and of one
    `height` x `width` input's activations (see the module docstring)."""
    model_type = str(config.get("model_type", ""))
    d = _int(config, "d_model", 256)
    heads = max(_int(config, "decoder_attention_heads", 0), _int(config, "decoder_cross_attention_heads", 0),
                _int(config, "encoder_attention_heads", 0), 8)
    levels = _int(config, "num_feature_levels", 4)
    encoder_points = _int(config, "encoder_n_points", 4) * levels
    points = config.get("decoder_n_points", 4)
    decoder_points = sum(points) if isinstance(points, list) else _int(config, "decoder_n_points", 4) * levels
    encoder_ffn, decoder_ffn = _int(config, "encoder_ffn_dim", 1024), _int(config, "decoder_ffn_dim", 1024)
    decoder_layers = _int(config, "decoder_layers", 6)
    hybrid = "encoder_hidden_dim" in config      # RT-DETR, D-FINE: a hybrid (convolutional) encoder
    encoder_layers = _int(config, "encoder_layers", 1 if hybrid else 6)
    if model_type in ("lw_detr", "rf_detr"):
        encoder_layers = 0
    queries = _int(config, "num_queries", 300) * max(1, _int(config, "group_detr", 1))
    labels = _labels(config)
    text = "max_text_len" in config or "text_config" in config
    text_len = _int(config, "max_text_len", 256) if text else 0

    def deformable(points_total: int) -> int:
        return 2 * d * d + d * heads * points_total * 3

    backbone = config.get("backbone_config") if isinstance(config.get("backbone_config"), dict) else {}
    parameters = _backbone_parameters(backbone)
    channels = max(_list(backbone, "hidden_sizes") or [_int(backbone, "hidden_size", 0) * 8 or 2048])
    parameters += levels * 9 * channels * d
    if hybrid:
        width_e = _int(config, "encoder_hidden_dim", 256)
        parameters += sum(_list(config, "encoder_in_channels") or [channels]) * width_e
        parameters += encoder_layers * (4 * width_e ** 2 + 2 * width_e * encoder_ffn) + 64 * levels * width_e ** 2
    else:
        parameters += encoder_layers * (deformable(encoder_points) + 2 * d * encoder_ffn
                                        + (8 * d * d + 2 * d * encoder_ffn if text else 0))
    parameters += decoder_layers * (4 * d * d + deformable(decoder_points) + 2 * d * decoder_ffn
                                    + (4 * d * d if text else 0))
    parameters += (decoder_layers + 1) * (d * labels + 3 * d * d
                                          + 4 * d * (_int(config, "max_num_bins", 0) + 1))
    parameters += queries * d * 2 + (labels + 1) * d
    if text:
        textual = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
        hidden = _int(textual, "hidden_size", 768)
        parameters += (_int(textual, "vocab_size", 30522) + _int(textual, "max_position_embeddings", 512)) * hidden
        parameters += _int(textual, "num_hidden_layers", 12) * (4 * hidden ** 2
                                                                 + 2 * hidden * _int(textual, "intermediate_size", 3072))
        parameters += hidden * d

    pixels = height * width
    activations = _backbone_activations(backbone, height, width)
    tokens = sum(pixels // (8 * 2 ** level) ** 2 + 1 for level in range(levels))
    if hybrid:
        coarsest = pixels // 32 ** 2 + 1
        activations += coarsest ** 2 * heads * FLOAT_BYTES + tokens * _int(config, "encoder_hidden_dim", 256) * 12 * 4
    elif encoder_layers:
        activations += tokens * (6 * d + encoder_ffn + heads * encoder_points * 3 + encoder_points * d) * 4
        activations += tokens * text_len * heads * 2 * 4
    activations += tokens * (labels + 2 * d) * 4                     # proposals: every token scored
    activations += queries * queries * heads * 4
    activations += queries * (6 * d + decoder_ffn + heads * decoder_points * 3 + decoder_points * d) * 4
    activations += (decoder_layers + 1) * queries * (labels + text_len + heads * decoder_points * 3 + 8) * 4
    return Estimate(parameters, 2 * parameters * FLOAT_BYTES, activations)


def _list(config: dict, key: str) -> list[int]:
    value = config.get(key)
    return [int(v) for v in value if isinstance(v, (int, float))] if isinstance(value, list) else []


def _backbone_parameters(backbone: dict) -> int:
    """Parameters of a backbone config: a CNN (hidden_sizes, depths), a Swin (embed_dim, depths),
    a ViT (hidden_size, num_hidden_layers); a named timm backbone counts as a ResNet-50."""
    depths = _list(backbone, "depths") or _list(backbone, "stage_num_blocks")
    if "embed_dim" in backbone:
        embed, ratio = _int(backbone, "embed_dim", 96), float(backbone.get("mlp_ratio", 4) or 4)
        return int(sum((4 + 2 * ratio) * (embed * 2 ** i) ** 2 * n for i, n in enumerate(depths or [2, 2, 6, 2])))
    if "stage_mid_channels" in backbone:   # HGNet: blocks of `layers` convolutions, then aggregation
        light = backbone.get("stage_light_block") or []
        stages = zip(_list(backbone, "stage_in_channels"), _list(backbone, "stage_mid_channels"),
                     _list(backbone, "stage_out_channels"), depths, _list(backbone, "stage_numb_of_layers"),
                     [bool(v) for v in light] + [False] * MAX_LIST)
        return int(sum(n * (m * (mid * mid + 25 * mid if thin else 9 * mid ** 2)
                            + (c_in + m * mid) * out // 2 + out * out // 2)
                       for c_in, mid, out, n, m, thin in stages))
    if "hidden_sizes" in backbone:
        factor = 18 if backbone.get("layer_type") == "basic" else 1.2
        sizes = _list(backbone, "hidden_sizes")
        return int(sum(factor * size ** 2 * n for size, n in zip(sizes, depths or [3] * len(sizes))))
    if "hidden_size" in backbone:
        hidden = _int(backbone, "hidden_size", 768)
        inner = _int(backbone, "intermediate_size", int(hidden * float(backbone.get("mlp_ratio", 4) or 4)))
        grid = (_int(backbone, "image_size", 518) // max(MIN_PATCH, _int(backbone, "patch_size", 14))) ** 2
        return _int(backbone, "num_hidden_layers", 12) * (4 * hidden ** 2 + 2 * hidden * inner) + (grid + 1) * hidden
    return 26_000_000


def _backbone_activations(backbone: dict, height: int, width: int) -> int:
    """Largest feature maps of one input (several alive at once: three per stage, kept outputs)."""
    pixels = height * width
    if "hidden_size" in backbone and "hidden_sizes" not in backbone and "embed_dim" not in backbone:
        hidden = _int(backbone, "hidden_size", 768)
        tokens = pixels // max(MIN_PATCH, _int(backbone, "patch_size", 14)) ** 2 + 1
        heads = _int(backbone, "num_attention_heads", 12)
        inner = _int(backbone, "intermediate_size", 4 * hidden)
        return (tokens * tokens * heads + tokens * (6 * hidden + inner)) * 4
    if "embed_dim" in backbone:
        embed = _int(backbone, "embed_dim", 96)
        window = _int(backbone, "window_size", 7)
        heads = max(_list(backbone, "num_heads") or [32])
        return (pixels // 16) * (embed * 12 + window ** 2 * heads) * 4
    sizes = _list(backbone, "hidden_sizes") or [256, 512, 1024, 2048]
    stem = pixels // 4 * _int(backbone, "embedding_size", 64) * 3
    return (stem + sum(3 * pixels // (4 * 2 ** i) ** 2 * size for i, size in enumerate(sizes))) * 4

