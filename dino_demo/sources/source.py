"""Where a model comes from, as one typed value parsed in one place.

The text people type (on the page, after `--checkpoint` / `--init`, in `load(...)`) is one of:

| text | kind | loaded by |
|---|---|---|
| `shipped` | SHIPPED: weights/dino-tiny.pth, found from the package (any working directory) | checkpoint |
| `zoo:ID` (a bare `ID` where `bare_zoo`) | ZOO: a model zoo entry, downloaded once (sources/zoo.py) | checkpoint |
| `untrained:VARIANT` | UNTRAINED: random weights, seeded (a variant's structure) | loader |
| `http://...`, `https://...` (any case) | URL: a checkpoint downloaded once into the cache | checkpoint |
| `hf:ORG/NAME[@REVISION]` | HUB: a Hugging Face Hub model in transformers format | families |
| a path to a file | FILE: a checkpoint (official, detrex, MMDetection or our own) | checkpoint |
| a path to a folder | FOLDER: a transformers `save_pretrained` folder (`config.json`) | families |

`Source.parse(text)` checks what can be checked without reading a file (a known zoo id and
variant, a well-formed Hub id) and raises ValueError otherwise; `str(source)` gives the text back
(`Source.parse(str(s)) == s`); `.name` is what people are shown. Which loader takes which kind is
decided in one place, the runtime's registry (`runtime.load_detector`); `sources.loader.build`
loads DINO's kinds.
"""
from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from . import zoo
from .zoo import ZOO_PREFIX

SHIPPED_TEXT = "shipped"
UNTRAINED_PREFIX = "untrained:"
HUB_PREFIX = "hf:"
SHIPPED_CHECKPOINT = paths.WEIGHTS_DIR / "dino-tiny.pth"
_URL = re.compile(r"(?i)https?://\S+")
_OTHER_SCHEME = re.compile(r"(?i)[a-z][a-z0-9+.-]+://")
# Hub repository ids: ORG/NAME, each part letters, digits, '-', '_', '.' (not starting with '.' or '-').
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}")
_REVISION = re.compile(r"[\w.\-/]{1,128}")


class SourceKind(enum.Enum):
    SHIPPED = "shipped"
    ZOO = "zoo"
    UNTRAINED = "untrained"
    URL = "url"
    HUB = "hf"
    FILE = "file"
    FOLDER = "folder"


