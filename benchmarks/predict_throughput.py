"""Images/s of `eomt predict` on a folder: 1 vs 2 processes (`--devices`) and 0 vs 2 decode workers.

    python benchmarks/predict_throughput.py [--images 200] [--runs 3] [--model DIR] [--device cpu]

Each run is the real command in a fresh process (`python -m eomt predict DIR --devices D -j W`), the
configurations interleaved round by round (A, B, C, D, A, B, ...). Printed per configuration: the
median over runs of the job's own images/s (all processes' images over the slowest process's time,
from OUT/summary.json: decoding, forward, post-processing and writing, model loading excluded) and of
the whole command's wall time (interpreter start and model loading included), and that the files are
byte-identical across configurations. Without `--model`, a randomly initialised small EoMT
(hidden 192, 6 blocks, 100 queries, 320x320 input, 20 classes, panoptic) is written first; the images
are 640x480 JPEGs cut from the two example photos.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (processes, decode workers per process, torch threads per process: None = torch's default for 1 process,
# cores / processes under Fabric)
CONFIGS = [(1, 0, None), (1, 2, None), (1, 2, 1), (2, 0, None), (2, 2, None)]


def make_model(directory: Path) -> Path:
    import torch

    from eomt import EomtConfig, EomtForUniversalSegmentation, EomtImageProcessor

    torch.manual_seed(0)
    config = EomtConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, num_blocks=2, num_queries=100,
                        image_size=320, num_labels=20, intermediate_size=768)
    model = EomtForUniversalSegmentation(config).eval()
    model.attn_mask_probs.zero_()
    model.save_pretrained(directory)
    EomtImageProcessor(size={"shortest_edge": 320, "longest_edge": 320}, do_pad=True,
                       task="panoptic").save_pretrained(directory)
    return directory


def make_images(directory: Path, count: int) -> Path:
    from PIL import Image

    directory.mkdir(parents=True)
    photos = [Image.open(ROOT / "examples" / name).convert("RGB") for name in ("coffee.png", "chelsea.png")]
    for i in range(count):
        photo = photos[i % 2]
        w, h = photo.size
        x, y = (i * 37) % (w // 4), (i * 23) % (h // 4)
        photo.crop((x, y, x + 3 * w // 4, y + 3 * h // 4)).resize((640, 480)).save(directory / f"{i:04d}.jpg",
                                                                                      quality=90)
    return directory


def run_once(images: Path, model: Path, out: Path, devices: int, workers: int, threads: int | None, device: str,
             batch: int) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "eomt", "predict", str(images), "--model", str(model), "--out", str(out),
               "--devices", str(devices), "-j", str(workers), "-b", str(batch), "--device", device, "-q"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return summary["images_per_second"], wall


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and p.name != "summary.json"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", help="a model directory (default: a generated small EoMT)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each process takes its own GPU)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else make_model(tmp / "model")
        images = make_images(tmp / "images", args.images)
        results: dict[tuple, list[tuple[float, float]]] = {c: [] for c in CONFIGS}
        reference = None
        for _ in range(args.runs):
            for config in CONFIGS:
                out = tmp / "out_{}_{}_{}".format(*config)
                results[config].append(run_once(images, model, out, *config, args.device, args.batch_size))
                produced = files(out)
                reference = reference or produced
                if produced != reference:
                    raise SystemExit(f"configuration {config} wrote different files")
    load = os.getloadavg()[0]
    print(f"eomt predict, {args.images} images 640x480 JPEG, batch {args.batch_size}, {args.device}, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}; medians of {args.runs} interleaved runs; "
          f"load average at the end {load:.1f}")
    print("| processes | decode workers | torch threads per process | images/s (job) | wall s (command) |")
    print("|---|---|---|---|---|")
    for config in CONFIGS:
        devices, workers, threads = config
        shown = threads or (torch.get_num_threads() if devices == 1 else max(1, (os.cpu_count() or 1) // devices))
        rates = [r for r, _ in results[config]]
        walls = [w for _, w in results[config]]
        print(f"| {devices} | {workers} | {shown} | {statistics.median(rates):.2f} | {statistics.median(walls):.1f} |")
    print("files byte-identical across all configurations: yes")


if __name__ == "__main__":
    main()
