"""`python -m dino_demo video CLIP --out DIR`: detect objects in every frame of a clip (or every
n-th), follow them across frames, write DIR/detections.json and an annotated clip.

Writes DIR/detections.json in the format of `dino_demo.video.document` (schema
"dino-explorer/video/1": the clip's frame rate, size and frame count, and per detected frame its
index, time and detections, each with its track id), DIR/<clip name>.annotated.mp4 (boxes, labels
and track ids; MPEG-4) and with --save-internals DIR/<clip name>.<frame>.internals.npz per frame.
Each frame's detections are those `detect` finds on the same decoded frame. Progress goes to
stderr, frames per second to the log.

Under `torchrun --nproc-per-node N python -m dino_demo video ...` the frames are split across the
N processes (Gloo on CPUs, NCCL with --device cuda); the main process tracks and writes the same
files one process writes.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from . import add_detection_arguments, add_model_arguments, check_run_arguments, model_source

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dino_demo video", description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path, metavar="CLIP", help="a video file (.mp4, .mkv, ... as OpenCV reads them)")
    add_model_arguments(parser)
    add_detection_arguments(parser, per="frame")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="detect every N-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="detect at most N frames (default: all chosen by --every)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="frames per model run (default 1; larger batches help on GPUs)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (under torchrun: one GPU per process)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="float32 (default), or bfloat16 / float16 under autocast (see `detect --help`)")
    parser.add_argument("--save-internals", action="store_true",
                        help="also write <clip name>.<frame>.internals.npz per detected frame")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args, at_least_one=("max_detections", "every", "max_frames", "batch_size"))
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from ..explore.models import load
    from ..runtime.precision import support
    from ..train import distributed
    from ..video import engine
    from ..video.clip import chosen_frames, probe
    from ..video.document import video_document

    args = parse_args(argv)
    info = probe(args.clip)  # a bad clip is refused before any model loads
    indices = chosen_frames(info, args.every, args.max_frames)
    settings = engine.VideoSettings(threshold=args.threshold, max_detections=args.max_detections,
                                    max_size=args.max_size, precision=args.precision, prompt=args.prompt,
                                    every=args.every, max_frames=args.max_frames, batch_size=args.batch_size,
                                    internals=args.save_internals)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no GPU is visible")
    source = model_source(args)
    start = time.perf_counter()
    with distributed.process_group(args.device) as process:
        with distributed.main_first():  # a download happens once
            detector = load(source, args.variant, process.device)
        if process.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
            log.info("%s: %d frames at %.2f fps, %dx%d; detecting %d of them on %d process(es); precision: %s",
                     args.clip.name, info.frames, info.fps, info.width, info.height, len(indices),
                     process.world_size, support(args.device).note(args.precision))
        distributed.from_main(None)  # the output folder exists before any process writes into it
        share = [indices[i] for i in distributed.shard(len(indices))]
        timings: dict[str, float] = {}
        bar = tqdm(total=len(share), desc="video", unit="frame", disable=not process.is_main)
        frames = engine.detect_frames(detector, info, share, settings, model_id=source.name,
                                      internals_dir=args.out, timings=timings,
                                      on_frame=lambda *_: bar.update(1))
        bar.close()
        detected = time.perf_counter() - start
        frames = distributed.gather(frames)
        if not process.is_main:
            return 0
        records = engine.frame_records(frames, engine.track(frames, info, settings, timings))
        annotated = f"{args.clip.stem}.annotated.mp4"
        engine.write_annotated(info, records, args.out / annotated, timings)
        document = video_document(info, records, model_id=source.name, variant=detector.variant,
                                  settings=settings.as_json(), annotated=annotated)
        (args.out / "detections.json").write_text(json.dumps(document, indent=1))
        tracks = {d["track_id"] for r in records for d in r["detections"] if d["track_id"] is not None}
        log.info("detection: %s on %d process(es)", engine.FrameRate(len(records), detected, {}).summary(),
                 process.world_size)
        log.info("all: %s", engine.FrameRate(len(records), time.perf_counter() - start, timings).summary())
        log.info("%d detections in %d tracks; wrote detections.json and %s to %s",
                 sum(len(r["detections"]) for r in records), len(tracks), annotated, args.out)
    return 0