@dataclass(frozen=True)
class Source:
    """A model source. `value`: the zoo id, the variant, the URL, the Hub repository id or the path
    as given (empty for SHIPPED); `revision`: a Hub revision (branch, tag or commit), HUB only."""

    kind: SourceKind
    value: str = ""
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.revision is not None and self.kind is not SourceKind.HUB:
            raise ValueError(f"only hf: sources have a revision, not {self.kind.value} sources")
        if (self.kind is SourceKind.SHIPPED) != (self.value == ""):
            raise ValueError("the shipped source has no value; every other source needs one")

    # -- making one ------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | os.PathLike | Source, *, bare_zoo: bool = False) -> Source:
        """The source `text` names (see the module docstring). A path-like object is a local file
        or folder. With `bare_zoo`, a zoo id without `zoo:` names the zoo entry unless a file or
        folder of that name exists (what `train --init` accepts). ValueError for an empty text,
        an unknown zoo id or variant, a malformed Hub id and URL schemes other than http(s)."""
        if isinstance(text, Source):
            return text
        if isinstance(text, os.PathLike):
            return cls.local(text)
        if not isinstance(text, str):
            raise ValueError(f"a model source is a string or a path, not {type(text).__name__}")
        text = text.strip()
        lowered = text.lower()
        if not text:
            raise ValueError("no model source given: a checkpoint path or URL, shipped, zoo:ID, "
                             "untrained:VARIANT or hf:ORG/NAME")
        if lowered == SHIPPED_TEXT:
            return cls(SourceKind.SHIPPED)
        if lowered.startswith(ZOO_PREFIX):
            return cls.zoo(text[len(ZOO_PREFIX):])
        if lowered.startswith(UNTRAINED_PREFIX):
            return cls.untrained(text[len(UNTRAINED_PREFIX):])
        if lowered.startswith(HUB_PREFIX):
            return cls.hub(text[len(HUB_PREFIX):])
        if _URL.fullmatch(text):
            return cls(SourceKind.URL, text)
        if _OTHER_SCHEME.match(text):
            raise ValueError(f"only http(s) URLs can be downloaded, not {text.split('://')[0]}:// ({text[:200]})")
        if bare_zoo and not Path(text).expanduser().exists():
            if text in {entry.id for entry in zoo.ENTRIES}:
                return cls.zoo(text)
        return cls.local(text)

    @classmethod
    def zoo(cls, zoo_id: str) -> Source:
        """A model zoo entry, by its id with or without `zoo:`; ValueError listing the ids."""
        return cls(SourceKind.ZOO, zoo.get(zoo_id.strip()).id)

    @classmethod
    def untrained(cls, variant: str) -> Source:
        """Random weights (seeded) of a variant; ValueError listing the variants."""
        from ..model.config import get_config

        return cls(SourceKind.UNTRAINED, get_config(variant.strip()).name)

    @classmethod
    def hub(cls, text: str) -> Source:
        """`ORG/NAME` or `ORG/NAME@REVISION` on the Hugging Face Hub (transformers format)."""
        repo, _, revision = text.strip().partition("@")
        if not _HUB_ID.fullmatch(repo) or ".." in repo:
            raise ValueError(f"not a Hugging Face Hub model id: {repo[:200]!r} (expected hf:ORG/NAME[@REVISION])")
        if revision and (not _REVISION.fullmatch(revision) or ".." in revision):
            raise ValueError(f"not a Hub revision (a branch, tag or commit): {revision[:200]!r}")
        return cls(SourceKind.HUB, repo, revision or None)

    @classmethod
    def local(cls, path: str | os.PathLike) -> Source:
        """A file on this machine (a checkpoint), or a folder (a transformers `save_pretrained` one)."""
        text = os.fspath(path)
        kind = SourceKind.FOLDER if Path(text).expanduser().is_dir() else SourceKind.FILE
        return cls(kind, text)

    # -- reading one -----------------------------------------------------------------------------
    def __str__(self) -> str:
        if self.kind is SourceKind.SHIPPED:
            return SHIPPED_TEXT
        if self.kind is SourceKind.ZOO:
            return ZOO_PREFIX + self.value
        if self.kind is SourceKind.UNTRAINED:
            return UNTRAINED_PREFIX + self.value
        if self.kind is SourceKind.HUB:
            return HUB_PREFIX + self.value + (f"@{self.revision}" if self.revision else "")
        return self.value

    @property
    def name(self) -> str:
        """What people are shown: "dino-tiny (shipped)", the zoo id, `untrained:VARIANT`, the Hub id,
        the URL or the file name."""
        if self.kind is SourceKind.SHIPPED:
            return "dino-tiny (shipped)"
        if self.kind in (SourceKind.FILE, SourceKind.FOLDER):
            return Path(self.value).name or self.value
        return str(self).removeprefix(ZOO_PREFIX)

    @property
    def path(self) -> Path:
        """The local file or folder of a SHIPPED, FILE or FOLDER source (`~` expanded)."""
        if self.kind is SourceKind.SHIPPED:
            return SHIPPED_CHECKPOINT
        if self.kind in (SourceKind.FILE, SourceKind.FOLDER):
            return Path(self.value).expanduser()
        raise ValueError(f"{self} is not a file on this machine")

    @property
    def is_transformers(self) -> bool:
        """Whether the source is a transformers-format model (a Hub id, or a folder: those hold
        `config.json` and the weights, as `save_pretrained` writes them)."""
        return self.kind in (SourceKind.HUB, SourceKind.FOLDER)

    @property
    def needs_download(self) -> bool:
        return self.kind in (SourceKind.ZOO, SourceKind.URL, SourceKind.HUB)
