"""Load on `eomt serve` over loopback: throughput and p50/p95/p99 latency at 1, 8 and 32 concurrent clients,
batching on (`--max-batch-size 8`) and off (`--max-batch-size 1`), next to `eomt predict` on the same images.

    python benchmarks/serve_load.py [--requests 32] [--duration 60] [--runs 2] [--images 16] [--size 320x240]
                                    [--model DIR] [--device cpu] [--memory-requests N]

Two real servers (`python -m eomt serve MODEL --port 0`, 127.0.0.1 only) run side by side, only one under load at
a time; every round measures every (clients, batching) cell, interleaved, then `eomt predict -b 8` and `-b 1` on
the same files; the table shows medians over rounds. Each cell sends `--requests` requests (POST /v1/segment, the
JPEG as the body, format=json) from N client threads, or stops after `--duration` seconds. Latency is request
to complete response at the client; throughput is answered images over the cell's wall time. Also printed: the
servers' resident memory after the first round and at the end (with the number of requests served between), and
whether the answers with batching on and off were byte-identical.

Without `--model`, a randomly initialised small EoMT is written (hidden 192, 6 blocks, 100 queries, 320x320
input, 20 classes, panoptic: with random weights no segment survives post-processing, which is therefore light,
so the forward pass, decoding and HTTP are what is measured; the segments per image are printed); the images are
JPEGs cut from the two example photos, 320x240 unless `--size` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from forward_speed import device_name  # noqa: E402
from predict_throughput import make_images, make_model  # noqa: E402  (the same JPEGs and model as the predict benchmark)

CLIENTS = (1, 8, 32)
SEGMENTS: list[int] = []  # segments per answer, to state what post-processing had to build
BATCHING = {"on": ["--max-batch-size", "8", "--batch-timeout", "0.01"], "off": ["--max-batch-size", "1"]}


class Server:
    def __init__(self, model: Path, device: str, extra: list[str]) -> None:
        command = [sys.executable, "-m", "eomt", "serve", str(model), "--host", "127.0.0.1", "--port", "0",
                   "--device", device, "--max-queue", "256", *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = ""
        for line in self.process.stderr:
            if "listening on http://" in line:
                self.url = line.split("listening on ", 1)[1].split()[0]
                break
        if not self.url:
            raise SystemExit(f"{' '.join(command)} did not start")
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()  # drain the log

    def wait_ready(self) -> Server:
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.url} never became healthy")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(120)


def load(url: str, images: list[bytes], clients: int, requests: int, duration: float, threshold: float,
         answers: dict[int, bytes] | None = None) -> tuple[float, list[float], int]:
    """(wall seconds, latencies of the answered requests, requests that failed)."""
    import httpx

    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    failed = [0]
    segments = SEGMENTS
    stop_at = time.monotonic() + duration

    def client() -> None:
        with httpx.Client(timeout=300) as session:
            while time.monotonic() < stop_at:
                with lock:
                    if issued[0] >= requests:
                        return
                    k = issued[0]
                    issued[0] += 1
                start = time.perf_counter()
                try:
                    answer = session.post(f"{url}/v1/segment", params={"threshold": threshold},
                                          content=images[k % len(images)], headers={"Content-Type": "image/jpeg"})
                except httpx.TransportError:
                    answer = None
                seconds = time.perf_counter() - start
                with lock:
                    if answer is not None and answer.status_code == 200:
                        latencies.append(seconds)
                        if answers is not None:
                            answers.setdefault(k % len(images), answer.content)
                        segments.append(len(json.loads(answer.content)["segments"]))
                    else:
                        failed[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, failed[0]


def memory_phase(server: Server, images: list[bytes], requests: int, threshold: float) -> list[tuple[int, float]]:
    """(requests served so far, resident MB) before and after each quarter of `requests` more requests."""
    if requests < 1:
        return []
    points = [(0, server.rss_mb())]
    for _ in range(4):
        count = requests // 4
        failed = load(server.url, images, 8, count, 1e9, threshold)[2]
        if failed:
            raise SystemExit(f"{failed} requests failed in the memory phase")
        points.append((points[-1][0] + count, server.rss_mb()))
    return points


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def predict_rate(images: Path, model: Path, out: Path, device: str, batch: int, threshold: float) -> float:
    command = [sys.executable, "-m", "eomt", "predict", str(images), "--model", str(model), "--out", str(out),
               "-b", str(batch), "--device", device, "--threshold", str(threshold), "--overwrite", "-q"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per cell (default: 32)")
    parser.add_argument("--duration", type=float, default=60.0, help="at most this many seconds per cell")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--images", type=int, default=16, help="distinct images (default: 16)")
    parser.add_argument("--size", default="320x240", help="image size WxH (default: 320x240)")
    parser.add_argument("--model", help="a model directory (default: a generated small EoMT)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--memory-requests", type=int, default=0,
                        help="then this many more requests (8 clients) to the batching server, its resident memory "
                             "printed every quarter (default: 0, skipped)")
    args = parser.parse_args()
    if args.requests < 1 or args.duration <= 0 or args.runs < 1 or args.images < 1:
        parser.error("--requests, --duration, --runs and --images must be positive")
    if not re.fullmatch(r"\d+x\d+", args.size):
        parser.error(f"--size {args.size}: expected WxH, e.g. 320x240")
    import torch
    from PIL import Image

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the servers are stopped too
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else make_model(tmp / "model")
        folder = make_images(tmp / "images", args.images)
        width, height = (int(v) for v in args.size.split("x"))
        for path in folder.glob("*.jpg"):
            Image.open(path).resize((width, height)).save(path, quality=90)
        servers = {name: Server(model, args.device, extra) for name, extra in BATCHING.items()}
        try:
            for server in servers.values():
                server.wait_ready()
            results = measure(args, servers, folder, model, tmp)
        finally:
            for server in servers.values():
                server.stop()
    report(args, results, torch.__version__)


def measure(args: argparse.Namespace, servers: dict[str, Server], folder: Path, model: Path, tmp: Path) -> dict:
    """Every round: each (clients, batching) cell, then `eomt predict -b 8` and `-b 1`."""
    images = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    cells: dict[tuple[str, int], list[tuple[float, list[float], int]]] = {}
    predicted: dict[int, list[float]] = {8: [], 1: []}
    answers: dict[str, dict[int, bytes]] = {name: {} for name in servers}
    served = {name: 0 for name in servers}
    rss_first: dict[str, float] = {}
    served_first: dict[str, int] = {}
    for run in range(args.runs):
        for clients in CLIENTS:
            for name, server in servers.items():
                wall, latencies, failed = load(server.url, images, clients, args.requests, args.duration,
                                               args.threshold, answers[name])
                cells.setdefault((name, clients), []).append((wall, latencies, failed))
                served[name] += len(latencies) + failed
                print(f"round {run + 1}, {clients} clients, batching {name}: {len(latencies) / wall:.2f} images/s",
                      file=sys.stderr, flush=True)
        for batch in predicted:
            predicted[batch].append(predict_rate(folder, model, tmp / f"out{batch}", args.device, batch,
                                                 args.threshold))
        if run == 0:
            rss_first = {name: server.rss_mb() for name, server in servers.items()}
            served_first = dict(served)
    rss_last = {name: server.rss_mb() for name, server in servers.items()}
    memory = memory_phase(servers["on"], images, args.memory_requests, args.threshold)
    same = sum(answers["on"][k] == answers["off"][k] for k in answers["on"] if k in answers["off"])
    return dict(cells=cells, predicted=predicted, rss_first=rss_first, rss_last=rss_last,
                served={n: served[n] - served_first[n] for n in served}, memory=memory, same=same,
                compared=len(set(answers["on"]) & set(answers["off"])), images=len(images))


def report(args: argparse.Namespace, r: dict, torch_version: str) -> None:
    import torch

    cpu = device_name(torch.device("cpu"))
    print(f"eomt serve, loopback, {r['images']} distinct {args.size} JPEGs, format=json, threshold {args.threshold}, "
          f"{args.device} ({cpu}, {os.cpu_count()} cores, clients on the same machine), torch "
          f"{torch_version}; {args.requests} requests per cell (at most {args.duration:g} s), medians of "
          f"{args.runs} interleaved rounds; load average at the end {os.getloadavg()[0]:.1f}")
    print("| clients | batching | images/s | p50 ms | p95 ms | p99 ms | failed |")
    print("|---|---|---|---|---|---|---|")
    for clients in CLIENTS:
        for name in BATCHING:
            runs = r["cells"][name, clients]
            rate = statistics.median(len(lat) / wall for wall, lat, _ in runs)
            p = {q: statistics.median(percentile(lat, q) * 1000 for _, lat, _ in runs if lat) for q in (50, 95, 99)}
            label = "on (max 8, 10 ms)" if name == "on" else "off (max 1)"
            print(f"| {clients} | {label} | {rate:.2f} | {p[50]:.0f} | {p[95]:.0f} | {p[99]:.0f} | "
                  f"{sum(f for _, _, f in runs)} |")
    for batch, rates in r["predicted"].items():
        print(f"| `eomt predict -b {batch}` | (files, no HTTP) | {statistics.median(rates):.2f} | | | | |")
    for name in BATCHING:
        print(f"server with batching {name}: resident memory {r['rss_first'][name]:.0f} MB after round 1, "
              f"{r['rss_last'][name]:.0f} MB after {r['served'][name]} more requests")
    if r["memory"]:
        print("memory phase, batching on, 8 clients: resident MB after " +
              ", ".join(f"{n} requests {mb:.0f}" for n, mb in r["memory"]))
    print(f"segments per image: median {statistics.median(SEGMENTS):.0f}, range {min(SEGMENTS)}..{max(SEGMENTS)}")
    print(f"answers byte-identical with batching on and off: {r['same']} of {r['compared']} images")


if __name__ == "__main__":
    main()
