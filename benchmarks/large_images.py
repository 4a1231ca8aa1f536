"""Peak memory and time of `eomt predict` on large photos vs transformers' post-processing, one fresh process each.

A small random ViT (hidden 64, 4 layers, patch 16, 640 input) with 200 queries, made confident (class and mask
head weights scaled up, as the tests' `make_confident`) so that almost every query passes the 0.8 thresholds:
the worst case for post-processing, whose full-resolution work scales with the kept queries. 133 classes for
panoptic / instance (the COCO panoptic count), 150 for semantic (ADE20K). The photos are smooth random colour
fields saved as JPEG (quality 90), 4:3: 1000x750 (0.75 MP), 1155x866 (1 MP), 4000x3000 (12 MP), 8000x6000
(48 MP), and 11548x8661 (100 MP) for `--tile 640`.

Each measurement runs in a new Python process:
- "eomt predict": `eomt predict PHOTO --model M --task T --out DIR --quiet --num-workers 0 [--tile 640]`, files
  written (PNG / JSON / overlay JPEG), as a user runs it;
- "transformers": transformers' EomtImageProcessor (preprocess) + EomtForUniversalSegmentation (forward) +
  `post_process_<task>_segmentation` at the photo's size; no files written.
Reported: the process's peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and wall time from the start of
the process (imports and model load included), the median over `--runs`, and the median over runs of each size's
time over the first size's time in the same run (each run measures every size once, in order, so that a machine
slowing down mid-benchmark hits every size alike). Every process runs under an address-space
cap (`--cap`, RLIMIT_AS) so that a run that does not fit fails with MemoryError instead of the kernel killing it
(or its neighbours); such a run is reported as "> cap".

    python benchmarks/large_images.py                 # every size and task, 1 run each
    python benchmarks/large_images.py --sizes 0.75 12 --tasks panoptic --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {"0.75": (1000, 750), "1": (1155, 866), "12": (4000, 3000), "48": (8000, 6000), "100": (11548, 8661)}
CLASSES = {"panoptic": 133, "instance": 133, "semantic": 150}
QUERIES = 200

_CHILD = r"""
import json, os, resource, sys, time
started = time.perf_counter()
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
kind, photo, model, task, out, tile = sys.argv[2:8]
status = "ok"
try:
    if kind == "eomt":
        from eomt.cli.commands import main
        args = ["predict", photo, "--model", model, "--task", task, "--out", out, "--quiet", "--num-workers", "0"]
        if tile != "-":
            args += ["--tile", tile]
        code = main(args)
        summary = json.load(open(os.path.join(out, "summary.json")))
        status = "ok" if code == 0 else "failed: " + "; ".join(f["reason"] for f in summary.get("failures", []))
    else:
        import torch, transformers
        from PIL import Image
        image = Image.open(photo).convert("RGB")
        processor = transformers.EomtImageProcessor.from_pretrained(model)
        network = transformers.EomtForUniversalSegmentation.from_pretrained(model).eval()
        with torch.no_grad():
            inputs = processor(images=image, return_tensors="pt")
            outputs = network(**inputs)
            post = getattr(processor, f"post_process_{task}_segmentation")
            post(outputs, target_sizes=[(image.height, image.width)])
except MemoryError:
    status = "MemoryError"
