"""The Video tab: a clip through the page's model frame by frame (`dino_demo.video`), objects
followed across frames (track ids), and for a track picked with a click its query's sampling
points and box refinement in each frame, and its score over time. "Open this frame in the views"
makes the current frame the page's image and current result (Detect's views, the followed track's
query selected): a frame's result is kept without the encoder's input (`video.views.light`), so
the frame runs again, alone, through Detect's path with the clip run's model and settings.

The frames' results live in the app's result store (its memory budget; each frame kept without
what the tab never draws, `video.views.light`), the tab's state keeps their keys (`VideoRun`). On a
public server clips are bounded (`video.clip.ClipLimits.public`: length, frames detected, frame
size); on your own machine at most `PRIVATE_MAX_FRAMES` frames are detected per run.

`build(ui)` makes the components, `wire(page)` connects them through the page's
events (`events.PageEvents`); the handlers are plain functions of the tab's values.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
from PIL import Image

from ..explore import cost
from ..explore.options import POINT_COLORS, DetectionOptions, SamplingOptions
from ..explore.stored import StoredResult
from ..sources.download import Policy
from ..video import engine
from ..video.clip import ClipLimits, chosen_frames, probe, read_frame
from ..video.document import video_document
from ..video.views import (VideoRun, frame_image, frame_table, light, track_at, track_markdown, track_refinement,
                           track_row, track_sampling, track_scores)
from . import choices, detect, families_ui, gpu, inputs
from .results import no_progress

Views = dict[str, object]
PRIVATE_MAX_FRAMES = 120
CLIP_TYPES = [".mp4", ".mkv", ".avi", ".mov", ".webm"]


def limits() -> ClipLimits:
    """The clip limits of this server: a public one's (`ClipLimits.public`), or the command line's
    with at most PRIVATE_MAX_FRAMES frames detected."""
    return ClipLimits.public() if Policy.from_env().public else ClipLimits(max_processed=PRIVATE_MAX_FRAMES)


@dataclass(frozen=True)
class VideoRequest:
    """The tab's run: the clip file (path, name as uploaded), every n-th frame, at most this many."""

    path: str
    file_name: str
    every: int
    max_frames: int | None

    @classmethod
    def parse(cls, clip, every, max_frames) -> "VideoRequest":
        path, name = inputs.uploaded_file(clip)
        if not path:
            raise ValueError("Upload a clip first (.mp4, .mkv, ...).")
        every = inputs.number(every if every is not None else 1, "Every n-th frame", 1, 1000, integer=True)
        most = None if max_frames in (None, "", 0) else inputs.number(max_frames, "Max frames", 1, 100_000,
                                                                       integer=True)
        return cls(path, name, every, most)


@dataclass(frozen=True)
class FrameRequest:
    """What the tab draws: detected frame `position`, the followed `track` (None: none), and the
    sampling view's decoder layer (0-based), head and level (0-based, None for all)."""

    position: int
    track: int | None
    options: SamplingOptions

    @classmethod
    def parse(cls, values) -> "FrameRequest":
        position = inputs.number(values.get("video_frame") or 0, "Frame", 0, 1_000_000, integer=True)
        layer = inputs.number(values.get("video_layer") or 1, "Decoder layer", 1, 12, integer=True) - 1
        head, level = (None if values.get(n) in (None, inputs.ALL) else
                       inputs.number(values.get(n), n.split("_")[1].title(), 1, 64, integer=True) - 1
                       for n in ("video_head", "video_level"))
        return cls(position, values.get("video_track"), SamplingOptions(layer, head, level, POINT_COLORS[0]))


