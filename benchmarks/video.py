"""Frames per second of `python -m dino_demo video`, step by step: decoding, the model, tracking,
drawing and writing the annotated clip.

    python benchmarks/video.py                                            # shipped + untrained R50, 2 threads
    python benchmarks/video.py --models shipped --frames 40 --size 320 320 --threads 2

The clip is made here: a synthetic shapes scene panned a few pixels per frame (so that objects
move and tracks carry over), written as MPEG-4 (mp4v) at `--size`. Each model runs the engine of
the command (`dino_demo.video.engine`: `detect_frames`, `track`, `write_annotated`) on it after one
warm-up frame; the timings are the engine's own per step. Before and after, the baseline: `detect`'s
own call (`Detector.run`, no internals) on the same decoded frames, so that on a shared
machine the engine's model time is read against it (`model_vs_baseline`), and tracking, drawing and
writing as a share of the whole run. Models: "shipped" (dino-tiny), and any
`Source` text (default also `untrained:dino-4scale-r50`: random weights do the same work, the
encoder always selects 900 tokens; its frames are `--r50-size`, fewer of them: `--r50-frames`).

Prints one JSON line per model and a table; `--json` writes them all.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def make_clip(path: Path, frames: int, size: tuple[int, int], fps: float = 25.0) -> Path:
    """A synthetic scene panned 4 px per frame, frames [H, W] = size, written as .mp4 (mp4v)."""
    import cv2
    import numpy as np

    from dino_demo.train.synthetic import SceneSpec, generate_scene

    height, width = size
    scene = generate_scene(11, 0, SceneSpec(size=max(height, width) + 4 * frames + 8, min_objects=4, max_objects=6))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for f in range(frames):
        crop = np.ascontiguousarray(scene.image[4:4 + height, 4 * f:4 * f + width])
        writer.write(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def measure(source: str, clip: Path, frames: int, batch_size: int, out: Path) -> dict:
    from dino_demo.explore.models import load
    from dino_demo.video import engine
    from dino_demo.video.clip import probe

    from dino_demo.video.clip import read_frames

    detector = load(source)
    info = probe(clip)
    settings = engine.VideoSettings(threshold=0.3, batch_size=batch_size)
    engine.detect_frames(detector, info, [0], settings)                     # warm-up
    engine.track(engine.detect_frames(detector, info, [0], settings), info, settings)  # imports the tracker
    decoded = [frame for _, frame in read_frames(clip, range(frames))]

    def baseline() -> float:
        """Seconds per frame of `detect`'s own call on the decoded frames (no decoding, tracking, drawing)."""
        start = time.perf_counter()
        for frame in decoded:
            detector.run(frame, internals=False)
        return (time.perf_counter() - start) / frames

    before = baseline()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    detected = engine.detect_frames(detector, info, list(range(frames)), settings, timings=timings)
    detect_seconds = time.perf_counter() - start
    records = engine.frame_records(detected, engine.track(detected, info, settings, timings))
    engine.write_annotated(info, records, out / f"{clip.stem}.annotated.mp4", timings)
    total = time.perf_counter() - start
    after = baseline()
    per_frame = {step: round(1000 * seconds / frames, 2) for step, seconds in sorted(timings.items())}
    model_ms = 1000 * timings["model"] / frames
    return {"model": source, "variant": detector.variant, "frame_size": [info.height, info.width], "frames": frames,
            "batch_size": batch_size, "fps_detect": round(frames / detect_seconds, 3),
            "fps_all": round(frames / total, 3), "ms_per_frame": per_frame,
            "baseline_ms_per_frame": [round(1000 * before, 1), round(1000 * after, 1)],
            "model_vs_baseline": round(model_ms / (500 * (before + after)), 3),
            "track_draw_write_share": round((timings["track"] + timings["draw"] + timings["write"]) / total, 4),
            "detections": sum(len(r["detections"]) for r in records),
            "tracks": len({d["track_id"] for r in records for d in r["detections"] if d["track_id"] is not None})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["shipped", "untrained:dino-4scale-r50"])
    parser.add_argument("--frames", type=int, default=20, help="frames for the shipped model (default 20)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(320, 320))
    parser.add_argument("--r50-frames", type=int, default=4, help="frames for other models (default 4)")
    parser.add_argument("--r50-size", type=int, nargs=2, metavar=("H", "W"), default=(480, 640))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="dino-video-bench-") as folder:
        folder = Path(folder)
        for source in args.models:
            shipped = source == "shipped"
            frames = args.frames if shipped else args.r50_frames
            size = tuple(args.size if shipped else args.r50_size)
            clip = make_clip(folder / f"pan-{size[0]}x{size[1]}-{frames}.mp4", frames + 1, size)
            row = measure(source, clip, frames, args.batch_size, folder)
            print(json.dumps(row), flush=True)
            results.append(row)
    print(f"\n{'model':28s} {'frame':>9s} {'fps detect':>10s} {'fps all':>8s}  ms per frame", file=sys.stderr)
    for row in results:
        steps = ", ".join(f"{k} {v}" for k, v in row["ms_per_frame"].items())
        print(f"{row['model']:28s} {row['frame_size'][0]:>4d}x{row['frame_size'][1]:<4d} {row['fps_detect']:>10.2f} "
              f"{row['fps_all']:>8.2f}  {steps}; model / baseline {row['model_vs_baseline']}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
