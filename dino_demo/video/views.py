"""What the page's Video tab shows of a detected clip, without a UI framework: a frame with its
tracked detections, their table, and for one track its query's sampling points and box refinement
in the current frame (the explorer's own drawings, `explore.panels`) and its score over time.

A `VideoRun` keeps the clip's frame records (`video.document.frame_record`) and, per detected
frame, the key of its `StoredResult` in a store (the page's result store, under its memory budget);
every function here takes the stored result of the frame it draws.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..explore import panels
from ..explore.draw.figures import render_detections
from ..explore.options import SamplingOptions
from ..explore.stored import StoredResult
from ..explore.draw.data import boxes_at
from ..explore.draw.pixels import Legend, dim, with_legend
from .annotate import UNTRACKED_COLOR
from .clip import ClipInfo
from .engine import VideoSettings

TABLE_COLUMNS = ["track", "label", "score", "slot", "x0", "y0", "x1", "y1"]


@dataclass(frozen=True)
class VideoRun:
    """A clip detected on the page: `info`, the name it was uploaded as, the model's name, its
    frame records in clip order, the store key of each frame's result, the files offered for
    download (detections.json, the annotated clip), and what a frame needs to run again as one
    image: the clip's path on the server, the caller's handle of the model (the page keeps its
    `ui.choices.ModelChoice`) and the run's `settings`."""

    info: ClipInfo
    file_name: str
    model_id: str
    records: tuple[dict[str, Any], ...]
    keys: tuple[str, ...]
    document_path: str = ""
    annotated_path: str = ""
    clip_path: str = ""
    model: object | None = None
    settings: VideoSettings = field(default_factory=VideoSettings)

    def __post_init__(self) -> None:
        if len(self.records) != len(self.keys) or not self.records:
            raise ValueError("a video run needs one stored result per frame record, and at least one frame")

    def frame(self, position: int) -> dict[str, Any]:
        """The record of detected frame `position` (0 .. len(records) - 1)."""
        if not 0 <= position < len(self.records):
            raise ValueError(f"Frame must be 0 … {len(self.records) - 1}, got {position}.")
        return self.records[position]

    def track_slot(self, position: int, track: int | None) -> int | None:
        """The query slot of `track`'s best detection in detected frame `position`, None when the
        track is not detected there (or `track` is None)."""
        record = self.frame(position)
        index = _index_of(record, track)
        return None if index is None else int(record["detections"][index]["query_slot"])

    @property
    def tracks(self) -> list[int]:
        """Every track id, in order of first appearance."""
        seen: dict[int, None] = {}
        for record in self.records:
            for d in record["detections"]:
                if d["track_id"] is not None:
                    seen.setdefault(d["track_id"], None)
        return list(seen)


def light(stored: StoredResult) -> StoredResult:
    """A frame's stored result without what the Video tab never draws from (the encoder memory, the
    decoder features, the encoder's input): its sampling points, references, boxes and logits stay."""
    output = stored.result.internals
    empty = torch.empty(0)
    slim = dataclasses.replace(output, memory=empty, decoder_features=empty, encoder_input=None)
    return dataclasses.replace(stored, result=dataclasses.replace(stored.result, output=slim))


def _index_of(record: dict[str, Any], track: int | None) -> int | None:
    """The best detection of `track` in the frame, or None."""
    for i, d in enumerate(record["detections"]):
        if track is not None and d["track_id"] == track:
            return i
    return None


def frame_image(stored: StoredResult, record: dict[str, Any], track: int | None) -> np.ndarray:
    """The frame with its detections coloured by track ("#3 car 0.87"), `track` drawn thicker."""
    detections = record["detections"]
    k = stored.scale
    boxes = np.array([d["box_xyxy"] for d in detections], dtype=np.float64).reshape(-1, 4) * k
    captions = [("" if d["track_id"] is None else f"#{d['track_id']} ") + f"{d['label']} {d['score']:.2f}"
                for d in detections]
    colours = [UNTRACKED_COLOR if d["track_id"] is None else int(d["track_id"]) for d in detections]
    return render_detections(stored.canvas, boxes, captions, colours, selected=_index_of(record, track))


def frame_table(record: dict[str, Any]) -> pd.DataFrame:
    rows = [["" if d["track_id"] is None else d["track_id"], d["label"], round(d["score"], 3), d["query_slot"],
             *[round(v, 1) for v in d["box_xyxy"]]] for d in record["detections"]]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def track_at(stored: StoredResult, record: dict[str, Any], x: float, y: float) -> int | None:
    """The track of the (smallest) detection under canvas pixel (x, y) of `frame_image`."""
    detections = record["detections"]
    boxes = np.array([d["box_xyxy"] for d in detections], dtype=np.float64).reshape(-1, 4)
    hits = [i for i in boxes_at(boxes, x / stored.scale, y / stored.scale) if detections[i]["track_id"] is not None]
    return detections[hits[0]]["track_id"] if hits else None


def track_row(record: dict[str, Any], row: int) -> int | None:
    """The track of the table's row `row`."""
    detections = record["detections"]
    return detections[row]["track_id"] if 0 <= row < len(detections) else None


def _absent(stored: StoredResult, text: str) -> np.ndarray:
    return with_legend(dim(stored.canvas, 0.6), Legend(note=text))


def track_sampling(stored: StoredResult, record: dict[str, Any], track: int | None,
                   options: SamplingOptions) -> np.ndarray:
    """The track's query in this frame: its reference box and sampling points in one decoder layer
    (heads and levels as `options` choose; the explorer's Sampling points view)."""
    index = _index_of(record, track)
    if index is None:
        return _absent(stored, "Click a box to follow its track." if track is None
                       else f"Track #{track} is not detected in this frame.")
    layer = min(options.layer, stored.result.num_layers - 1)
    overlay, _, _ = panels.sampling_image(stored, record["detections"][index]["query_slot"],
                                          dataclasses.replace(options, layer=layer))
    return overlay


def track_refinement(stored: StoredResult, record: dict[str, Any], track: int | None) -> np.ndarray:
    """The track's query in this frame: its box from the first reference through every decoder layer."""
    index = _index_of(record, track)
    if index is None:
        return _absent(stored, "Click a box to follow its track." if track is None
                       else f"Track #{track} is not detected in this frame.")
    figure, _ = panels.refinement_panels(stored, record["detections"][index]["query_slot"])
    return figure


def track_scores(run: VideoRun, track: int | None) -> pd.DataFrame:
    """The track's best score in each frame it is detected in: columns time_s, score, label."""
    rows = []
    for record in run.records:
        index = _index_of(record, track)
        if index is not None:
            d = record["detections"][index]
            rows.append([record["time_s"], d["score"], d["label"]])
    return pd.DataFrame(rows, columns=["time_s", "score", "label"])


def track_markdown(run: VideoRun, position: int, track: int | None) -> str:
    """Where the track is: how many frames hold it, its class, and its query slot in this frame."""
    record = run.frame(position)
    head = (f"Frame {record['index']} of {run.info.frames} ({record['time_s']:.2f} s), "
            f"{len(record['detections'])} detections; {len(run.tracks)} tracks in the clip.")
    if track is None:
        return head + " Click a box (or a row) to follow its track."
    scores = track_scores(run, track)
    index = _index_of(record, track)
    here = (f"query slot {record['detections'][index]['query_slot']} in this frame" if index is not None
            else "not detected in this frame")
    labels = ", ".join(scores["label"].value_counts().index) if len(scores) else "?"
    return (f"{head} **Track #{track}** ({labels}): detected in {len(scores)} of {len(run.records)} frames, "
            f"{here}.")