def run_clip(services, event, request: VideoRequest, previous: VideoRun | None, cache_dir: str,
             progress=None) -> Views:
    """Detect the clip's frames with the page's model and controls, track them, draw frame 0."""
    clip_limits = limits()
    try:
        info = probe(request.path, clip_limits)
    except ValueError as err:   # the server's copy has a random name: say the uploaded one
        raise ValueError(str(err).replace(Path(request.path).name, request.file_name, 1)) from None
    info = replace(info, source=request.file_name)
    indices = chosen_frames(info, request.every, request.max_frames, clip_limits)
    values = event.detect_values
    model = choices.resolve(values.get("model_choice"), values.get("checkpoint"), values.get("variant"))
    detection = event.controls.detection
    max_input = inputs.max_input_side(values.get("max_input"))
    precision = inputs.one_of(values.get("precision") or "float32", "Precision", engine.PRECISIONS)
    prompt = families_ui.parse_prompt(values.get("prompt")) or None
    detector = services.models.load(model, progress)
    cfg = detector.config
    settings = engine.VideoSettings(
        threshold=detection.threshold, max_detections=detection.max_detections,
        max_size=cost.bounded_max_input(cfg, max_input, Policy.from_env().public), precision=precision,
        prompt=prompt, every=request.every, max_frames=request.max_frames, internals=True)
    if previous is not None:
        for key in previous.keys:
            services.results.store.discard(key)

    def detect(local):
        """The frames and their stored results (returned, not stored here: on ZeroGPU this runs in
        another process)."""
        kept: dict[int, StoredResult] = {}

        def keep(index, frame, result, view) -> None:
            kept[index] = light(StoredResult.of(result, request.file_name, settings.max_size, model))
            if progress is not None:
                progress((len(kept), len(indices)), desc="Detecting frames", unit="frames")

        return engine.detect_frames(detector, local, indices, settings, model_id=model.model_id, on_frame=keep), kept

    local = replace(info, source=request.path)
    frames, kept = gpu.gpu_function(detect, gpu.BASE_SECONDS + 2 * len(indices))(local)
    if not frames:
        raise ValueError(f"{request.file_name}: no frame could be decoded.")
    keys = {index: services.results.store.put(stored) for index, stored in kept.items()}
    records = engine.frame_records(frames, engine.track(frames, info, settings))
    folder = Path(cache_dir) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    annotated = folder / f"{Path(request.file_name).stem}.annotated.mp4"
    engine.write_annotated(local, records, annotated)
    document = video_document(info, records, model_id=model.model_id, variant=cfg.name,
                              settings=settings.as_json(), annotated=annotated.name)
    (folder / "detections.json").write_text(json.dumps(document, indent=1))
    run = VideoRun(info, request.file_name, model.model_id, tuple(records), tuple(keys[r["index"]] for r in records),
                   str(folder / "detections.json"), str(annotated), clip_path=request.path, model=model,
                   settings=settings)
    first = run.records[0]["detections"]
    track = next((d["track_id"] for d in first if d["track_id"] is not None), None)
    result = services.results.store.get(run.keys[0]).result
    layers, (heads, levels, _) = result.num_layers, result.attention_shape
    return {"video_state": run, "video_download": run.document_path, "video_annotated": run.annotated_path,
            "video_frame": gr.Slider(minimum=0, maximum=len(records) - 1, value=0, step=1),
            "video_layer": gr.Slider(minimum=1, maximum=layers, value=layers, step=1),
            "video_head": gr.Radio([inputs.ALL, *map(str, range(1, heads + 1))], value=inputs.ALL),
            "video_level": gr.Radio([inputs.ALL, *map(str, range(1, levels + 1))], value=inputs.ALL),
            **draw(services, run, FrameRequest(0, track, SamplingOptions(layers - 1, None, None, POINT_COLORS[0])))}


def draw(services, run: VideoRun | None, request: FrameRequest) -> Views:
    """Every view of the tab for one frame and track."""
    if run is None:
        raise ValueError("Upload a clip and press Run first.")
    record = run.frame(request.position)
    stored = services.results.store.get(run.keys[request.position])
    return {"video_track": request.track, "video_image": frame_image(stored, record, request.track),
            "video_table": frame_table(record), "video_info": track_markdown(run, request.position, request.track),
            "video_sampling": track_sampling(stored, record, request.track, request.options),
            "video_refinement": track_refinement(stored, record, request.track),
            "video_scores": track_scores(run, request.track)}


