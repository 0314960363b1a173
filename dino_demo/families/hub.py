"""Hub models: `hf:ORG/NAME[@REVISION]` ids, the entries the model list offers, and downloads.

Files come through `sources.download.fetch_hub` (huggingface_hub's cache, resumable, progress, the
size cap and deadline of the download policy, `HF_HUB_OFFLINE` / `DINO_DEMO_OFFLINE`). Only what
`from_pretrained` needs is fetched: the config, the processor's files and the weights as
safetensors (never pickled `.bin` files). In public mode (see `sources.download`) only the ids
listed in ENTRIES, and those of DINO_DEMO_ALLOWED_HF (comma-separated ids or "ORG/" prefixes, or
"*"), may be downloaded, and only at an allowed revision: the default branch, a commit an entry
lists (`HubEntry.revisions`), or one named in DINO_DEMO_ALLOWED_HF as `ORG/NAME@REVISION`. Anyone
can open a pull request (`refs/pr/N`) or push a branch with their own config.json: those are
refused before anything is fetched.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import env
from ..sources.download import DownloadError, Policy, Progress, fetch_hub
from ..sources.source import HUB_PREFIX, Source, SourceKind

ALLOWED_VARIABLE = "DINO_DEMO_ALLOWED_HF"
REQUIRED = ("config.json", "preprocessor_config.json")
OPTIONAL = ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
            "special_tokens_map.json", "generation_config.json")
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
MAX_SHARDS = 64
DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class HubEntry:
    """A published `transformers` detector: repo id, family, parameters (millions), about how large
    its weights are, licence, and COCO val2017 box AP as its authors published it (None where
    this list does not state one; zero-shot for the open-vocabulary models); `revisions`: commits
    (40 hex digits) a public server opens besides the default branch."""

    repo_id: str
    family: str
    params_m: float
    size_mb: int
    licence: str
    box_ap: float | None
    note: str = ""
    revisions: tuple[str, ...] = ()

    @property
    def source_id(self) -> str:
        return HUB_PREFIX + self.repo_id


ENTRIES: tuple[HubEntry, ...] = (
    HubEntry("SenseTime/deformable-detr", "Deformable DETR", 40.2, 161, "Apache-2.0", 44.5, "R50, 50 epochs"),
    HubEntry("SenseTime/deformable-detr-with-box-refine", "Deformable DETR", 40.5, 163, "Apache-2.0", 46.2,
             "R50, iterative box refinement"),
    HubEntry("SenseTime/deformable-detr-with-box-refine-two-stage", "Deformable DETR", 41.0, 165, "Apache-2.0", 46.9,
             "R50, box refinement, two-stage"),
    HubEntry("IDEA-Research/grounding-dino-tiny", "Grounding DINO", 172.2, 689, "Apache-2.0", 48.4,
             "Swin-T, zero-shot"),
    HubEntry("IDEA-Research/grounding-dino-base", "Grounding DINO", 232.9, 933, "Apache-2.0", 56.7,
             "Swin-B, zero-shot"),
    HubEntry("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det", "MM Grounding DINO", 173.0, 693,
             "Apache-2.0", None, "Swin-T"),
    HubEntry("PekingU/rtdetr_r18vd", "RT-DETR", 20.2, 81, "Apache-2.0", 46.5, "R18-vd"),
    HubEntry("PekingU/rtdetr_r50vd", "RT-DETR", 42.9, 172, "Apache-2.0", 53.1, "R50-vd"),
    HubEntry("PekingU/rtdetr_v2_r18vd", "RT-DETR v2", 20.2, 81, "Apache-2.0", 47.9, "R18-vd"),
    HubEntry("PekingU/rtdetr_v2_r50vd", "RT-DETR v2", 42.9, 172, "Apache-2.0", 53.4, "R50-vd"),
    HubEntry("ustc-community/dfine-nano-coco", "D-FINE", 3.8, 15, "Apache-2.0", 42.8, "HGNetv2 N"),
    HubEntry("ustc-community/dfine-small-coco", "D-FINE", 10.4, 42, "Apache-2.0", 48.5, "HGNetv2 S"),
    HubEntry("ustc-community/dfine-xlarge-coco", "D-FINE", 62.7, 251, "Apache-2.0", 55.8, "HGNetv2 X"),
    HubEntry("AnnaZhang/lwdetr_small_60e_coco", "LW-DETR", 14.6, 59, "Apache-2.0", 48.0, "small, 60 epochs"),
    HubEntry("Roboflow/rf-detr-base", "RF-DETR", 29.0, 122, "Apache-2.0", None, "DINOv2 base"),
)
_BY_ID = {entry.repo_id: entry for entry in ENTRIES}


def parse(source: str | Source) -> tuple[str, str]:
    """(repo id, revision) of "hf:ORG/NAME[@REVISION]" (as `Source.parse` reads it); ValueError for
    anything else."""
    parsed = Source.parse(source)
    if parsed.kind is not SourceKind.HUB:
        raise ValueError(f"{str(source)[:200]!r} is not a Hub id: write hf:ORG/NAME or hf:ORG/NAME@REVISION")
    return parsed.value, parsed.revision or DEFAULT_BRANCH


def entry(repo_id: str) -> HubEntry | None:
    return _BY_ID.get(repo_id)



def allowed(repo_id: str, policy: Policy, revision: str | None = None) -> bool:
    """Whether `repo_id` at `revision` (None: the default branch) may be downloaded under `policy`
    (anything outside public mode). In public mode: a listed id, or one DINO_DEMO_ALLOWED_HF
    names, at its default branch or a listed revision (see the module docstring)."""
    if not policy.public:
        return True
    revision = revision or DEFAULT_BRANCH
    patterns = [p.strip() for p in (env.text(ALLOWED_VARIABLE) or "").split(",") if p.strip()]
    if f"{repo_id}@{revision}" in patterns:
        return True
    listed = repo_id in _BY_ID or any(p == "*" or p == repo_id or (p.endswith("/") and repo_id.startswith(p))
                                      for p in patterns)
    return listed and (revision == DEFAULT_BRANCH or revision in (_BY_ID[repo_id].revisions if repo_id in _BY_ID
                                                                   else ()))


def download(source: str, progress: Progress | None = None, policy: Policy | None = None) -> Path:
    """The local folder (huggingface_hub's snapshot folder) holding what `from_pretrained` needs of
    a Hub id, downloaded where missing. Raises DownloadError (a ValueError) when not allowed or
    not available."""
    try:
        return _download(source, progress, policy)
    except DownloadError as error:  # a failure names the model: "hf:ORG/NAME: huggingface.co is unreachable ..."
        raise named(error, str(Source.parse(source))) from None


def named(error: DownloadError, model: str) -> DownloadError:
    """`error` (its type and attributes kept) with its message led by `model`, unless it already is."""
    text = str(error)
    if not text.startswith(model):
        error.args = (f"{model}: {text}",)
    return error


def _download(source: str, progress: Progress | None, policy: Policy | None) -> Path:
    repo_id, revision = parse(source)
    policy = policy or Policy.from_env()
    if not allowed(repo_id, policy, revision):
        if allowed(repo_id, policy):
            raise DownloadError(f"this server opens Hub models at their default branch or a listed commit only; "
                                f"{repo_id}@{revision[:60]} is not one of them")
        raise DownloadError(f"this server opens only the listed Hub models (and those of {ALLOWED_VARIABLE}); "
                            f"{repo_id} is not one of them")

    def get(name: str) -> Path:
        return fetch_hub(repo_id, name, revision=revision, progress=progress, policy=policy)

    folder = get(REQUIRED[0]).parent
    for name in REQUIRED[1:]:
        get(name)
    for name in OPTIONAL:
        try:
            get(name)
        except DownloadError:
            pass  # not every model has every optional file
    try:
        get(WEIGHTS)
    except DownloadError:
        index = json.loads(get(WEIGHTS_INDEX).read_text())
        shards = sorted(set(index.get("weight_map", {}).values()))
        if not shards or len(shards) > MAX_SHARDS or any(not re.fullmatch(r"[\w.-]+\.safetensors", s) for s in shards):
            raise DownloadError(f"{repo_id}: {WEIGHTS_INDEX} does not list safetensors shards") from None
        for shard in shards:
            get(shard)
    return folder
