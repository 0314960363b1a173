"""The model zoo: published COCO DINO weights as data, and getting them onto this machine.

Each `ZooEntry` says what a file is (variant, numerical flavour, layout), where it is (direct URLs,
primary first), what it scores (published COCO val2017 box AP) and under which licence it was
published. `resolve(id)` returns a local file: a copy already in the cache (checked against the
entry's sha256, or against the hash recorded at its first download), else a download from the
first URL that works. Hugging Face Hub URLs go through huggingface_hub's cache, the others into
`$DINO_DEMO_CACHE/zoo/`, which is also where a file downloaded by hand goes (`local_path`).
Nothing is downloaded unless asked for: the shipped model needs no network.

Sizes are those of the float32 weights (the files add a little metadata); a download is checked
against the size its server announces.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..model.config import FLAVOURS, VARIANTS
from . import download
from .download import DownloadError, Progress

ZOO_PREFIX = "zoo:"  # how a zoo entry is named as a model source (`sources.source`)

_HUB_URL = re.compile(r"https://huggingface\.co/([\w.-]+/[\w.-]+)/resolve/([\w.-]+)/(.+)")
_COMMIT = re.compile(r"[0-9a-f]{40}")

# Hosts the zoo downloads from (and their CDNs): the default allow-list of a public server, kept
# with the download rules (download.py reads it; it imports nothing from here).
DOWNLOAD_HOSTS = download.ZOO_HOSTS

_DETREX = "https://github.com/IDEA-Research/detrex-storage/releases/download"
_MMDET = "https://download.openmmlab.com/mmdetection/v3.0/dino"
_APACHE_DINO = ("Apache-2.0, as declared by IDEA-Research/DINO (the mirror notes that the checkpoint "
                "has no licence file of its own)")
_APACHE_DETREX = "Apache-2.0 (detrex)"
_APACHE_MMDET = "Apache-2.0 (MMDetection)"


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint.

    variant: the architecture (a key of VARIANTS); flavour: how its code base computes (a key of
    FLAVOURS); layout: its key layout ("official", "detrex", "mmdet"); urls: direct downloads,
    primary first (a Hugging Face Hub URL names its revision: `.../resolve/REVISION/FILE`);
    size_mb: about how large; box_ap: COCO val2017 box AP as published; sha256: the file's hash
    when known, checked after every download (else the first download's is recorded and later
    copies are checked against it); sha256_prefix: the first hex digits of it that the file name
    publishes (MMDetection's).

    A Hub entry is pinned when its URL names a commit (40 hex digits) and its sha256 is given: what
    is downloaded is then that commit's file, checked byte for byte (a branch such as `main` can
    move under the same URL).
    """

    id: str
    name: str
    variant: str
    flavour: str
    layout: str
    urls: tuple[str, ...]
    size_mb: int
    box_ap: float
    epochs: int
    licence: str
    source: str
    sha256: str | None = None
    sha256_prefix: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", self.id):
            raise ValueError(f"zoo id {self.id!r} must be lower-case letters, digits, '.' and '-'")
        if self.variant not in VARIANTS or self.flavour not in FLAVOURS or self.layout not in ("official", "detrex", "mmdet"):
            raise ValueError(f"{self.id}: unknown variant, flavour or layout")
        if not self.urls or any(not re.match(r"https?://", u) for u in self.urls):
            raise ValueError(f"{self.id}: needs http(s) URLs")
        if len({u.rsplit("/", 1)[-1] for u in self.urls}) != 1:
            raise ValueError(f"{self.id}: every URL must name the same file")
        for digest, length in ((self.sha256, 64), (self.sha256_prefix, None)):
            if digest is not None and not re.fullmatch(r"[0-9a-f]{%s}" % (length or "4,63"), digest):
                raise ValueError(f"{self.id}: sha256 values are lower-case hex")
        if self.hub_revision is not None and _COMMIT.fullmatch(self.hub_revision) and self.sha256 is None:
            raise ValueError(f"{self.id}: a Hub URL pinned to a commit needs the file's sha256 too")

    @property
    def hub_revision(self) -> str | None:
        """The revision the primary URL names when it is a Hugging Face Hub URL, else None."""
        hub = _HUB_URL.fullmatch(self.urls[0])
        return hub[2] if hub else None

    @property
    def pinned(self) -> bool:
        """Whether what is downloaded is fixed: a Hub commit with the file's sha256, or any file
        whose sha256 is given."""
        return self.sha256 is not None and (self.hub_revision is None or bool(_COMMIT.fullmatch(self.hub_revision)))

    @property
    def file_name(self) -> str:
        return self.urls[0].rsplit("/", 1)[-1]

    @property
    def source_id(self) -> str:
        """`zoo:<id>`: the text of this entry's `Source`."""
        return f"{ZOO_PREFIX}{self.id}"