def pick(services, run: VideoRun | None, request: FrameRequest, point, from_table: bool) -> Views:
    """A click on the frame (or a row of its table): follow the track of the box under it."""
    if run is None:
        raise ValueError("Upload a clip and press Run first.")
    record = run.frame(request.position)
    if from_table:
        row = point[0] if isinstance(point, (list, tuple)) else point
        track = track_row(record, int(row))
    else:
        x, y = point
        track = track_at(services.results.store.get(run.keys[request.position]), record, float(x), float(y))
    if track is None:
        raise ValueError("No tracked box there: click inside a box with a track id (#…).")
    return draw(services, run, replace(request, track=track))


def open_frame(services, event, run: VideoRun | None, request: FrameRequest, progress=no_progress) -> Views:
    """The frame as the page's image and current result: it runs again, alone, through Detect's
    path (`Results.compute`) with the clip run's model, input cap, precision and prompt, and every
    view of the page is drawn from it at the run's threshold and max detections, with the followed
    track's query selected (the first detection's when no track is followed or it is not here)."""
    if run is None:
        raise ValueError("Upload a clip and press Run first.")
    if run.model is None:
        raise ValueError("This clip's run does not say which model made it: press Run again.")
    record = run.frame(request.position)
    try:
        frame = read_frame(run.clip_path, record["index"])
    except ValueError as err:   # the server's copy has a random name: say the uploaded one
        raise ValueError(str(err).replace(Path(run.clip_path).name, run.file_name, 1)) from None
    session = services.sessions.session(event.session, event.request)
    image = session.downloads() / f"{Path(run.file_name).stem}.frame{record['index']:06d}.png"
    Image.fromarray(frame).save(image)   # lossless: Detect reads back the decoded frame
    settings = run.settings
    stored = services.results.compute(
        inputs.DetectRequest(str(image), image.name, run.model, settings.max_size, settings.precision,
                             settings.prompt or ""), session, progress)
    detection = DetectionOptions(settings.threshold, settings.max_detections or inputs.MAX_DETECTIONS)
    controls = replace(event.controls.for_new_result(), detection=detection)
    return {**detect.result_views(stored, session, controls, run.track_slot(request.position, request.track)),
            "image_in": str(image), "threshold": detection.threshold, "max_detections": detection.max_detections,
            "tabs": gr.Tabs(selected="detections")}


# -- events ----------------------------------------------------------------------------------------

