"""`python -m dino_demo video`: clips made here (a synthetic scene panned frame by frame, so that
its objects move across the picture) in both containers (MPEG-4 .mp4, FFV1 .mkv), each frame's
detections against `detect` on the same decoded frame, track ids against the scene's own objects,
bad clips refused with one line, the Hub families (with a prompt), and torchrun."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dino_demo.cli import main as cli
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.train.synthetic import SceneSpec, generate_scene
from dino_demo.video.clip import ClipLimits, chosen_frames, probe
from dino_demo.video.tracking import Tracker
from family_models import save_tiny

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
THRESHOLD = 0.3
FOURCC = {".mp4": "mp4v", ".mkv": "FFV1"}
SIZE, STEP, FRAMES = 224, 8, 6   # frame side, pan per frame (pixels), frame count


def panned_scene(seed: int = 7):
    """A 320-pixel synthetic scene and its frames: a SIZE window moving STEP pixels right per frame
    (objects move left across the frames); the scene's boxes in each frame's pixels."""
    scene = generate_scene(seed, 0, SceneSpec(size=320, min_objects=3, max_objects=4))
    frames, boxes = [], []
    for f in range(FRAMES):
        x0, y0 = STEP * f, 48
        frames.append(np.ascontiguousarray(scene.image[y0:y0 + SIZE, x0:x0 + SIZE]))
        boxes.append(scene.boxes - np.array([x0, y0, x0, y0], dtype=np.float32))
    return frames, boxes


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix]), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of a clip as OpenCV decodes it, RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def detect_decoded(clip: Path, indices: list[int], out: Path, model_args: list[str]) -> list[list[dict]]:
    """`detect` on the clip's decoded frames `indices`, saved losslessly: each frame's detections."""
    frames = decoded(clip)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        paths.append(out / f"frame{i:03d}.png")
        Image.fromarray(frames[i]).save(paths[-1])
    assert cli(["detect", *map(str, paths), *model_args, "--threshold", str(THRESHOLD), "--out", str(out)]) == 0
    document = json.loads((out / "detections.json").read_text())
    return [image["detections"] for image in document["images"]]


def without_tracks(detections: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "track_id"} for d in detections]


@pytest.fixture(scope="module")
def scene():
    return panned_scene()


@pytest.fixture(scope="module", params=[".mp4", ".mkv"])
def video_run(request, scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    clip = write_clip(folder / f"pan{request.param}", scene[0])
    out = folder / "out"
    assert cli(["video", str(clip), "--checkpoint", MODEL, "--threshold", str(THRESHOLD), "--save-internals",
                "--out", str(out)]) == 0
    return clip, out, json.loads((out / "detections.json").read_text())


@pytest.mark.slow
def test_every_frame_holds_what_detect_finds_on_it(video_run, tmp_path):
    clip, out, document = video_run
    assert document["schema"] == "dino-explorer/video/1"
    assert document["video"] == {"fps": 10.0, "frames": FRAMES, "width": SIZE, "height": SIZE, "source": str(clip)}
    assert [f["index"] for f in document["frames"]] == list(range(FRAMES))
    assert [f["time_s"] for f in document["frames"]] == pytest.approx([i / 10 for i in range(FRAMES)])
    expected = detect_decoded(clip, list(range(FRAMES)), tmp_path, ["--checkpoint", MODEL])
    assert sum(map(len, expected)) >= FRAMES  # the scene's shapes are found: the comparison means something
    for frame, wanted in zip(document["frames"], expected):
        assert without_tracks(frame["detections"]) == wanted
        assert all(set(d) >= {"label", "score", "box_xyxy", "track_id"} for d in frame["detections"])


@pytest.mark.slow
def test_the_annotated_clip_and_the_internals_are_written(video_run):
    clip, out, document = video_run
    annotated = out / document["annotated"]
    assert annotated.name == f"{clip.stem}.annotated.mp4"
    drawn = decoded(annotated)
    assert len(drawn) == FRAMES and drawn[0].shape == (SIZE, SIZE, 3)
    assert np.abs(drawn[0].astype(int) - decoded(clip)[0].astype(int)).max() > 100  # boxes drawn on it
    for frame in document["frames"]:
        with np.load(out / frame["internals"]) as arrays:
            assert len(arrays["detection_scores"]) > 0


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def track_figures(document: dict, boxes: list[np.ndarray]) -> dict[int, list[int | None]]:
    """Per object of the scene inside every frame, the track id of the detection best matching it
    (IoU >= 0.5) in each frame."""
    tracks: dict[int, list[int | None]] = {}
    for frame, truth in zip(document["frames"], boxes):
        for k, box in enumerate(truth):
            if box[0] < 0 or box[2] > SIZE or box[1] < 0 or box[3] > SIZE:
                continue  # leaving or outside the window
            matches = [(_iou(d["box_xyxy"], box), d["track_id"]) for d in frame["detections"]]
            best = max(matches, default=(0.0, None))
            tracks.setdefault(k, []).append(best[1] if best[0] >= 0.5 else None)
    return tracks


@pytest.mark.slow
def test_track_ids_stay_with_the_moving_objects(video_run, scene):
    _, _, document = video_run
    tracks = track_figures(document, scene[1])
    followed = {k: ids for k, ids in tracks.items() if len(ids) == FRAMES and None not in ids}
    assert len(followed) >= 2, tracks  # at least two objects found in every frame
    for ids in followed.values():
        assert len(set(ids)) == 1, tracks  # one track per object, all along
    assert len({ids[0] for ids in followed.values()}) == len(followed)  # a track per object


def test_a_query_listed_twice_is_one_track_and_tracks_follow_boxes():
    tracker = Tracker(threshold=0.3, frame_rate=10)
    ids = []
    for f in range(5):
        boxes = np.array([[10 + 6 * f, 10, 60 + 6 * f, 60], [100, 120 - 5 * f, 150, 170 - 5 * f],
                          [10 + 6 * f, 10, 60 + 6 * f, 60]], dtype=float)
        ids.append(tracker.update(boxes, np.array([0.9, 0.6, 0.4]), np.array([3, 7, 3])))
    assert ids[0][0] is not None and ids[0][1] is not None and ids[0][0] != ids[0][1]
    assert all(frame == ids[0] for frame in ids)
    assert ids[0][2] == ids[0][0]  # the same query under a second class
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)) == []


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_bad_clips_are_refused_with_one_line(tmp_path, capsys):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a clip")
    empty = tmp_path / "empty.mkv"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"FFV1"), 10, (64, 64))
    writer.release()  # a container without a single frame
    huge = write_clip(tmp_path / "huge.mkv", [np.zeros((16, 4200, 3), np.uint8)])
    expected = {not_video: "not a video", empty: "without frames", huge: "larger than this allows",
                tmp_path / "missing.mp4": "no such file"}
    for clip, words in expected.items():
        assert cli(["video", str(clip), "--out", str(tmp_path / "out")]) == 1
        line = _one_error_line(capsys)
        assert words in line and str(tmp_path) not in line, line
    assert not (tmp_path / "out").exists()


def test_long_clips_and_too_many_frames_are_refused(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "long.mkv", [np.zeros((32, 32, 3), np.uint8)] * 12, fps=2.0)  # 6 s
    assert probe(clip).frames == 12
    with pytest.raises(ValueError, match=r"^long.mkv: the clip is too long \(12 frames, 6.0 s"):
        probe(clip, ClipLimits(max_seconds=5.0))
    monkeypatch.setenv("DINO_DEMO_VIDEO_MAX_SECONDS", "4")
    with pytest.raises(ValueError, match="too long"):
        probe(clip, ClipLimits.public())
    monkeypatch.setenv("DINO_DEMO_VIDEO_MAX_SECONDS", "10")
    monkeypatch.setenv("DINO_DEMO_VIDEO_MAX_FRAMES", "5")
    limits = ClipLimits.public()
    info = probe(clip, limits)
    assert chosen_frames(info, every=3, limits=limits) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="12 frames to detect, at most 5 here"):
        chosen_frames(info, limits=limits)


@pytest.fixture(scope="module")
def family_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("family")
    frames = [np.ascontiguousarray(f[:160, :192]) for f in panned_scene(3)[0]]
    return write_clip(folder / "pan.mkv", frames)


@pytest.mark.parametrize("family, prompt", [("deformable-detr-two-stage", None), ("grounding-dino", "cat . dog .")])
def test_hub_families_match_detect_on_every_chosen_frame(family, prompt, family_clip, tmp_path):
    model = save_tiny(family, tmp_path / family)
    model_args = ["--checkpoint", str(model)] + (["--prompt", prompt] if prompt else [])
    out = tmp_path / "video"
    assert cli(["video", str(family_clip), *model_args, "--threshold", str(THRESHOLD), "--every", "2",
                "--max-frames", "2", "--out", str(out)]) == 0
    document = json.loads((out / "detections.json").read_text())
    assert [f["index"] for f in document["frames"]] == [0, 2]
    assert document["settings"]["prompt"] == prompt
    expected = detect_decoded(family_clip, [0, 2], tmp_path / "detect", model_args)
    assert all(expected)  # random weights still score some queries above the threshold
    assert [without_tracks(f["detections"]) for f in document["frames"]] == expected


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_same_file(scene, tmp_path):
    clip = write_clip(tmp_path / "pan.mp4", scene[0])
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["video", str(clip), "--checkpoint", MODEL, "--threshold", str(THRESHOLD), "--max-size", "160"]
    assert cli([*args, "--out", str(one)]) == 0
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dino_demo",
         *args, "--out", str(two)], env=env, capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert "on 2 process(es)" in launch.stderr
    assert json.loads((two / "detections.json").read_text()) == json.loads((one / "detections.json").read_text())
    assert len(decoded(two / "pan.annotated.mp4")) == FRAMES


def _page_event(max_input: int = 256):
    from dino_demo.ui import choices
    from dino_demo.ui.events import PageEvent
    from dino_demo.ui.inputs import PageControls

    detect = {"model_choice": choices.SHIPPED, "checkpoint": "", "variant": choices.AUTO_VARIANT,
              "max_input": max_input, "precision": "float32", "prompt": ""}
    return PageEvent(None, PageControls.parse(threshold=THRESHOLD), None, None, detect)


@pytest.fixture(scope="module")
def services():
    from dino_demo.ui.services import Services
    from dino_demo.ui.settings import AppSettings

    return Services.make(AppSettings(device="cpu", model_concurrency=1))


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="the Video tab runs the shipped model")
def test_the_video_tab_holds_what_the_command_writes_and_follows_a_clicked_track(services, scene, tmp_path):
    from dino_demo.ui import video_tab

    clip = write_clip(tmp_path / "pan.mkv", scene[0][:3])
    request = video_tab.VideoRequest.parse({"path": str(clip), "orig_name": "my pan.mkv"}, 1, 0)
    views = video_tab.run_clip(services, _page_event(), request, None, str(tmp_path / "cache"))
    run = views["video_state"]
    assert cli(["video", str(clip), "--threshold", str(THRESHOLD), "--max-size", "256", "--out",
                str(tmp_path / "cli")]) == 0
    written = json.loads((tmp_path / "cli" / "detections.json").read_text())
    assert list(run.records) == written["frames"]  # the page's run is the command's
    assert json.loads(Path(run.document_path).read_text())["frames"] == written["frames"]
    assert Path(run.annotated_path).name == "my pan.annotated.mp4" and len(decoded(Path(run.annotated_path))) == 3

    # A click inside the last tracked detection's box of the last frame follows its track.
    last = [d for d in run.records[-1]["detections"] if d["track_id"] is not None]
    assert len(last) >= 2
    stored = services.results.store.get(run.keys[-1])
    x0, y0, x1, y1 = last[-1]["box_xyxy"]
    frame = video_tab.FrameRequest.parse({"video_frame": 2, "video_track": None, "video_layer": 1,
                                          "video_head": "1", "video_level": "all"})
    picked = video_tab.pick(services, run, frame, ((x0 + x1) / 2 * stored.scale, (y0 + y1) / 2 * stored.scale),
                            from_table=False)
    track = last[-1]["track_id"]
    assert picked["video_track"] == track and f"**Track #{track}**" in picked["video_info"]
    scores = picked["video_scores"]
    assert list(scores["score"]) == [next(d["score"] for d in r["detections"] if d["track_id"] == track)
                                     for r in run.records if any(d["track_id"] == track for d in r["detections"])]
    assert picked["video_sampling"].shape[1] == stored.canvas.shape[1]
    assert video_tab.pick(services, run, frame, 0, from_table=True)["video_track"] == run.records[-1]["detections"][0][
        "track_id"]
    with pytest.raises(ValueError, match="No tracked box there"):
        video_tab.pick(services, run, frame, 99, from_table=True)


def test_a_public_page_refuses_long_clips_with_one_line(services, tmp_path, monkeypatch):
    from dino_demo.ui import video_tab

    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    monkeypatch.setenv("DINO_DEMO_VIDEO_MAX_SECONDS", "1")
    clip = write_clip(tmp_path / "f81d4fae.mkv", [np.zeros((32, 32, 3), np.uint8)] * 12, fps=4.0)
    request = video_tab.VideoRequest.parse({"path": str(clip), "orig_name": "holiday.mkv"}, 1, 0)
    with pytest.raises(ValueError, match=r"^holiday.mkv: the clip is too long \(12 frames, 3.0 s") as refused:
        video_tab.run_clip(services, _page_event(), request, None, str(tmp_path / "cache"))
    assert "\n" not in str(refused.value) and str(tmp_path) not in str(refused.value)


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="the Video tab runs the shipped model")
def test_a_frame_opened_in_the_views_is_the_page_s_result_with_the_frame_s_detections(services, scene, tmp_path):
    from dino_demo.ui import query_tab, video_tab
    from dino_demo.ui.events import PageEvent
    from dino_demo.ui.inputs import PageControls

    clip = write_clip(tmp_path / "f81d4fae.mkv", scene[0][:3])
    request = video_tab.VideoRequest.parse({"path": str(clip), "orig_name": "my pan.mkv"}, 1, 0)
    run = video_tab.run_clip(services, _page_event(), request, None, str(tmp_path / "cache"))["video_state"]
    record = run.records[2]
    followed = [d for d in record["detections"] if d["track_id"] is not None][-1]
    assert followed["query_slot"] != record["detections"][0]["query_slot"]  # not the query selected by default
    frame = video_tab.FrameRequest.parse({"video_frame": 2, "video_track": followed["track_id"], "video_layer": 1,
                                          "video_head": "all", "video_level": "all"})
    # The page's own threshold differs: the frame opens at the clip run's.
    page = replace(_page_event(), controls=PageControls.parse(threshold=0.95, max_detections=3))
    views = video_tab.open_frame(services, page, run, frame)

    session = views["session"]
    stored = services.results.stored(session)
    assert stored.file_name == "my pan.frame000002.png" and views["image_in"].endswith(stored.file_name)
    np.testing.assert_array_equal(np.asarray(Image.open(views["image_in"])), decoded(clip)[2])
    assert views["threshold"] == THRESHOLD and views["tabs"].selected == "detections"
    # The Detections tab draws the frame's detections (those of the video document, without track ids)...
    assert views["det_json"]["images"][0]["detections"] == without_tracks(record["detections"])
    assert json.loads(Path(views["download_json"]).read_text())["images"][0]["detections"] == without_tracks(
        record["detections"])
    assert views["det_image"].shape[:2] == stored.canvas.shape[:2]
    # ... the Query tab's selected query is the followed track's in this frame ...
    slot = followed["query_slot"]
    assert views["slot"].value == slot and views["query"].value == slot
    assert f"slot {slot}" in views["query_info"]
    # ... and later events of the other tabs re-draw from it, the Encoder tab's input kept.
    event = PageEvent(session, PageControls.parse(threshold=THRESHOLD, slot=slot, layer=1))
    assert services.results.redraw(query_tab.inspect, event)["points_json"]["query_slot"] == slot
    assert stored.result.internals.encoder_input is not None

    with pytest.raises(ValueError, match="Upload a clip and press Run first"):
        video_tab.open_frame(services, page, None, frame)
    clip.unlink()
    with pytest.raises(ValueError, match=r"^my pan.mkv: the clip is no longer here") as gone:
        video_tab.open_frame(services, page, run, frame)
    assert str(tmp_path) not in str(gone.value)

