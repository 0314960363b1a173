"""Checks on the values the page's controls send: every callback parses its inputs here, so that
values sent by API clients or a tampered page get the same clear errors as the controls' own
limits. Everything raises ValueError with a message for the person who sent it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..io.images import MAX_SIDE
from ..model.config import MIN_INPUT_SIDE

ALL = "all"
MAX_DETECTIONS = 300
MAX_PROPOSALS = 900
# Largest cap on the model input's longer side the page accepts (uploads are at most this large).
MAX_INPUT_SIDE = MAX_SIDE
PROPOSAL_COLORS = ("score", "level")
POINT_COLORS = ("level", "head")
# Extras of the sampling-point views, ticked in a checkbox group.
OFFSETS, ZOOM = "offset vectors", "zoom in"
POINT_EXTRAS = (OFFSETS, ZOOM)
# Whose decoder attention the heatmaps sum.
HEATMAP_SOURCES = ("selected query", "detections above the threshold")


def number(value, name: str, lo: float, hi: float, *, integer: bool = False) -> float | int:
    """`value` as a number in [lo, hi] (a whole number when `integer`). Booleans are refused (JSON's
    `true` is no slot 1), and so are integers too large for a float (a 401-digit number)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {_shown(value)}.") from None
    except OverflowError:
        result = math.inf
    if not math.isfinite(result) or not lo <= result <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {_shown(value)}.")
    if integer:
        if result != int(result):
            raise ValueError(f"{name} must be a whole number, got {_shown(value)}.")
        return int(result)
    return result


def _shown(value) -> str:
    """A value as an error message quotes it: at most 40 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's digit limit for str()
        return "a number of too many digits"
    return text if len(text) <= 40 else f"{text[:37]}..."


def one_of(value, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {_shown(value)}.")
    return value


def index_or_all(value, name: str, count: int) -> int | None:
    """'all' -> None; '1'..str(count) -> the 0-based index."""
    if value is None or (isinstance(value, str) and value.strip().lower() == ALL):
        return None
    return number(value, name, 1, count, integer=True) - 1


@dataclass(frozen=True)
class DetectionOptions:
    """Which detections are shown: score >= threshold, at most max_detections, best first."""

    threshold: float
    max_detections: int

    @classmethod
    def parse(cls, threshold, max_detections) -> "DetectionOptions":
        return cls(number(threshold, "Score threshold", 0.0, 1.0),
                   number(max_detections, "Max detections", 1, MAX_DETECTIONS, integer=True))


def max_input_side(value) -> int:
    """The cap on the model input's longer side (the model's own resize rule applies below it, so a
    cap above the model's own maximum changes nothing)."""
    return number(value, "Max input side", MIN_INPUT_SIDE, MAX_INPUT_SIDE, integer=True)


def extras(value) -> frozenset[str]:
    """The ticked extras of a sampling-point view (a subset of POINT_EXTRAS; None for none)."""
    ticked = [] if value is None else [value] if isinstance(value, str) else list(value)
    for item in ticked:
        one_of(item, "Show", POINT_EXTRAS)
    return frozenset(ticked)


@dataclass(frozen=True)
class SamplingOptions:
    """Decoder (or encoder) `layer` (0-based), `head` / `level` (0-based, None for all),
    `color_by`, and whether to draw the offset vectors and zoom in on the query."""

    layer: int
    head: int | None
    level: int | None
    color_by: str
    offsets: bool = False
    zoom: bool = False

    @classmethod
    def parse(cls, layer, head, level, color_by, show=None, *, layers: int, heads: int, levels: int,
              layer_name: str = "Decoder layer") -> "SamplingOptions":
        ticked = extras(show)
        return cls(number(layer, layer_name, 1, layers, integer=True) - 1,
                   index_or_all(head, "Head", heads), index_or_all(level, "Level", levels),
                   one_of(color_by, "Colour points by", POINT_COLORS), OFFSETS in ticked, ZOOM in ticked)


@dataclass(frozen=True)
class TokenChoice:
    """An encoder token: feature `level` and (`row`, `col`) cell, all 0-based."""

    level: int
    row: int
    col: int

    @classmethod
    def parse(cls, level, row, col, *, levels: int) -> "TokenChoice":
        """Level 1..levels, row and column 0-based (checked against the level's grid later, by
        `explore.encoder.token`)."""
        return cls(number(level, "Token level", 1, levels, integer=True) - 1,
                   number(row, "Token row", 0, 1_000_000, integer=True),
                   number(col, "Token column", 0, 1_000_000, integer=True))


@dataclass(frozen=True)
class HeatmapOptions:
    """Whose attention (`source`, one of HEATMAP_SOURCES), in decoder `layer` (0-based), for one
    `head` (0-based) or all (None)."""

    source: str
    layer: int
    head: int | None

    @classmethod
    def parse(cls, source, layer, head, *, layers: int, heads: int) -> "HeatmapOptions":
        return cls(one_of(source, "Heatmap of", HEATMAP_SOURCES),
                   number(layer, "Decoder layer", 1, layers, integer=True) - 1, index_or_all(head, "Head", heads))


@dataclass(frozen=True)
class ProposalOptions:
    """The `top_n` proposals by encoder score (all of them when a model has fewer), coloured by
    `color_by`."""

    top_n: int
    color_by: str

    @classmethod
    def parse(cls, top_n, color_by) -> "ProposalOptions":
        return cls(number(top_n, "Proposals shown", 1, MAX_PROPOSALS, integer=True),
                   one_of(color_by, "Colour proposals by", PROPOSAL_COLORS))


def query_slot(value, queries: int) -> int:
    return number(value, "Query slot", 0, queries - 1, integer=True)
