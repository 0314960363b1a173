"""Checkpoint layouts: the official DINO key names, and converters from detrex's and MMDetection's.

This module is the one place where state_dict keys are renamed. Each foreign layout has one pure
function from its state_dict to the same weights under the official names (`from_detrex`,
`from_mmdet`); `to_official` finds the weights in any checkpoint dict (wrapped in other dicts or
behind a `module.`-style prefix), recognises the layout from the keys, converts, maps COCO's 80
contiguous classes onto the official 91 category ids, and says which numerical flavour the weights
were trained with (`model.config.FLAVOURS`).

What the converters take care of (each checked against the other project's source):
- backbone names: detectron2's `stem`, `res2..res5`, `shortcut`, `convN.norm` (detrex); mmdet's
  ResNet is torchvision's layout plus `num_batches_tracked`; mmdet's Swin names its parts
  differently and orders the 2x2 patch-merging channels as `nn.Unfold` does;
- input projections (a neck in both): mmdet's convolutions have no bias (a zero bias is added);
- decoder layer norms: both apply `norms.0/1/2` after self-attention, cross-attention and FFN,
  which the official code calls `norm2`, `norm1`, `norm3`;
- per-layer class and box heads (not shared), with the encoder's heads as the last entry;
- 80 class columns -> 91 (COCO ids; absent ids get weight 0 and bias ABSENT_CLASS_LOGIT), and the
  denoising label embedding (80 rows -> the official num_classes + 1).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..model.config import FLAVOURS
from ..io.labels import COCO_CATEGORIES

LAYOUTS = ("official", "detrex", "mmdet")
# A key that only this layout has (after any prefix), in the order they are tried.
_MARKERS = {"detrex": "transformer.level_embeds", "mmdet": "memory_trans_fc.weight", "official": "transformer.level_embed"}
# The official model's 91 outputs are COCO category ids; 80-class models number the categories
# 0..79 in the order of their ids.
COCO80_IDS: tuple[int, ...] = tuple(sorted(COCO_CATEGORIES))
# Logit of the 11 category ids COCO never used (and id 0) in a model converted from 80 classes:
# their score sigmoid(-100) is 0 in every precision, so they are never selected or detected.
ABSENT_CLASS_LOGIT = -100.0


class LayoutError(ValueError):
    """Weights whose layout is not recognised or does not convert; the message names the keys."""


@dataclass(frozen=True)
class Converted:
    """Weights under the official names, and what the file says about the model.

    layout: the source layout ("official", "detrex", "mmdet"); flavour: a key of FLAVOURS;
    config_changes: DINOConfig fields that follow from the source (its flavour, per-layer heads,
    class names of a non-COCO model); notes: what the conversion did, for logs and reports.
    """

    state_dict: dict[str, torch.Tensor]
    layout: str
    flavour: str
    config_changes: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# -- finding the weights -------------------------------------------------------------------------
def find_weights(checkpoint: dict) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout, state_dict without prefix) of the first dict of tensors in `checkpoint` (itself, or a
    dict inside it, breadth first, conventional names such as `model` / `state_dict` first) that
    holds a DINO in a known layout. Only keys and types are inspected."""
    fallback = None
    for tensors in _tensor_dicts(checkpoint):
        fallback = fallback or tensors
        for layout, marker in _MARKERS.items():
            prefixes = {k[: -len(marker)] for k in tensors if k.endswith(marker) and
                        (len(k) == len(marker) or k[-len(marker) - 1] == ".")}
            if len(prefixes) == 1:
                prefix = prefixes.pop()
                stray = [k for k in tensors if not k.startswith(prefix)]
                if stray:
                    raise LayoutError(f"{len(stray)} keys lie outside the model's prefix {prefix!r}: {_names(stray)}")
                return layout, {k[len(prefix):]: v for k, v in tensors.items()}
    if fallback is None:
        raise LayoutError("no tensors found: this is not a model checkpoint")
    raise LayoutError("not a DINO checkpoint in the official, detrex or MMDetection layout: it has none of "
                      + ", ".join(_MARKERS.values()))


_CONVENTIONAL = ("model", "state_dict", "model_state_dict", "module", "net", "weights")