def build(ui: dict) -> None:
    with gr.Tab("Video", id="video"):
        # States inside the Tab: one directly inside gr.Tabs takes a tab's place in its bar.
        ui["video_state"] = gr.State(None)
        ui["video_track"] = gr.State(None)
        gr.Markdown("A clip through the page's model (and its threshold, input size, precision and prompt) frame "
                    "by frame, objects followed across frames (ByteTrack). Click a box to follow its track: its "
                    "query's sampling points and box refinement in each frame, and its score over time. "
                    "\"Open this frame in the views\" shows the frame in the other tabs.",
                    elem_classes=["caption"])
        with gr.Row(equal_height=False):
            ui["video_clip"] = gr.File(label="Clip (.mp4, .mkv, …)", file_types=CLIP_TYPES, elem_id="video-clip",
                                       height=110)
            with gr.Column(min_width=220):
                with gr.Row():
                    ui["video_every"] = gr.Number(1, label="Every n-th frame", precision=0, minimum=1,
                                                  elem_id="video-every")
                    ui["video_max_frames"] = gr.Number(0, label="Max frames (0: all)", precision=0,
                                                       elem_id="video-max-frames")
                ui["video_run"] = gr.Button("Run on the clip", variant="primary", elem_id="video-run")
        ui["video_info"] = gr.Markdown("", elem_id="video-info")
        with gr.Row(equal_height=True):
            ui["video_frame"] = gr.Slider(0, 1, value=0, step=1, label="Detected frame", elem_id="video-frame",
                                          elem_classes=["commit-on-enter"], scale=4)
            ui["video_open"] = gr.Button("Open this frame in the views", size="sm", elem_id="video-open", scale=1,
                                         min_width=200)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                ui["video_image"] = gr.Image(interactive=False, show_label=False, elem_id="video-image",
                                             elem_classes=["view-image"], format="jpeg")
            with gr.Column(scale=2, min_width=260):
                ui["video_table"] = gr.Dataframe(interactive=False, max_height=260, elem_id="video-table",
                                                 label="Detections of this frame (click a row to follow its track)")
                ui["video_scores"] = gr.LinePlot(x="time_s", y="score", x_title="time (s)", y_title="score",
                                                 title="The track's score over time", y_lim=[0, 1],
                                                 elem_id="video-scores", height=200)
                with gr.Row():
                    ui["video_download"] = gr.DownloadButton("detections.json", size="sm", elem_id="video-download")
                    ui["video_annotated"] = gr.DownloadButton("annotated clip (.mp4)", size="sm",
                                                              elem_id="video-annotated")
        with gr.Row():
            ui["video_layer"] = gr.Slider(1, 6, value=6, step=1, label="Decoder layer", elem_id="video-layer")
            ui["video_head"] = gr.Radio([inputs.ALL, *map(str, range(1, 9))], value=inputs.ALL, label="Head",
                                        elem_id="video-head")
            ui["video_level"] = gr.Radio([inputs.ALL, *map(str, range(1, 5))], value=inputs.ALL, label="Level",
                                         elem_id="video-level")
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("The track's query in this frame: reference box and sampling points (colour: level).",
                            elem_classes=["caption"])
                ui["video_sampling"] = gr.Image(interactive=False, show_label=False, elem_id="video-sampling",
                                                elem_classes=["view-image"], format="jpeg")
            with gr.Column():
                gr.Markdown("Its box from the first reference through every decoder layer.",
                            elem_classes=["caption"])
                ui["video_refinement"] = gr.Image(interactive=False, show_label=False, elem_id="video-refinement",
                                                  elem_classes=["view-image"], format="jpeg")


def wire(page) -> None:
    """Connect the tab (`page`: the page's `events.PageEvents`; a clip's run shares the Detect
    events' concurrency, `page.model_run`). The model and its controls are the page's own."""
    ui, services = page.ui, page.services
    own = {ui.video_clip, ui.video_every, ui.video_max_frames, ui.video_state, ui.video_track, ui.video_frame,
           ui.video_layer, ui.video_head, ui.video_level}
    on = {"inputs": page.inputs | own, "outputs": page.tab_outputs("video_"), "api_visibility": "private",
          "preprocess": False}

    def run(event, progress=None):
        values = event.tab_values
        request = VideoRequest.parse(values["video_clip"], values["video_every"], values["video_max_frames"])
        return run_clip(services, event, request, values["video_state"], ui.video_download.GRADIO_CACHE, progress)

    def change(event, progress=None):
        return draw(services, event.tab_values["video_state"], FrameRequest.parse(event.tab_values))

    def click(event, progress=None):
        return pick(services, event.tab_values["video_state"], FrameRequest.parse(event.tab_values), event.point,
                    from_table=False)

    def row(event, progress=None):
        return pick(services, event.tab_values["video_state"], FrameRequest.parse(event.tab_values), event.point,
                    from_table=True)

    def open_in_views(event, progress=no_progress):
        values = event.tab_values
        return open_frame(services, event, values["video_state"], FrameRequest.parse(values), progress)

    gr.on([ui.video_run.click], page.handler(run, redraw=False), show_progress="full",
          show_progress_on=[ui.video_image, ui.video_info], **on, **page.model_run)
    gr.on([ui.video_frame.release, ui.video_layer.release, ui.video_head.input, ui.video_level.input],
          page.handler(change, redraw=False), show_progress="hidden", **on)
    gr.on([ui.video_image.select], page.handler(click, selected=True, redraw=False), show_progress="hidden", **on)
    gr.on([ui.video_table.select], page.handler(row, selected=True, redraw=False), show_progress="hidden", **on)
    # The frame becomes the page's result: this event may change every view (`page.outputs`).
    page.when([ui.video_open.click], open_in_views, redraw=False, inputs=page.inputs | own, show_progress="full",
              show_progress_on=[ui.video_image], **page.model_run)
