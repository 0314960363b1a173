"""Reliability under load: many gradio_client sessions against the app, and the server's memory.

    python benchmarks/load.py --sessions 32 --rounds 3 [--model shipped] [--max-input 1333] [--json OUT]
    python benchmarks/load.py --sessions 50 --parallel 1 --rounds 1 --inspects 0 --upload-side 4096

Starts `python app.py` on a free 127.0.0.1 port (`--app-dir` serves another checkout's app.py),
then runs `--sessions` clients (visitors), `--parallel` at a time (default: all at once), each doing
`--rounds` times: one /detect of the image and `--inspects` /inspect calls on the query it returned.
The second line above is 50 visitors one after the other, each uploading a 4096 x 4096 PNG. Reports successes and errors, the p50 and
p95 latency of each call, and the server's resident memory (sampled every 0.5 s: at start, peak,
end). Only 127.0.0.1 is ever contacted; the number of sessions and the total time are bounded.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dino_demo.ui.memory import rss_mib

ROOT = Path(__file__).resolve().parent.parent
MAX_SESSIONS = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sampler(threading.Thread):
    """Samples a process's resident memory until stopped."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self._stop_event.is_set():
            self.samples.append((round(time.perf_counter() - start, 2), round(rss_mib(self.pid), 1)))
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def start_app(app_dir: Path, port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env={**os.environ, **env,
                               "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit("the app exited while starting")
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the app did not start within 300 s")


def _first_slot(payload: dict) -> int:
    """The best detection's query slot in /detect's JSON (this version's detections.json, or the
    older single-image layout)."""
    detections = payload["images"][0]["detections"] if "images" in payload else payload["detections"]
    return int(detections[0]["query_slot"]) if detections else 0


def session(url: str, image: str, args, deadline: float) -> dict:
    from gradio_client import Client, handle_file

    timings = {"detect": [], "inspect": []}
    errors = []
    client = Client(url, verbose=False)
    for _ in range(args.rounds):
        if time.time() > deadline:
            errors.append("deadline")
            break
        try:
            start = time.perf_counter()
            _, payload = client.predict(handle_file(image), args.model, "", "auto", args.max_input, 0.3, 100,
                                        api_name="/detect")
            timings["detect"].append(time.perf_counter() - start)
            slot = _first_slot(payload)
            for layer in range(args.inspects):
                start = time.perf_counter()
                client.predict(slot, 1 + layer % 3, "all", "all", "level", api_name="/inspect")
                timings["inspect"].append(time.perf_counter() - start)
        except Exception as error:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{type(error).__name__}: {str(error)[:120]}")
    return {"timings": timings, "errors": errors}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(values), "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=None, help="sessions at a time (default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inspects", type=int, default=3)
    parser.add_argument("--model", default="shipped", help='a model value of /detect, e.g. "untrained:dino-4scale-r50"')
    parser.add_argument("--max-input", type=int, default=1333)
    parser.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    parser.add_argument("--upload-side", type=int, default=None,
                        help="upload a generated PNG of this side instead (smooth, so the file is small)")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds for the whole run")
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="checkout whose app.py is served")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the app process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS:
        parser.error(f"--sessions must be in 1..{MAX_SESSIONS}")

    with tempfile.TemporaryDirectory() as tmp:
        image = args.image
        if args.upload_side:
            import numpy as np
            from PIL import Image

            side = args.upload_side
            ramp = np.linspace(0, 255, side, dtype=np.float32)
            pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.tile(ramp[:, None], side)], -1)
            image = str(Path(tmp) / f"upload-{side}.png")
            Image.fromarray(pixels.astype(np.uint8)).save(image, optimize=True)
        port = _free_port()
        env = dict(item.split("=", 1) for item in args.env)
        process = start_app(args.app_dir, port, env)
        sampler = Sampler(process.pid)
        sampler.start()
        try:
            time.sleep(1.0)
            started = time.perf_counter()
            deadline = time.time() + args.time_limit
            with ThreadPoolExecutor(args.parallel or args.sessions) as pool:
                outcomes = list(pool.map(lambda _: session(f"http://127.0.0.1:{port}", image, args, deadline),
                                         range(args.sessions)))
            elapsed = time.perf_counter() - started
            time.sleep(2.0)
        finally:
            sampler.stop()
            process.terminate()
            process.wait(timeout=60)

    errors = [e for outcome in outcomes for e in outcome["errors"]]
    detects = [t for outcome in outcomes for t in outcome["timings"]["detect"]]
    inspects = [t for outcome in outcomes for t in outcome["timings"]["inspect"]]
    rss = [value for _, value in sampler.samples]
    report = {
        "sessions": args.sessions, "parallel": args.parallel or args.sessions, "rounds": args.rounds,
        "inspects_per_round": args.inspects,
        "model": args.model, "max_input": args.max_input,
        "image": f"generated {args.upload_side}x{args.upload_side} PNG" if args.upload_side else Path(image).name,
        "elapsed_s": round(elapsed, 1), "errors": len(errors), "error_kinds": sorted(set(errors))[:10],
        "detect": _percentiles(detects), "inspect": _percentiles(inspects),
        "rss_mib": {"start": rss[1] if len(rss) > 1 else None, "peak": max(rss, default=None),
                    "end": rss[-1] if rss else None},
        "rss_samples": sampler.samples,
    }
    printable = {k: v for k, v in report.items() if k != "rss_samples"}
    print(json.dumps(printable, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