except RuntimeError as exc:
    status = "MemoryError" if "memory" in str(exc).lower() else f"RuntimeError: {str(exc)[:80]}"
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"status": status, "rss": rss, "seconds": time.perf_counter() - started}))
"""


def make_models(folder: Path) -> dict[str, Path]:
    """One saved model (+ processor config) per task, random and confident."""
    import torch
    import transformers

    models = {}
    for task, classes in CLASSES.items():
        torch.manual_seed(0)
        config = transformers.EomtConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, num_blocks=2,
                                         num_queries=QUERIES, image_size=640, patch_size=16, num_labels=classes)
        model = transformers.EomtForUniversalSegmentation(config).eval()
        with torch.no_grad():
            model.class_predictor.weight.mul_(40.0)
            model.class_predictor.bias.mul_(40.0)
            model.mask_head.fc3.weight.mul_(8.0)
            model.mask_head.fc3.bias.mul_(8.0)
            model.attn_mask_probs.zero_()
        path = folder / f"model_{task}"
        model.save_pretrained(path)
        settings = (dict(size={"shortest_edge": 640}, do_split_image=True) if task == "semantic"
                    else dict(size={"shortest_edge": 640, "longest_edge": 640}, do_pad=True))
        transformers.EomtImageProcessor(**settings).save_pretrained(path)
        models[task] = path
    return models


def make_photo(folder: Path, name: str) -> Path:
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    width, height = SIZES[name]
    path = folder / f"photo_{name}mp.jpg"
    if not path.exists():
        rng = np.random.default_rng(0)
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        small.resize((width, height), Image.BICUBIC).save(path, quality=90)
    return path


def measure(kind: str, photo: Path, model: Path, task: str, tile: str, cap: int, scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch))
    run = subprocess.run([sys.executable, "-c", _CHILD, str(cap), kind, str(photo), str(model), task, str(out), tile],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"status": f"exit {run.returncode}: {run.stderr.strip().splitlines()[-1:] or ''}", "rss": 0,
                "seconds": 0.0}
    return json.loads(lines[-1])


def ratio(results: list[dict], base: list[dict]) -> str:
    """Median over runs of the time / the same run's time of the first size (both measured ok)."""
    pairs = [r["seconds"] / b["seconds"] for r, b in zip(results, base, strict=True)
             if r["status"] == "ok" and b["status"] == "ok" and b["seconds"] > 0]
    return f"{statistics.median(pairs):.2f}x" if pairs else "–"


def cell(results: list[dict], cap: int) -> str:
    good = [r for r in results if r["status"] == "ok"]
    if not good:
        status = results[0]["status"]
        return f"> {cap / 2**30:.0f} GB cap ({status})" if status == "MemoryError" else status[:60]
    rss = statistics.median(r["rss"] for r in good) / 2**30
    seconds = statistics.median(r["seconds"] for r in good)
    return f"{rss:.2f} GB, {seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["0.75", "1", "12", "48"], choices=list(SIZES))
    parser.add_argument("--tasks", nargs="+", default=list(CLASSES), choices=list(CLASSES))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cap", type=float, default=10.0, help="address-space cap per process, GB (default 10)")
    parser.add_argument("--transformers-sizes", nargs="*", default=["1", "12"], choices=list(SIZES))
    parser.add_argument("--tile", action="store_true", help="also `eomt predict --tile 640` on the 100 MP photo")
    parser.add_argument("--work", type=Path, default=None, help="folder for models and photos (default: a temp dir)")
    args = parser.parse_args()
    cap = int(args.cap * 2**30)
    work = args.work or Path(tempfile.mkdtemp(prefix="eomt_large_"))
    work.mkdir(parents=True, exist_ok=True)
    models = make_models(work)
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), "unknown CPU")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {QUERIES} queries; median of {args.runs} run(s); cap "
          f"{args.cap:.0f} GB per process\n")
    rows = []
    for task in args.tasks:
        photos = {size: make_photo(work, size) for size in args.sizes}
        kinds = {size: ["eomt"] + (["transformers"] if size in args.transformers_sizes else []) for size in args.sizes}
        results = {(size, kind): [] for size in args.sizes for kind in kinds[size]}
        for run in range(args.runs):  # interleaved: every size (and peer) once per run, so drift hits them alike
            for size in args.sizes:
                for kind in kinds[size]:
                    results[size, kind].append(measure(kind, photos[size], models[task], task, "-", cap, work))
            print(f"  {task}: run {run + 1} of {args.runs} done", file=sys.stderr, flush=True)
        base = args.sizes[0]
        for size in args.sizes:
            rows.append((task, f"{size} MP ({'x'.join(map(str, SIZES[size]))})", cell(results[size, "eomt"], cap),
                         ratio(results[size, "eomt"], results[base, "eomt"]) if size != base else "1x",
                         cell(results[size, "transformers"], cap) if "transformers" in kinds[size] else "–"))
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        if args.tile:
            photo = make_photo(work, "100")
            result = [measure("eomt", photo, models[task], task, "640", cap, work) for _ in range(args.runs)]
            rows.append((task, "100 MP (11548x8661), --tile 640", cell(result, cap), "–", "–"))
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    print(f"| task | photo | eomt predict: peak RSS, time | time / {args.sizes[0]} MP time | transformers: peak RSS, "
          "time |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
