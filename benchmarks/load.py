"""Reliability under load: many gradio_client sessions against the app, and the server's memory
(and the machine's 1-minute load average while it ran).

    python benchmarks/load.py --sessions 32 --rounds 3 [--model shipped] [--max-input 1333] [--json OUT]
    python benchmarks/load.py --sessions 50 --parallel 1 --rounds 1 --inspects 0 --upload-side 4096
    python benchmarks/load.py --scenario switch --sessions 2 --rounds 12 --max-input 512
    python benchmarks/load.py --scenario stalled --stalled 4
    python benchmarks/load.py --scenario disk --sessions 20 --uploads 1 --upload-side 2048 --settle 90 \
        --env DINO_DEMO_FILES_MAX_AGE_H=0.01

Starts `python app.py` on a free 127.0.0.1 port (`--app-dir` serves another checkout's app.py),
then runs `--sessions` clients (visitors), `--parallel` at a time (default: all at once), each doing
`--rounds` times: one /detect of the image and `--inspects` /inspect calls on the query it returned.
The second line above is 50 visitors one after the other, each uploading a 4096 x 4096 PNG. Reports successes and errors, the p50 and
p95 latency of each call, and the server's resident memory (sampled every 0.5 s: at start, peak,
end), and how long refusals (errors other than time-outs) took to come. Only 127.0.0.1 is ever
contacted; the number of sessions and the total time are bounded.

`--scenario connect --sessions 80` opens the page with 80 visitors at once (plain HTTP: the page
config and the API description). `--scenario` also runs one of issue 25's (see each `scenario_*` function): `switch` (memory across
models, and how long another visitor waits), `stalled` (a Hub that accepts connections and never
answers: HF_ENDPOINT points the app at a local socket), `disk` (sessions that never heartbeat and
uploads never detected: what stays in the app's temporary folders).
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dino_demo.ui.memory import rss_mib

ROOT = Path(__file__).resolve().parent.parent
MAX_SESSIONS = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sampler(threading.Thread):
    """Samples a process's resident memory until stopped."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.loads = pid, every, [], []
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self._stop_event.is_set():
            self.samples.append((round(time.perf_counter() - start, 2), round(rss_mib(self.pid), 1)))
            self.loads.append(os.getloadavg()[0])
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def start_app(app_dir: Path, port: int, env: dict) -> subprocess.Popen:
    # The served checkout's own package, whatever PYTHONPATH this script runs with.
    process = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env={**os.environ, **env,
                               "PYTHONPATH": str(app_dir.resolve()),
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


def session(url: str, image: str, args, deadline: float, client=None) -> dict:
    """One visitor's rounds; `client` connected already, else connected here (timed as "connect")."""
    from gradio_client import Client, handle_file

    timings = {"connect": [], "detect": [], "inspect": [], "refused": []}
    errors = []
    start = time.perf_counter()
    try:
        client = client or Client(url, verbose=False)  # the page config and the API description
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported
        return {"timings": timings, "errors": [f"connect {type(error).__name__}: {str(error)[:120]}"]}
    timings["connect"].append(time.perf_counter() - start)
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
            if "Timeout" not in type(error).__name__:  # an answer (a refusal), timed
                timings["refused"].append(time.perf_counter() - start)
    return {"timings": timings, "errors": errors}


# -- scenarios of issue 25: model switching, a stalled download host, disk ----------------------------
def _detect_once(client, image: str, model: str, max_input: int) -> tuple[float, str]:
    """(seconds, "" or the error) of one /detect."""
    from gradio_client import handle_file

    start = time.perf_counter()
    try:
        client.predict(handle_file(image), model, "", "auto", max_input, 0.3, 100, api_name="/detect")
        return time.perf_counter() - start, ""
    except Exception as error:  # noqa: BLE001 - reported
        return time.perf_counter() - start, f"{type(error).__name__}: {str(error)[:160]}"


class Bystander(threading.Thread):
    """Another visitor: /detect with `model` on a small image, again and again, until stopped;
    how long each waited."""

    def __init__(self, url: str, image: str, model: str, max_input: int):
        super().__init__(daemon=True)
        from gradio_client import Client

        self.client, self.image, self.model, self.max_input = Client(url, verbose=False), image, model, max_input
        self.waits: list[float] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            seconds, error = _detect_once(self.client, self.image, self.model, self.max_input)
            self.waits.append(round(seconds, 2))
            if error:
                self.errors.append(error)
            self._stop_event.wait(0.5)

    def stop(self) -> dict:
        self._stop_event.set()
        self.join(timeout=900)
        return {"detects": len(self.waits), "max_wait_s": max(self.waits, default=None),
                "p50_s": round(statistics.median(self.waits), 2) if self.waits else None, "errors": self.errors[:5]}


def _small_image(folder: Path) -> str:
    from PIL import Image

    path = folder / "small.png"
    Image.open(ROOT / "examples" / "chelsea.png").convert("RGB").crop((0, 0, 200, 150)).save(path)
    return str(path)


def scenario_switch(args, url: str, sampler: "Sampler", tmp: Path) -> dict:
    """`--sessions` visitors each doing `--rounds` Detects, cycling through `--models`; a bystander
    detects with the shipped model meanwhile. RSS after switching: 5 s after the last Detect."""
    from gradio_client import Client

    chosen = args.models.split(",")
    bystander = Bystander(url, _small_image(tmp), "shipped", 256)
    bystander.start()

    def visitor(index: int) -> list:
        client = Client(url, verbose=False)
        return [_detect_once(client, args.image, chosen[(index + r) % len(chosen)], args.max_input)
                for r in range(args.rounds)]

    with ThreadPoolExecutor(args.sessions) as pool:
        runs = [run for runs in pool.map(visitor, range(args.sessions)) for run in runs]
    waited = bystander.stop()
    time.sleep(5.0)
    after = rss_mib(sampler.pid)
    return {"models": chosen, "detects": len(runs), "errors": sorted({e for _, e in runs if e})[:5],
            "detect_p50_s": round(statistics.median(t for t, _ in runs), 2), "bystander": waited,
            "rss_after_switching_mib": round(after, 1)}


class SilentHost(threading.Thread):
    """A socket on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self):
        super().__init__(daemon=True)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.connections.append(self.listener.accept()[0])
            except OSError:
                pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        for connection in self.connections:
            connection.close()
        self.listener.close()


def _timed_wave(clients: list, image: str, model: str, limit_s: float) -> list:
    """/detect of `model` by every client at once, in daemon threads: (seconds, answer) of each,
    or (limit_s, "still waiting") for those not answered within `limit_s`."""
    answers: list = [None] * len(clients)

    def ask(index: int) -> None:
        answers[index] = _detect_once(clients[index], image, model, 256)

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(len(clients))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, limit_s - (time.perf_counter() - start)))
    return [answer or (limit_s, "still waiting") for answer in answers]


def scenario_stalled(args, url: str, sampler: "Sampler", tmp: Path) -> dict:
    """`--stalled` visitors ask at once for a zoo model whose Hub (HF_ENDPOINT, set for the app by
    `main`) accepts connections and never answers; 2 s later a bystander detects with the shipped
    model until they are answered (at most `--time-limit` s); then as many ask for the same file
    again (at most 120 s)."""
    from gradio_client import Client

    image = _small_image(tmp)
    clients = [Client(url, verbose=False) for _ in range(2 * args.stalled + 1)]
    _detect_once(clients[-1], image, "shipped", 256)  # the bystander's model is loaded first
    first: dict = {}
    wave = threading.Thread(target=lambda: first.update(
        runs=_timed_wave(clients[:args.stalled], image, args.zoo_model, args.time_limit)), daemon=True)
    wave.start()
    time.sleep(2.0)
    waits, pending = [], [None]

    def bystander() -> None:
        while wave.is_alive():
            pending[0] = time.perf_counter()
            seconds, _ = _detect_once(clients[-1], image, "shipped", 256)
            pending[0] = None
            waits.append(round(seconds, 2))
            time.sleep(0.5)

    threading.Thread(target=bystander, daemon=True).start()
    wave.join()
    if pending[0] is not None:  # still waiting for a slot when the stalled requests were given up on
        waits.append(round(time.perf_counter() - pending[0], 2))
    again = _timed_wave(clients[args.stalled:2 * args.stalled], image, args.zoo_model, 120.0)

    def summary(runs: list) -> dict:
        return {"seconds": sorted(round(t, 1) for t, _ in runs), "answers": sorted({e[:140] for _, e in runs})}

    return {"zoo_model": args.zoo_model, "stalled_requests": summary(first["runs"]),
            "bystander": {"detects": len(waits), "max_wait_s": max(waits, default=None)},
            "same_file_again": summary(again)}


def _folder_mib(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return round(total / 2**20, 1)


def _upload_only(url: str, image: str) -> None:
    """An upload that is never detected (what a page does when an image is dropped on it)."""
    boundary = "dinoexplorerbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"up.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + Path(image).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    urllib.request.urlopen(request, timeout=60).close()


def scenario_disk(args, url: str, sampler: "Sampler", tmp: Path) -> dict:
    """`--sessions` visitors that never open a heartbeat, each uploading `--upload-side` noise
    images (as large as photos): one detected (and its internals.npz fetched), `--uploads` more
    never detected. The app's
    temporary folder (TMPDIR and GRADIO_TEMP_DIR, set by `main`) is measured after them and
    `--settle` seconds later."""
    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    Client._stream_heartbeat = staticmethod(lambda *a, **k: None)  # visitors whose page never says it is alive
    side = args.upload_side or 2048  # noise: a PNG as large as a photo's (about 12 MB at 2048 px)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    errors = []

    def distinct(index: int) -> str:  # Gradio keeps one copy of identical uploads: each is another image
        pixels[0, 0] = (index % 256, index // 256 % 256, 7)
        path = tmp / f"upload-{index}.png"
        Image.fromarray(pixels).save(path)
        return str(path)

    for number in range(args.sessions):
        client = Client(url, verbose=False)
        try:
            client.predict(handle_file(distinct(number * (args.uploads + 1))), "shipped", "", "auto", args.max_input,
                           0.3, 100, api_name="/detect")
            client.predict(api_name="/internals")  # the session's arrays, written to its folder
        except Exception as error:  # noqa: BLE001 - reported
            errors.append(f"{type(error).__name__}: {str(error)[:120]}")
        for extra in range(args.uploads):
            _upload_only(url, distinct(number * (args.uploads + 1) + 1 + extra))
    after = _folder_mib(tmp / "app-tmp")
    time.sleep(args.settle)
    return {"sessions": args.sessions, "uploads_never_detected": args.sessions * args.uploads,
            "errors": errors[:5], "disk_after_sessions_mib": after,
            f"disk_{args.settle:.0f}_s_later_mib": _folder_mib(tmp / "app-tmp")}


def scenario_connect(args, url: str, sampler: "Sampler", tmp: Path) -> dict:
    """`--sessions` visitors opening the page at once: each GETs `/config` (what a page and a
    gradio_client ask first) and `/gradio_api/info`, with plain HTTP (no client-side parsing);
    the seconds each took, and how many failed within 60 s."""
    def visit(_: int) -> tuple[float, str]:
        start = time.perf_counter()
        try:
            for path in ("/config", "/gradio_api/info"):
                with urllib.request.urlopen(url + path, timeout=60) as answer:
                    answer.read()
            return time.perf_counter() - start, ""
        except OSError as error:
            return time.perf_counter() - start, f"{type(error).__name__}: {str(error)[:80]}"

    urllib.request.urlopen(url + "/config", timeout=120).read()  # the app is up and has answered once
    with ThreadPoolExecutor(args.sessions) as pool:
        visits = list(pool.map(visit, range(args.sessions)))
    return {"visitors": args.sessions, "config_and_info": _percentiles([t for t, e in visits if not e]),
            "errors": sorted({e for _, e in visits if e})[:5], "failed": sum(bool(e) for _, e in visits)}


SCENARIOS = {"switch": scenario_switch, "stalled": scenario_stalled, "disk": scenario_disk,
             "connect": scenario_connect}


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
    parser.add_argument("--connect-first", action="store_true",
                        help="connect every client first (one after the other), then run the sessions at once")
    parser.add_argument("--scenario", choices=["visitors", *SCENARIOS], default="visitors",
                        help="visitors: the default above; connect: 80 page openings at once; switch: Detects cycling through --models while a "
                             "bystander detects; stalled: zoo requests to a Hub that never answers while a "
                             "bystander detects; disk: sessions without a heartbeat and never-detected uploads")
    parser.add_argument("--models", default="untrained:dino-4scale-r50,untrained:dino-5scale-r50,shipped")
    parser.add_argument("--stalled", type=int, default=4, help="stalled: zoo requests at once")
    parser.add_argument("--zoo-model", default="zoo:dino-4scale-r50")
    parser.add_argument("--uploads", type=int, default=1, help="disk: never-detected uploads per session")
    parser.add_argument("--settle", type=float, default=60.0, help="disk: seconds before the second measure")
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
            args.image = image
        port = _free_port()
        env = dict(item.split("=", 1) for item in args.env)
        silent = None
        if args.scenario == "stalled":
            silent = SilentHost()
            silent.start()
            env.update(HF_ENDPOINT=f"http://127.0.0.1:{silent.port}", HF_HUB_CACHE=str(Path(tmp) / "hub"))
        if args.scenario == "disk":
            app_tmp = Path(tmp) / "app-tmp"
            (app_tmp / "gradio").mkdir(parents=True)
            env.update(TMPDIR=str(app_tmp), GRADIO_TEMP_DIR=str(app_tmp / "gradio"))
        process = start_app(args.app_dir, port, env)
        sampler = Sampler(process.pid)
        sampler.start()
        try:
            time.sleep(1.0)
            started = time.perf_counter()
            deadline = time.time() + args.time_limit
            if args.scenario != "visitors":
                outcome = SCENARIOS[args.scenario](args, f"http://127.0.0.1:{port}", sampler, Path(tmp))
            else:
                clients = [None] * args.sessions
                if args.connect_first:  # visitors whose pages are open: only their Detects come at once
                    from gradio_client import Client

                    clients = [Client(f"http://127.0.0.1:{port}", verbose=False) for _ in range(args.sessions)]
                with ThreadPoolExecutor(args.parallel or args.sessions) as pool:
                    outcomes = list(pool.map(lambda c: session(f"http://127.0.0.1:{port}", image, args, deadline, c),
                                             clients))
            elapsed = time.perf_counter() - started
            time.sleep(2.0)
        finally:
            sampler.stop()
            process.terminate()
            process.wait(timeout=60)
            if silent is not None:
                silent.stop()

    if args.scenario != "visitors":
        rss = [value for _, value in sampler.samples]
        report = {"scenario": args.scenario, "app_dir": str(args.app_dir), "elapsed_s": round(elapsed, 1), **outcome,
                  "rss_mib": {"start": rss[1] if len(rss) > 1 else None, "peak": max(rss, default=None),
                              "end": rss[-1] if rss else None}, "max_input": args.max_input}
        print(json.dumps(report, indent=1))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**report, "rss_samples": sampler.samples}, indent=1))
        return 0

    errors = [e for outcome in outcomes for e in outcome["errors"]]
    connects = [t for outcome in outcomes for t in outcome["timings"]["connect"]]
    detects = [t for outcome in outcomes for t in outcome["timings"]["detect"]]
    inspects = [t for outcome in outcomes for t in outcome["timings"]["inspect"]]
    refusals = [t for outcome in outcomes for t in outcome["timings"]["refused"]]
    rss = [value for _, value in sampler.samples]
    report = {
        "sessions": args.sessions, "parallel": args.parallel or args.sessions, "rounds": args.rounds,
        "inspects_per_round": args.inspects,
        "model": args.model, "max_input": args.max_input,
        "image": f"generated {args.upload_side}x{args.upload_side} PNG" if args.upload_side else Path(image).name,
        "elapsed_s": round(elapsed, 1), "errors": len(errors),
        "error_kinds": dict(Counter(error[:90] for error in errors).most_common(10)),
        "load_average_1m": {"mean": round(statistics.fmean(sampler.loads), 2) if sampler.loads else None,
                            "max": round(max(sampler.loads, default=0.0), 2)},
        "timed_out": sum("Timeout" in error for error in errors),
        "connect": _percentiles(connects), "detect": _percentiles(detects), "inspect": _percentiles(inspects),
        "refused_after": _percentiles(refusals),
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