ENTRIES: tuple[ZooEntry, ...] = (
    # The official checkpoints (Google Drive only), mirrored unchanged inside a LibreYOLO wrapper dict.
    ZooEntry("dino-4scale-r50", "DINO-4scale R50, 12 epochs (official)", "dino-4scale-r50", "official", "official",
             ("https://huggingface.co/LibreYOLO/LibreDINODETRr50/resolve/main/LibreDINODETRr50.pt",),
             188, 49.0, 12, _APACHE_DINO, "IDEA-Research/DINO checkpoint0011_4scale.pth, mirrored by LibreYOLO"),
    ZooEntry("dino-5scale-r50", "DINO-5scale R50, 12 epochs (official)", "dino-5scale-r50", "official", "official",
             ("https://huggingface.co/LibreYOLO/LibreDINODETRr50s5/resolve/main/LibreDINODETRr50s5.pt",),
             189, 49.4, 12, _APACHE_DINO, "IDEA-Research/DINO checkpoint0011_5scale.pth, mirrored by LibreYOLO"),
    ZooEntry("dino-5scale-swinl", "DINO-5scale Swin-L, 36 epochs (official)", "dino-5scale-swinl", "official",
             "official", ("https://huggingface.co/LibreYOLO/LibreDINODETRswinl/resolve/main/LibreDINODETRswinl.pt",),
             874, 58.5, 36, _APACHE_DINO, "IDEA-Research/DINO checkpoint0027_5scale_swin.pth, mirrored by LibreYOLO"),
    # detrex (IDEA-Research's toolbox, detectron2 layout): GitHub release assets, as its projects/dino/README.md lists them.
    ZooEntry("detrex-dino-4scale-r50", "DINO-4scale R50, 12 epochs (detrex)", "dino-4scale-r50", "detrex", "detrex",
             (f"{_DETREX}/v0.2.0/dino_r50_4scale_12ep_49_2AP.pth",), 191, 49.2, 12, _APACHE_DETREX, "IDEA-Research/detrex"),
    ZooEntry("detrex-dino-5scale-r50", "DINO-5scale R50, 12 epochs (detrex)", "dino-5scale-r50", "detrex", "detrex",
             (f"{_DETREX}/v0.2.1/dino_r50_5scale_12ep.pth",), 193, 49.6, 12, _APACHE_DETREX, "IDEA-Research/detrex"),
    # Its upstream config (projects/dino/configs/dino-resnet/dino_r50_4scale_24ep.py) sets the position
    # encoding's temperature to 20 and offset to 0: the "detrex-dab-pe" flavour.
    ZooEntry("detrex-dino-4scale-r50-24ep", "DINO-4scale R50, 24 epochs (detrex)", "dino-4scale-r50", "detrex-dab-pe",
             "detrex",
             (f"{_DETREX}/v0.1.1/dino_r50_4scale_24ep.pth",), 191, 50.6, 24, _APACHE_DETREX, "IDEA-Research/detrex"),
    ZooEntry("detrex-dino-4scale-swinl-12ep", "DINO-4scale Swin-L 384, 12 epochs (detrex)", "dino-4scale-swinl",
             "detrex", "detrex", (f"{_DETREX}/v0.1.1/dino_swin_large_4scale_12ep.pth",), 876, 56.9, 12, _APACHE_DETREX,
             "IDEA-Research/detrex"),
    ZooEntry("detrex-dino-5scale-swinl-12ep", "DINO-5scale Swin-L 384, 12 epochs (detrex)", "dino-5scale-swinl",
             "detrex", "detrex", (f"{_DETREX}/v0.2.1/dino_swin_large_384_5scale_12ep.pth",), 877, 57.5, 12, _APACHE_DETREX,
             "IDEA-Research/detrex"),
    ZooEntry("detrex-dino-4scale-swinl", "DINO-4scale Swin-L 384, 36 epochs (detrex)", "dino-4scale-swinl", "detrex",
             "detrex", (f"{_DETREX}/v0.2.0/dino_swin_large_384_4scale_36ep.pth",), 876, 58.1, 36, _APACHE_DETREX,
             "IDEA-Research/detrex"),
    ZooEntry("detrex-dino-5scale-swinl", "DINO-5scale Swin-L 384, 36 epochs (detrex)", "dino-5scale-swinl", "detrex",
             "detrex", (f"{_DETREX}/v0.2.1/dino_swin_large_384_5scale_36ep.pth",), 877, 58.5, 36, _APACHE_DETREX,
             "IDEA-Research/detrex"),
    # MMDetection 3.x (OpenMMLab's download server); file names end in the first 8 hex digits of their sha256.
    ZooEntry("mmdet-dino-4scale-r50", "DINO-4scale R50, 12 epochs (MMDetection)", "dino-4scale-r50", "mmdet", "mmdet",
             (f"{_MMDET}/dino-4scale_r50_8xb2-12e_coco/dino-4scale_r50_8xb2-12e_coco_20221202_182705-55b2bba2.pth",),
             191, 49.0, 12, _APACHE_MMDET, "open-mmlab/mmdetection", sha256_prefix="55b2bba2"),
    ZooEntry("mmdet-dino-4scale-r50-improved", "DINO-4scale R50 improved, 12 epochs (MMDetection)", "dino-4scale-r50",
             "mmdet-improved", "mmdet",
             (f"{_MMDET}/dino-4scale_r50_improved_8xb2-12e_coco/"
              "dino-4scale_r50_improved_8xb2-12e_coco_20230818_162607-6f47a913.pth",),
             191, 50.1, 12, _APACHE_MMDET, "open-mmlab/mmdetection", sha256_prefix="6f47a913"),
    ZooEntry("mmdet-dino-5scale-swinl", "DINO-5scale Swin-L, 12 epochs (MMDetection)", "dino-5scale-swinl", "mmdet",
             "mmdet", (f"{_MMDET}/dino-5scale_swin-l_8xb2-12e_coco/"
                       "dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth",),
             877, 57.2, 12, _APACHE_MMDET, "open-mmlab/mmdetection", sha256_prefix="a654145f"),
    # Listed in MMDetection's model zoo (configs/dino/metafile.yml), hosted on GitHub by a contributor.
    ZooEntry("mmdet-dino-5scale-swinl-36ep", "DINO-5scale Swin-L, 36 epochs (MMDetection)", "dino-5scale-swinl",
             "mmdet", "mmdet", ("https://github.com/RistoranteRist/mmlab-weights/releases/download/dino-swinl/"
                                "dino-5scale_swin-l_8xb2-36e_coco-5486e051.pth",),
             877, 58.4, 36, _APACHE_MMDET, "open-mmlab/mmdetection model zoo", sha256_prefix="5486e051"),
)