def _tensor_dicts(root: dict, max_depth: int = 3) -> Iterator[dict[str, torch.Tensor]]:
    queue = [(root, 0)]
    while queue:
        obj, depth = queue.pop(0)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            yield tensors
        if depth < max_depth:
            children = sorted((k for k, v in obj.items() if isinstance(v, dict)),
                              key=lambda k: (k not in _CONVENTIONAL, _CONVENTIONAL.index(k) if k in _CONVENTIONAL else 0))
            queue.extend((obj[k], depth + 1) for k in children)


# -- renaming ------------------------------------------------------------------------------------
Rule = tuple[str, Callable[[re.Match], str | None] | str | None]  # (pattern, new name / template / drop)


def _rename(state: dict[str, torch.Tensor], rules: list[Rule], layout: str) -> dict[str, torch.Tensor]:
    """Apply the first rule whose pattern matches each whole key; keys no rule matches are an error."""
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                name = target(match) if callable(target) else (match.expand(target) if target else None)
                if name is not None:
                    if name in out:
                        raise LayoutError(f"{layout} keys {key!r} and another both map to {name!r}")
                    out[name] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise LayoutError(f"{len(unknown)} {layout} keys this converter does not know: {_names(unknown)}")
    return out


def _count(state: dict, pattern: str) -> int:
    """1 + the largest index captured by `pattern` among the keys (0 if none matches)."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _heads(kind: str, decoder_layers: int, layer_index: int, rest: str) -> str:
    """Per-layer head `layer_index` (the encoder's head comes last in both foreign layouts)."""
    if layer_index < decoder_layers:
        return f"{kind}.{layer_index}.{rest}"
    if layer_index == decoder_layers:
        return f"transformer.enc_out_{kind}.{rest}"
    raise LayoutError(f"head {kind}.{layer_index} beyond the {decoder_layers} decoder layers and the encoder's")


_ATTN = r"(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)"
_MHA = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_WB = r"(weight|bias)"
_BN = r"(weight|bias|running_mean|running_var)"
# The official decoder layer calls its norms by the order of the original DETR layer: the norm after
# self-attention is norm2, after cross-attention norm1, after the FFN norm3.
_DECODER_NORMS = {"0": "norm2", "1": "norm1", "2": "norm3"}


def _transformer_rules(enc: str, dec: str, ffn: str) -> list[Rule]:
    """Rules shared by both foreign layouts for the encoder and decoder layers; `enc`/`dec` are the
    foreign prefixes of the layer lists, `ffn` the FFN module's name."""
    official_enc, official_dec = "transformer.encoder.layers", "transformer.decoder.layers"
    return [
        (rf"{enc}\.(\d+)\.{ffn}\.layers\.0\.0\.{_WB}", rf"{official_enc}.\1.linear1.\2"),
        (rf"{enc}\.(\d+)\.{ffn}\.layers\.1\.{_WB}", rf"{official_enc}.\1.linear2.\2"),
        (rf"{enc}\.(\d+)\.norms\.([01])\.{_WB}", lambda m: f"{official_enc}.{m[1]}.norm{int(m[2]) + 1}.{m[3]}"),
        (rf"{dec}\.(\d+)\.{ffn}\.layers\.0\.0\.{_WB}", rf"{official_dec}.\1.linear1.\2"),
        (rf"{dec}\.(\d+)\.{ffn}\.layers\.1\.{_WB}", rf"{official_dec}.\1.linear2.\2"),
        (rf"{dec}\.(\d+)\.norms\.([012])\.{_WB}", lambda m: f"{official_dec}.{m[1]}.{_DECODER_NORMS[m[2]]}.{m[3]}"),
    ]


def from_detrex(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """detrex's DINO (projects/dino) -> official names, classes unchanged.

    detectron2 ResNet (`stem.conv1` + `.norm`, `res2..res5`, `shortcut`) or detectron2 Swin (already
    the official Swin layout), ChannelMapper neck with biased convs, `transformer.level_embeds`,
    BaseTransformerLayer lists `attentions` / `ffns` / `norms`, per-layer heads `class_embed.0..L`
    (L = the encoder's), listed again under `transformer.decoder.` (must be the same tensors).
    """
    layers = _count(state, r"transformer\.decoder\.layers\.(\d+)\.")
    convs = _count(state, r"neck\.convs\.(\d+)\.")
    for kind in ("class_embed", "bbox_embed"):
        for key in [k for k in state if k.startswith(f"transformer.decoder.{kind}.")]:
            top = key.removeprefix("transformer.decoder.")
            if top not in state or not torch.equal(state[top], state[key]):
                raise LayoutError(f"detrex key {key!r} differs from {top!r}: the decoder's heads must be the model's")
    body = "backbone.0.body"
    rules: list[Rule] = [
        (r"backbone\.stem\.conv1\.weight", f"{body}.conv1.weight"),
        (rf"backbone\.stem\.conv1\.norm\.{_BN}", rf"{body}.bn1.\1"),
        (r"backbone\.res([2-5])\.(\d+)\.conv([1-3])\.weight",
         lambda m: f"{body}.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
        (rf"backbone\.res([2-5])\.(\d+)\.conv([1-3])\.norm\.{_BN}",
         lambda m: f"{body}.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
        (r"backbone\.res([2-5])\.(\d+)\.shortcut\.weight", lambda m: f"{body}.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
        (rf"backbone\.res([2-5])\.(\d+)\.shortcut\.norm\.{_BN}",
         lambda m: f"{body}.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
        # detectron2's Swin (from the official Swin code) has the official DINO's own names.
        (r"backbone\.((?:patch_embed|layers|norm\d)\..+)", r"backbone.0.\1"),
        (rf"neck\.convs\.(\d+)\.conv\.{_WB}", r"input_proj.\1.0.\2"),
        (rf"neck\.convs\.(\d+)\.norm\.{_WB}", r"input_proj.\1.1.\2"),
        (rf"neck\.extra_convs\.(\d+)\.conv\.{_WB}", lambda m: f"input_proj.{convs + int(m[1])}.0.{m[2]}"),
        (rf"neck\.extra_convs\.(\d+)\.norm\.{_WB}", lambda m: f"input_proj.{convs + int(m[1])}.1.{m[2]}"),
        (r"transformer\.level_embeds", "transformer.level_embed"),
        (rf"transformer\.encoder\.layers\.(\d+)\.attentions\.0\.{_ATTN}", r"transformer.encoder.layers.\1.self_attn.\2.\3"),
        (rf"transformer\.decoder\.layers\.(\d+)\.attentions\.0\.attn\.{_MHA}", r"transformer.decoder.layers.\1.self_attn.\2"),
        (rf"transformer\.decoder\.layers\.(\d+)\.attentions\.1\.{_ATTN}", r"transformer.decoder.layers.\1.cross_attn.\2.\3"),
        *_transformer_rules(r"transformer\.encoder\.layers", r"transformer\.decoder\.layers", "ffns\\.0"),
        (rf"(transformer\.decoder\.(?:ref_point_head\.layers\.\d+|norm)\.{_WB})", r"\1"),
        (rf"(transformer\.(?:tgt_embed|enc_output|enc_output_norm)\.{_WB})", r"\1"),
        (rf"class_embed\.(\d+)\.{_WB}", lambda m: _heads("class_embed", layers, int(m[1]), m[2])),
        (rf"bbox_embed\.(\d+)\.(layers\.[0-2]\.{_WB})", lambda m: _heads("bbox_embed", layers, int(m[1]), m[2])),
        (r"transformer\.decoder\.(class_embed|bbox_embed)\..+", None),  # the same tensors, checked above
        (r"label_enc\.weight", "label_enc.weight"),
    ]
    return _rename(state, rules, "detrex")


def from_mmdet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMDetection 3.x's DINO (mmdet/models/detectors/dino.py) -> official names, classes unchanged.

    torchvision-named ResNet (`num_batches_tracked` dropped) or mmdet's Swin (`stages`, `w_msa`,
    `ffn`, unfold-ordered patch merging), ChannelMapper neck without conv biases (zero biases are
    added), mmcv `ffn` / `norms` layers, `query_embedding`, `memory_trans_fc/norm`, per-layer
    `bbox_head.cls_branches.0..L` / `reg_branches` (L = the encoder's), `dn_query_generator`.
    """
    layers = _count(state, r"decoder\.layers\.(\d+)\.")
    convs = _count(state, r"neck\.convs\.(\d+)\.")
    swin = "backbone.0"
    rules: list[Rule] = [
        (r"level_embed", "transformer.level_embed"),
        (r".*\.num_batches_tracked", None),
        (rf"backbone\.((?:conv1|bn1|layer[1-4]\.\d+\.(?:conv\d|bn\d|downsample\.\d))\.{_BN})", r"backbone.0.body.\1"),
        (rf"backbone\.patch_embed\.projection\.{_WB}", rf"{swin}.patch_embed.proj.\1"),
        (rf"backbone\.patch_embed\.norm\.{_WB}", rf"{swin}.patch_embed.norm.\1"),
        (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\."
         r"(relative_position_bias_table|relative_position_index|qkv\.weight|qkv\.bias|proj\.weight|proj\.bias)",
         rf"{swin}.layers.\1.blocks.\2.attn.\3"),
        (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.(norm[12])\.{_WB}", rf"{swin}.layers.\1.blocks.\2.\3.\4"),
        (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.{_WB}", rf"{swin}.layers.\1.blocks.\2.mlp.fc1.\3"),
        (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.{_WB}", rf"{swin}.layers.\1.blocks.\2.mlp.fc2.\3"),
        (r"backbone\.stages\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", rf"{swin}.layers.\1.downsample.\2"),
        (rf"backbone\.norm(\d)\.{_WB}", rf"{swin}.norm\1.\2"),
        (r"neck\.convs\.(\d+)\.conv\.weight", r"input_proj.\1.0.weight"),
        (rf"neck\.convs\.(\d+)\.gn\.{_WB}", r"input_proj.\1.1.\2"),
        (r"neck\.extra_convs\.(\d+)\.conv\.weight", lambda m: f"input_proj.{convs + int(m[1])}.0.weight"),
        (rf"neck\.extra_convs\.(\d+)\.gn\.{_WB}", lambda m: f"input_proj.{convs + int(m[1])}.1.{m[2]}"),
        (rf"encoder\.layers\.(\d+)\.self_attn\.{_ATTN}", r"transformer.encoder.layers.\1.self_attn.\2.\3"),
        (rf"decoder\.layers\.(\d+)\.self_attn\.attn\.{_MHA}", r"transformer.decoder.layers.\1.self_attn.\2"),
        (rf"decoder\.layers\.(\d+)\.cross_attn\.{_ATTN}", r"transformer.decoder.layers.\1.cross_attn.\2.\3"),
        *_transformer_rules(r"encoder\.layers", r"decoder\.layers", "ffn"),
        (rf"decoder\.((?:ref_point_head\.layers\.\d+|norm)\.{_WB})", r"transformer.decoder.\1"),
        (r"query_embedding\.weight", "transformer.tgt_embed.weight"),
        (rf"memory_trans_fc\.{_WB}", r"transformer.enc_output.\1"),
        (rf"memory_trans_norm\.{_WB}", r"transformer.enc_output_norm.\1"),
        (rf"bbox_head\.cls_branches\.(\d+)\.{_WB}", lambda m: _heads("class_embed", layers, int(m[1]), m[2])),
        (rf"bbox_head\.reg_branches\.(\d+)\.([024])\.{_WB}",
         lambda m: _heads("bbox_embed", layers, int(m[1]), f"layers.{int(m[2]) // 2}.{m[3]}")),
        (r"dn_query_generator\.label_embedding\.weight", "label_enc.weight"),
    ]
    out = _rename(state, rules, "mmdet")
    for key in [k for k in out if re.fullmatch(r"input_proj\.\d+\.0\.weight", k)]:
        out[key.removesuffix("weight") + "bias"] = out[key].new_zeros(out[key].shape[0])
    for key in [k for k in out if k.startswith(f"{swin}.layers.") and ".downsample." in k]:
        out[key] = unfold_to_official_order(out[key])
    return out


def unfold_to_official_order(weight: torch.Tensor) -> torch.Tensor:
    """Swin patch merging: mmdet's `nn.Unfold` concatenates each 2x2 neighbourhood channel-major
    (c, dy, dx); the official code concatenates the four pixels (0,0), (1,0), (0,1), (1,1), each with
    all channels. Reorders the merged dimension (last for the reduction, the only one for the norm)."""
    *lead, merged = weight.shape
    channels = merged // 4
    by_pixel = weight.reshape(*lead, channels, 4).transpose(-1, -2)  # (dy, dx) order: (0,0),(0,1),(1,0),(1,1)
    return by_pixel[..., [0, 2, 1, 3], :].reshape(*lead, merged)


def official_to_unfold_order(weight: torch.Tensor) -> torch.Tensor:
    """The inverse of `unfold_to_official_order` (how MMDetection converts official Swin weights)."""
    *lead, merged = weight.shape
    channels = merged // 4
    by_pixel = weight.reshape(*lead, 4, channels)[..., [0, 2, 1, 3], :]
    return by_pixel.transpose(-1, -2).reshape(*lead, merged)


# -- classes -------------------------------------------------------------------------------------
_CLASS_KEYS = re.compile(r"(class_embed\.\d+|transformer\.enc_out_class_embed)\.(weight|bias)")


def coco80_to_91(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Class heads with 80 contiguous COCO classes -> the official 91 outputs indexed by category id;
    the denoising label embedding -> 92 rows (91 ids plus the official spare). Absent ids get
    weight 0 and bias ABSENT_CLASS_LOGIT (label embedding rows 0)."""
    out = dict(state)
    for key, value in state.items():
        index = torch.tensor(COCO80_IDS, device=value.device)
        if _CLASS_KEYS.fullmatch(key.removeprefix("transformer.decoder.")):
            fill = ABSENT_CLASS_LOGIT if key.endswith("bias") else 0.0
            out[key] = value.new_full((91, *value.shape[1:]), fill).index_copy(0, index, value)
        elif key == "label_enc.weight":
            out[key] = value.new_zeros((92, value.shape[1])).index_copy(0, index, value)
    return out


def coco91_to_80(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `coco80_to_91`: the 80 used category ids, in order."""
    return {k: v.index_select(0, torch.tensor(COCO80_IDS, device=v.device)) if _CLASS_KEYS.fullmatch(k.removeprefix("transformer.decoder."))
            or k == "label_enc.weight" else v for k, v in state.items()}


def _normalized(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", str(name)).strip().lower()


def is_coco80(names) -> bool:
    """Whether `names` are COCO's 80 categories in id order (case and separators aside)."""
    expected = [COCO_CATEGORIES[i] for i in COCO80_IDS]
    return names is not None and len(names) == 80 and [_normalized(n) for n in names] == expected


# -- metadata ------------------------------------------------------------------------------------
def stored_class_names(checkpoint: dict) -> tuple[str, ...] | None:
    """Class names a checkpoint carries: MMDetection's `meta.dataset_meta.classes`, or a list/dict of
    names under `names` / `classes` / `class_names` (plain strings only)."""
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    for names in (dataset_meta.get("classes"), *(checkpoint.get(k) for k in ("class_names", "classes", "names"))):
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            names = [names[k] for k in sorted(names)]
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return tuple(names)
    return None


_NUMBER = r"(-?\d+(?:\.\d*)?(?:[eE]-?\d+)?)"


def mmdet_position_encoding(checkpoint: dict) -> tuple[float, float] | None:
    """(temperature, offset) of `positional_encoding=dict(...)` in the config text MMDetection stores
    under `meta.cfg`, read as text (never executed); None when the file has no such text."""
    meta = checkpoint.get("meta")
    text = meta.get("cfg") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    block = re.search(r"positional_encoding\s*=\s*dict\(([^()]*)\)", text)
    if block is None:
        return None
    values = {}
    for name in ("temperature", "offset"):
        found = re.search(rf"\b{name}\s*=\s*{_NUMBER}", block.group(1))
        values[name] = float(found.group(1)) if found else None
    # mmdet's SinePositionalEncoding defaults: temperature 10000, offset 0.
    return (values["temperature"] if values["temperature"] is not None else 10000.0,
            values["offset"] if values["offset"] is not None else 0.0)


def heads_are_shared(state: dict[str, torch.Tensor]) -> bool:
    """Whether every decoder layer's class and box head holds the same weights as layer 0's."""
    for key, value in state.items():
        m = re.fullmatch(r"(class_embed|bbox_embed)\.(\d+)\.(.+)", key)
        if m and m[2] != "0":
            first = state.get(f"{m[1]}.0.{m[3]}")
            if first is None or first.shape != value.shape or not torch.equal(first, value):
                return False
    return True


# -- everything together -------------------------------------------------------------------------
def to_official(checkpoint: dict, flavour: str | None = None) -> Converted:
    """The weights of any supported checkpoint dict under official names, and what follows from it.

    The flavour is the file's own unless `flavour` (a key of FLAVOURS) is given: official files
    compute as official DINO, detrex files as detrex, MMDetection files as the `positional_encoding`
    of the config they store (standard DINO's when they store none). Per-layer heads and class names
    are facts of the weights and always apply.
    """
    if flavour is not None and flavour not in FLAVOURS:
        raise LayoutError(f"unknown flavour {flavour!r}; known: {', '.join(FLAVOURS)}")
    layout, state = find_weights(checkpoint)
    notes: list[str] = []
    numerics: dict = {}
    facts: dict = {"shared_heads": False}
    implied = layout
    if layout == "official":
        facts["shared_heads"] = heads_are_shared(state)
    else:
        state = _decoder_head_aliases(from_detrex(state) if layout == "detrex" else from_mmdet(state))
        pe = mmdet_position_encoding(checkpoint) if layout == "mmdet" else None
        if pe is not None and pe != (20.0, 0.0):
            implied = "mmdet-improved" if pe == (10000.0, -0.5) else "mmdet"
            numerics = {"pe_temperature": pe[0], "pe_offset": pe[1]}
        if layout == "mmdet":
            notes.append("zero biases added to the input projections (MMDetection's have none)")
        state, class_facts, class_notes = _official_classes(state, stored_class_names(checkpoint), layout)
        facts.update(class_facts)
        notes.extend(class_notes)
    chosen = flavour or implied
    changes = {**FLAVOURS[chosen], **(numerics if flavour is None else {}), **facts}
    if changes.get("shared_heads", True):
        del changes["shared_heads"]  # the default
    return Converted(state, layout, chosen, changes, tuple(notes))


def _decoder_head_aliases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official files list the decoder layers' heads twice: as `class_embed.i` / `bbox_embed.i` and
    as `transformer.decoder.class_embed.i` / `bbox_embed.i` (the same tensors)."""
    aliases = {f"transformer.decoder.{k}": v for k, v in state.items() if k.startswith(("class_embed.", "bbox_embed."))}
    return {**state, **aliases}


def _official_classes(state: dict[str, torch.Tensor], names: tuple[str, ...] | None, layout: str):
    """COCO's 80 classes -> 91 ids; any other class list keeps its size and names. The label
    embedding gets the official spare row."""
    head = state.get("class_embed.0.weight")
    if head is None:
        raise LayoutError(f"{layout} checkpoint without a class head (class_embed.0 after conversion)")
    num_classes = head.shape[0]
    if num_classes == 80 and (names is None or is_coco80(names)):
        return coco80_to_91(state), {}, ["80 COCO classes mapped onto the official 91 category ids"]
    label = state.get("label_enc.weight")
    if label is not None and label.shape[0] == num_classes:
        state = {**state, "label_enc.weight": torch.cat([label, label.new_zeros(1, label.shape[1])])}
    changes = {"class_names": tuple(names)} if names is not None and len(names) == num_classes else {}
    return state, changes, [f"{num_classes} classes kept" + (" with the file's names" if changes else "")]


def _names(keys: list[str], limit: int = 8) -> str:
    return "; ".join(keys[:limit]) + (" ..." if len(keys) > limit else "")
