"""What a view is asked to draw: small frozen option types, checked where they are made (the page
parses its controls into them in `ui.inputs`; scripts build them directly). Indices are 0-based;
None means "all"."""
from __future__ import annotations

from dataclasses import dataclass

PROPOSAL_COLORS = ("score", "level")
POINT_COLORS = ("level", "head")
# Whose decoder attention the heatmaps sum.
HEATMAP_SOURCES = ("selected query", "detections above the threshold")
SELECTED_QUERY, SHOWN_DETECTIONS = HEATMAP_SOURCES


@dataclass(frozen=True)
class DetectionOptions:
    """Which detections are shown: score >= threshold, at most max_detections, best first."""

    threshold: float
    max_detections: int


@dataclass(frozen=True)
class SamplingOptions:
    """Decoder (or encoder) `layer` (0-based), `head` / `level` (0-based, None for all),
    `color_by` (one of POINT_COLORS), and whether to draw the offset vectors and zoom in on the
    query."""

    layer: int
    head: int | None
    level: int | None
    color_by: str
    offsets: bool = False
    zoom: bool = False


@dataclass(frozen=True)
class HeatmapOptions:
    """Whose attention (`source`, one of HEATMAP_SOURCES), in decoder `layer` (0-based), for one
    `head` (0-based) or all (None)."""

    source: str
    layer: int
    head: int | None


@dataclass(frozen=True)
class ProposalOptions:
    """The `top_n` proposals by encoder score (all of them when a model has fewer), coloured by
    `color_by` (one of PROPOSAL_COLORS)."""

    top_n: int
    color_by: str