_BY_ID = {entry.id: entry for entry in ENTRIES}


def get(zoo_id: str) -> ZooEntry:
    """The entry `zoo_id` (with or without the `zoo:` prefix); ValueError listing the ids otherwise."""
    entry = _BY_ID.get(zoo_id.removeprefix(ZOO_PREFIX))
    if entry is None:
        raise ValueError(f"unknown model zoo id {zoo_id!r}; known: {', '.join(_BY_ID)}")
    return entry


def folder() -> Path:
    """Where zoo files downloaded from plain URLs, and files downloaded by hand, are kept."""
    return paths.cache_dir("zoo")


def local_path(entry: ZooEntry) -> Path:
    """Where this entry's file is kept, and where to put it when downloading it by hand."""
    return folder() / entry.file_name


def cached_path(entry: ZooEntry) -> Path | None:
    """The entry's file if it is on this machine (no network, no hashing), else None."""
    if local_path(entry).is_file():
        return local_path(entry)
    for url in entry.urls:
        hub = _HUB_URL.fullmatch(url)
        if hub:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(hub[1], hub[3], revision=hub[2])
            if isinstance(found, str):
                return Path(found)
    return None


@dataclass(frozen=True)
class ZooStatus:
    """An entry and its local file (None until downloaded)."""

    entry: ZooEntry
    path: Path | None

    @property
    def cached(self) -> bool:
        return self.path is not None


def status() -> list[ZooStatus]:
    """Every entry with its local file if it has one (looks at the disk only)."""
    return [ZooStatus(entry, cached_path(entry)) for entry in ENTRIES]


def resolve(zoo_id: str | ZooEntry, progress: Progress | None = None, policy: download.Policy | None = None) -> Path:
    """A verified local file of the entry, downloaded if needed (from its URLs in order).

    `progress(done_bytes, total_bytes_or_None)` is called while downloading (default: a tqdm bar).
    Raises DownloadError naming the file to download and where to put it when no URL works.
    """
    entry = zoo_id if isinstance(zoo_id, ZooEntry) else get(zoo_id)
    policy = policy or download.Policy.from_env()
    manual = local_path(entry)
    # A zoo file is large and trusted: its own size, not the cap for visitors' URLs, bounds it.
    policy = dataclasses.replace(policy, max_bytes=max(policy.max_bytes, 4 * entry.size_mb << 20))
    errors: list[DownloadError] = []
    for url in entry.urls:
        hub = _HUB_URL.fullmatch(url)
        try:
            if hub and not manual.is_file():
                path = download.fetch_hub(hub[1], hub[3], revision=hub[2], progress=progress, policy=policy)
                folder().mkdir(parents=True, exist_ok=True)
                # The hash is recorded where a copy downloaded by hand would be recorded.
                download.verify_file(path, entry.sha256, entry.sha256_prefix, record=manual)
                return path
            return download.fetch_url(url, manual, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix,
                                      progress=progress, policy=policy, cache_folders=cache_folders())
        except DownloadError as e:
            errors.append(e)
    # A public server's visitors are not told its file system; its operator reads the variable.
    where = f"${paths.CACHE_VARIABLE}/zoo/{entry.file_name}" if policy.public else str(manual)
    by_hand = f"download {entry.urls[0]} yourself and put it at {where}"
    if all(isinstance(e, download.Unreachable) for e in errors):  # offline: one short line
        raise DownloadError(f"{errors[0]}; to use {entry.id} without a network, {by_hand}")
    raise DownloadError(f"could not get {entry.file_name} for {entry.id} ({'; '.join(map(str, errors))}). "
                        f"To use it without a network, {by_hand}")


def cache_folders() -> tuple[Path, ...]:
    """The folders of downloaded checkpoints that the cache quota covers."""
    return folder(), paths.url_checkpoints_dir()
