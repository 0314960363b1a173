"""Exported transformers families against transformers' own PyTorch path: agreement and speed.

For each family (a transformers folder, or with --tiny the seeded tiny models of
tests/support/family_models.py with every weight perturbed), export with each sampling ("gather",
"grid-sample"), run the same image through transformers' PyTorch path (its own attention code,
`families.load(..., our_op=False)`) and through ONNX Runtime and OpenVINO (float32; OpenVINO also
bfloat16 with --bf16), all with the same number of threads, repeats interleaved (the machine may
be shared). Prints a markdown table and writes JSON: per family, sampling and runtime the largest
score and box differences from PyTorch (boxes in pixels), whether the labels are equal, the
detections matched by label and overlap (`agreement`), and images per second.

    python benchmarks/export_bench.py --tiny --families d-fine grounding-dino --threads 2 --repeats 5
    python benchmarks/export_bench.py --folders path/to/rtdetr_r18 --threads 2 --repeats 5
    python benchmarks/export_bench.py --folders rtdetr-r50 --reuse out --threads 2 --repeats 3 --bf16 --image 480 640
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "support")]

from dino_demo.export.families import export_family  # noqa: E402
from dino_demo.export.family_runtime import FamilyOnnxDetector  # noqa: E402
from dino_demo.families.load import load  # noqa: E402


def _torch_run(handle, image: np.ndarray, prompt: str | None):
    """transformers' PyTorch path (today's `families.inference.run`)."""
    from dino_demo.families.inference import run

    return run(handle, image, prompt=prompt, internals=False)


def _tiny(name: str, folder: Path) -> Path:
    from family_models import save_spread

    return save_spread(name, folder)


def _rate(run, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def agreement(result, reference, top: int = 100) -> dict:
    """How a runtime's detections agree with PyTorch's: in order (the same labels, largest score
    and box differences over the common length), and matched as an evaluation matches them, which
    tolerates near-equal scores changing places and a two-stage selection filling a query slot
    differently: each of PyTorch's `top` best detections, best first, takes the runtime's
    unmatched detection of the same label that overlaps it most (IoU >= 0.5). Gives the fraction
    matched and the largest score and box differences over the matched pairs."""
    count = min(len(result.scores), len(reference.scores))
    scores, boxes, labels = reference.scores.numpy(), reference.boxes.numpy(), reference.labels.numpy()
    pairs, free = [], np.ones(min(top, len(result.scores)), dtype=bool)
    for i in range(min(top, len(scores))):
        overlap = np.where(free & (result.labels[:len(free)] == labels[i]), _iou(boxes[i], result.boxes[:len(free)]), 0)
        if overlap.size and overlap.max() >= 0.5:
            j = int(overlap.argmax())
            free[j] = False
            pairs.append((i, j))
    theirs, mine = (np.array(side, dtype=np.int64) for side in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    return {
        "max_score_diff": float(np.abs(result.scores[:count] - scores[:count]).max()),
        "max_box_diff_px": float(np.abs(result.boxes[:count] - boxes[:count]).max()),
        "labels_equal": bool(np.array_equal(result.labels[:count], labels[:count])),
        "matched": len(pairs) / max(1, min(top, len(scores))),
        "matched_score_diff": float(np.abs(result.scores[mine] - scores[theirs]).max()) if pairs else float("nan"),
        "matched_box_diff_px": float(np.abs(result.boxes[mine] - boxes[theirs]).max()) if pairs else float("nan"),
    }


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box [4] with boxes [N, 4]."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    area = lambda b: np.clip(b[..., 2:] - b[..., :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def measure(folder: Path, name: str, samplings: list[str], threads: int, repeats: int, bf16: bool,
            work: Path, image_shape: tuple[int, int], reuse: Path | None = None) -> list[dict]:
    torch.set_num_threads(threads)
    handle = load(str(folder), our_op=False)
    prompt = "cat . remote control ." if handle.family.text_prompt else None
    image = np.random.default_rng(0).integers(0, 255, (*image_shape, 3), dtype=np.uint8)
    reference = _torch_run(handle, image, prompt).detections
    runners = {"pytorch (transformers)": lambda: _torch_run(handle, image, prompt)}
    rows = {}
    for sampling in samplings:
        path = work / f"{name}-{sampling}.onnx"
        if reuse is not None and (reuse / path.name).is_file():
            path = reuse / path.name  # exported from this folder before
        else:
            started = time.perf_counter()
            export_family(load(str(folder), fast=False), path, sampling=sampling, source=name)
            print(f"# exported {name} {sampling} in {time.perf_counter() - started:.0f} s", flush=True)
        variants = [("onnxruntime", "float32"), ("openvino", "float32")] + ([("openvino", "bfloat16")] if bf16 else [])
        for runtime, precision in variants:
            detector = FamilyOnnxDetector(path, runtime=runtime, precision=precision, threads=threads)
            result = detector.run(image, prompt=prompt)
            key = f"{runtime} {precision} {sampling}"
            rows[key] = {"family": name, "runtime": runtime, "precision": detector.session.precision,
                         "sampling": sampling, **agreement(result, reference)}
            runners[key] = lambda detector=detector: detector.run(image, prompt=prompt)
    for runner in runners.values():  # warm up
        runner()
    times = {key: [] for key in runners}
    for _ in range(repeats):  # interleaved
        for key, runner in runners.items():
            times[key] += _rate(runner, 1)
    baseline = 1.0 / statistics.median(times["pytorch (transformers)"])
    out = [{"family": name, "runtime": "pytorch (transformers)", "precision": "float32", "sampling": "-",
            "images_per_s": baseline, "vs_pytorch": 1.0}]
    for key, row in rows.items():
        rate = 1.0 / statistics.median(times[key])
        out.append({**row, "images_per_s": rate, "vs_pytorch": rate / baseline})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny seeded models of tests/support/family_models.py")
    parser.add_argument("--families", nargs="+", default=["deformable-detr-two-stage", "grounding-dino",
                                                          "rt-detr-v2", "d-fine", "lw-detr"])
    parser.add_argument("--folders", nargs="+", type=Path, default=[], help="transformers folders instead")
    parser.add_argument("--samplings", nargs="+", default=["gather", "grid-sample"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="also OpenVINO with the bfloat16 precision hint")
    parser.add_argument("--image", type=int, nargs=2, default=(256, 384), metavar=("H", "W"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a folder of NAME-SAMPLING.onnx files exported from the same folders, used as they are")
    args = parser.parse_args()
    for noisy in ("onnx_ir", "onnxscript", "kernels", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        models = [(folder.name, folder) for folder in args.folders]
        if args.tiny:
            models += [(name, _tiny(name, work / name)) for name in args.families]
        for name, folder in models:
            rows += measure(folder, name, args.samplings, args.threads, args.repeats, args.bf16, work,
                            tuple(args.image), args.reuse)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print("| family | runtime | precision | sampling | max score diff | max box diff (px) | labels equal | "
          "pairs matched | matched score diff | matched box diff (px) | images/s | vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        diff = (f"{row['max_score_diff']:.1e} | {row['max_box_diff_px']:.1e} | {row['labels_equal']} | "
                f"{row['matched']:.0%} | {row['matched_score_diff']:.1e} | {row['matched_box_diff_px']:.1e}"
                if "max_score_diff" in row else "- | - | - | - | - | -")
        print(f"| {row['family']} | {row['runtime']} | {row['precision']} | {row['sampling']} | {diff} | "
              f"{row['images_per_s']:.1f} | {row['vs_pytorch']:.2f}x |")


if __name__ == "__main__":
    main()
