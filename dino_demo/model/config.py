"""Model variants as data: one frozen dataclass per DINO configuration.

Only what differs between the released COCO models (and the project's own small models) is a
field. Everything else about DINO is fixed by the code: two-stage query selection, mixed query
selection with `tgt_embed` content queries, look-forward-twice refinement, contrastive denoising,
sine position encoding.

`FLAVOURS` lists how other code bases compute the same architecture (see `sources/layouts.py`): a model
converted from detrex or MMDetection takes its source's flavour, so it computes what its source
computed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

BACKBONES = ("resnet50", "swin-l-384", "resnet-tiny")
# The detector needs at least this many input pixels on each side (the stride-32 backbone stage
# and the extra stride-64 level must not vanish).
MIN_INPUT_SIDE = 32


@dataclass(frozen=True)
class DINOConfig:
    """Hyper-parameters of one DINO variant.

    `backbone_levels` are the backbone stages (0-based, official `return_interm_indices`) whose
    features enter the transformer; levels beyond them come from stride-2 convolutions on the
    last stage's raw output, up to `num_feature_levels` in all.
    """

    name: str
    backbone: str = "resnet50"
    backbone_levels: tuple[int, ...] = (1, 2, 3)
    num_feature_levels: int = 4
    num_classes: int = 91
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    enc_layers: int = 6
    dec_layers: int = 6
    enc_points: int = 4
    dec_points: int = 4
    num_queries: int = 900
    num_select: int = 300
    dropout: float = 0.0
    # Contrastive denoising (training only): `dn_number` noised copies of each ground-truth box,
    # split into groups as in the official code; labels flipped with probability ratio/2, box
    # corners moved by up to `dn_box_noise_scale` half-sizes (0.4 in every official config).
    dn_number: int = 100
    dn_label_noise_ratio: float = 0.5
    dn_box_noise_scale: float = 0.4
    # Sine position encoding of the feature maps: temperature, and an offset added to the cumulative
    # cell counts before normalization (official 20 and 0; detrex 10000 and -0.5).
    pe_temperature: float = 20.0
    pe_offset: float = 0.0
    # One class head and one box head shared by every decoder layer (official DINO), or one per layer
    # (detrex, MMDetection; official DINO's dec_pred_class_embed_share = dec_pred_bbox_embed_share = False).
    shared_heads: bool = True
    # eps of the inverse sigmoid under each layer's returned boxes (official 1e-3; MMDetection's head 1e-5).
    box_eps: float = 1e-3
    # Input resizing used by inference: shorter side, longer-side cap (official: 800 / 1333).
    min_size: int = 800
    max_size: int = 1333
    # Human-readable class names indexed by class id; empty means COCO's 91-id map.
    class_names: tuple[str, ...] = ()
    # The data set's category id of each class id (a model fine-tuned on COCO-format data); empty
    # means the default numbering of `io.labels.category_ids`.
    category_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {BACKBONES}")
        if not self.backbone_levels or list(self.backbone_levels) != sorted(set(self.backbone_levels)):
            raise ValueError(f"backbone_levels must be increasing stage indices, got {self.backbone_levels}")
        if self.backbone_levels[-1] > 3 or self.backbone_levels[0] < 0:
            raise ValueError(f"backbone_levels must lie in 0..3, got {self.backbone_levels}")
        if self.num_feature_levels < len(self.backbone_levels):
            raise ValueError(
                f"num_feature_levels={self.num_feature_levels} is smaller than the "
                f"{len(self.backbone_levels)} backbone levels {self.backbone_levels}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}")
        if self.hidden_dim % 32:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be a multiple of 32 (GroupNorm(32) in the input projections)")
        if (self.hidden_dim // 2) % 2:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be a multiple of 4 (sine position encoding)")
        for field in ("num_classes", "enc_layers", "dec_layers", "enc_points", "dec_points", "num_queries", "num_select"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        if not self.pe_temperature > 0 or not -1.0 <= self.pe_offset <= 0.0:
            raise ValueError(f"need pe_temperature > 0 and -1 <= pe_offset <= 0, got {self.pe_temperature}, {self.pe_offset}")
        if not isinstance(self.shared_heads, bool):
            raise ValueError(f"shared_heads must be True or False, got {self.shared_heads!r}")
        if not 0 < self.box_eps < 0.5:
            raise ValueError(f"box_eps must lie in (0, 0.5), got {self.box_eps}")
        if self.category_ids and (len(self.category_ids) != self.num_classes
                                  or len(set(self.category_ids)) != len(self.category_ids)):
            raise ValueError(f"category_ids must be {self.num_classes} distinct ids, got {self.category_ids}")
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {self.min_size}, {self.max_size}")

    def replace(self, **changes) -> "DINOConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Plain data (tuples as lists), as stored in checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "DINOConfig":
        """The config `as_dict` stored, read as untrusted data: unknown keys are ignored, values of
        the wrong type or outside `STORED_LIMITS` (generous bounds around every known variant)
        raise ValueError before anything is built from them."""
        if not isinstance(values, dict):
            raise ValueError(f"a stored config must be a dict, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
        for name, value in kwargs.items():
            _check_stored_value(name, value, fields[name].default)
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise ValueError(str(error)) from None


# Bounds on the sizes a stored config may ask for: every released and project variant lies well
# inside; a checkpoint asking for more (ffn_dim=200000, say) is refused before a module is built.
STORED_LIMITS: dict[str, int] = {
    "num_feature_levels": 6, "num_classes": 2000, "hidden_dim": 1024, "num_heads": 32, "ffn_dim": 8192,
    "enc_layers": 12, "dec_layers": 12, "enc_points": 16, "dec_points": 16, "num_queries": 3000,
    "num_select": 3000, "dn_number": 1000, "min_size": 4096, "max_size": 4096,
}
MAX_CLASS_NAME_LENGTH = 100


def _check_stored_value(name: str, value, default) -> None:
    """Raise ValueError unless a stored config value has its field's type and lies in its bounds."""
    if name in STORED_LIMITS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= STORED_LIMITS[name]:
            raise ValueError(f"{name} must be a whole number in 0..{STORED_LIMITS[name]}, got {value!r}")
    elif name == "class_names":
        if (not isinstance(value, tuple) or len(value) > STORED_LIMITS["num_classes"]
                or not all(isinstance(n, str) and len(n) <= MAX_CLASS_NAME_LENGTH for n in value)):
            raise ValueError(f"class_names must be a list of at most {STORED_LIMITS['num_classes']} names "
                             f"of at most {MAX_CLASS_NAME_LENGTH} characters")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e6 <= value <= 1e6:
            raise ValueError(f"{name} must be a number, got {value!r}")
    elif name == "name" or isinstance(default, str):
        if not (isinstance(value, str) and len(value) <= MAX_CLASS_NAME_LENGTH):
            raise ValueError(f"{name} must be a short string, got {value!r:.80}")
    elif name == "backbone_levels" and not (isinstance(value, tuple) and all(isinstance(v, int) for v in value)):
        raise ValueError(f"backbone_levels must be a list of whole numbers, got {value!r:.80}")
    elif name == "category_ids" and not (
            isinstance(value, tuple) and len(value) <= STORED_LIMITS["num_classes"]
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"category_ids must be a list of at most {STORED_LIMITS['num_classes']} whole numbers")


_R50_4SCALE = DINOConfig(name="dino-4scale-r50")

VARIANTS: dict[str, DINOConfig] = {
    # Released COCO models (IDEA-Research/DINO model zoo, 12/24/36-epoch checkpoints).
    "dino-4scale-r50": _R50_4SCALE,
    "dino-5scale-r50": _R50_4SCALE.replace(name="dino-5scale-r50", backbone_levels=(0, 1, 2, 3), num_feature_levels=5),
    "dino-4scale-swinl": _R50_4SCALE.replace(name="dino-4scale-swinl", backbone="swin-l-384"),
    "dino-5scale-swinl": _R50_4SCALE.replace(
        name="dino-5scale-swinl", backbone="swin-l-384", backbone_levels=(0, 1, 2, 3), num_feature_levels=5),
    # The project's own offline model (see weights/README.md): full DINO structure, small sizes.
    "dino-tiny": DINOConfig(
        name="dino-tiny", backbone="resnet-tiny", backbone_levels=(1, 2, 3), num_feature_levels=4,
        num_classes=8, hidden_dim=128, num_heads=8, ffn_dim=512, enc_layers=3, dec_layers=3,
        num_queries=100, num_select=100, dn_number=50, min_size=256, max_size=512,
        class_names=("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "ellipse")),
}


# How other code bases compute DINO: the config fields in which each differs from the official code.
FLAVOURS: dict[str, dict] = {
    "official": {},
    # detrex: position encoding as Deformable DETR's, a class and box head per decoder layer.
    "detrex": {"pe_temperature": 10000.0, "pe_offset": -0.5, "shared_heads": False},
    # detrex's 24-epoch R50 config goes back to DAB-DETR's position encoding (temperature 20, offset 0).
    "detrex-dab-pe": {"pe_temperature": 20.0, "pe_offset": 0.0, "shared_heads": False},
    # MMDetection's DINO configs, and its "improved" one with detrex's position encoding.
    "mmdet": {"shared_heads": False, "box_eps": 1e-5},
    "mmdet-improved": {"pe_temperature": 10000.0, "pe_offset": -0.5, "shared_heads": False, "box_eps": 1e-5},
}


def with_flavour(cfg: DINOConfig, flavour: str) -> DINOConfig:
    """`cfg` computing as the code base `flavour` (a key of FLAVOURS) does."""
    try:
        return cfg.replace(**FLAVOURS[flavour])
    except KeyError:
        raise ValueError(f"unknown flavour {flavour!r}; known: {', '.join(FLAVOURS)}") from None


def get_config(name: str) -> DINOConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None
