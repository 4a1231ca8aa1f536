"""VidEoMT on long videos: eomt online (one frame per call) vs transformers' whole-clip forward, same weights.

    python benchmarks/video_fps.py [--frames 32 256 2048] [--repeats 3] [--image-size 256] [--hidden 192]
                                   [--memory-cap-gb 8] [--device cpu]

A transformers VidEoMT is built from a fixed seed (small by default: ViT-Ti width 192, 12 blocks, 3 heads, the
last 4 with 200 queries, patch 16), saved, and loaded by eomt. Each measurement runs in a fresh process (so
peak memory is that run's alone) capped at --memory-cap-gb of address space on CPU (a run that needs more
fails with out-of-memory instead of taking the machine down; it is reported as such):

- eomt: `VideomtForUniversalSegmentation.encode_frames` + `decode_frame` per frame, the query state carried;
  each frame is made when needed (as a decoder hands them over), logits dropped after use;
- transformers: `VideomtForUniversalSegmentation(pixel_values_videos=clip)` on the whole clip at once (its API:
  the clip is one tensor, and its outputs hold every frame's logits).

Both get the same frames (random, seeded per frame) and 2 warm-up frames; the network only is timed (no
decoding or post-processing). Runs alternate eomt / transformers; reported: median frames/s, the ratio
eomt / transformers, peak resident memory (ru_maxrss of the process) and its growth over the process after
loading the model. Before timing, the logits of both on the first 8 frames are compared (max abs difference).
Rounds: --repeats up to 32 frames, at most 2 up to 256, one above.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def build(directory: Path, hidden: int, layers: int, heads: int, image_size: int) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.VideomtConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                        num_blocks=4, num_queries=200, image_size=image_size, patch_size=16,
                                        num_labels=40)
    model = transformers.VideomtForUniversalSegmentation(config).eval()
    model.save_pretrained(directory)


def frame(index: int, size: int):
    import torch

    g = torch.Generator().manual_seed(index)
    return torch.randn(1, 3, size, size, generator=g)


def rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    import resource
    import time

    if args.memory_cap_gb and args.device == "cpu":
        cap = int(args.memory_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    torch.set_num_threads(args.threads)
    size, frames = args.image_size, args.worker_frames
    result = {"runner": args.worker, "frames": frames}
    try:
        with torch.inference_mode():
            if args.worker == "eomt":
                sys.path.insert(0, str(ROOT / "src"))
                from eomt import VideomtForUniversalSegmentation

                model = VideomtForUniversalSegmentation.from_pretrained(args.model_dir).to(args.device)
                grid = (size // 16, size // 16)

                def run(count: int, first: int) -> None:
                    queries = None
                    for t in range(first, first + count):
                        tokens = model.encode_frames(frame(t, size).to(args.device))
                        masks, classes, _, queries = model.decode_frame(tokens, grid, queries)
                        del masks, classes
                    if args.device != "cpu":
                        torch.cuda.synchronize()
            else:
                import transformers

                model = transformers.VideomtForUniversalSegmentation.from_pretrained(args.model_dir).eval()
                model = model.to(args.device)

                def run(count: int, first: int) -> None:
                    clip = torch.cat([frame(t, size) for t in range(first, first + count)])[None].to(args.device)
                    out = model(pixel_values_videos=clip)
                    del out, clip
                    if args.device != "cpu":
                        torch.cuda.synchronize()

            result["rss_loaded_mb"] = rss_mb()
            run(2, 10**6)  # warm-up, other frames
            start = time.perf_counter()
            run(frames, 0)
            result["seconds"] = time.perf_counter() - start
            result["fps"] = frames / result["seconds"]
    except (RuntimeError, MemoryError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result["error"] = ("out of memory" if isinstance(exc, MemoryError) or "alloc" in text.lower()
                           or "memory" in text.lower() else f"{type(exc).__name__}: {text[:200]}")
    result["rss_peak_mb"] = rss_mb()
    if args.device != "cpu":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def check_equal(model_dir: Path, size: int) -> float:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "src"))
    from eomt import VideomtForUniversalSegmentation

    ours = VideomtForUniversalSegmentation.from_pretrained(model_dir)
    theirs = transformers.VideomtForUniversalSegmentation.from_pretrained(model_dir).eval()
    clip = torch.cat([frame(t, size) for t in range(8)])[None]
    with torch.inference_mode():
        grid, queries, masks = (size // 16, size // 16), None, []
        for t in range(8):
            m, _, _, queries = ours.decode_frame(ours.encode_frames(clip[:, t]), grid, queries)
            masks.append(m)
        expected = theirs(pixel_values_videos=clip).masks_queries_logits
    return float((torch.cat(masks) - expected).abs().max())


def measure(args: argparse.Namespace, runner: str, frames: int, model_dir: Path) -> dict:
    command = [sys.executable, __file__, "--worker", runner, "--worker-frames", str(frames), "--model-dir",
               str(model_dir), "--image-size", str(args.image_size), "--threads", str(args.threads), "--device",
               args.device, "--memory-cap-gb", str(args.memory_cap_gb)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:  # killed (e.g. by the kernel's OOM killer) or crashed
        return {"runner": runner, "frames": frames, "error": f"process ended with code {done.returncode}: "
                f"{(done.stderr.strip().splitlines() or [''])[-1][:200]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 256, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-cap-gb", type=float, default=8.0)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build(model_dir, args.hidden, args.layers, args.heads, args.image_size)
        diff = check_equal(model_dir, args.image_size)
        print(f"# {cpu_name() if args.device == 'cpu' else torch.cuda.get_device_name()}, {args.threads} threads; "
              f"torch {torch.__version__}, transformers {transformers.__version__}; model: hidden {args.hidden}, "
              f"{args.layers} blocks, {args.heads} heads, 200 queries, input {args.image_size}x{args.image_size}; "
              f"memory cap {args.memory_cap_gb} GB; eomt vs transformers max abs diff (8 frames): {diff:.2e}")
        rows = []
        for frames in args.frames:
            runs: dict[str, list[dict]] = {"eomt": [], "transformers": []}
            for _ in range(args.repeats if frames <= 32 else min(args.repeats, 2) if frames <= 256 else 1):
                for runner in ("eomt", "transformers"):
                    runs[runner].append(measure(args, runner, frames, model_dir))
            row = {"frames": frames}
            for runner, results in runs.items():
                good = [r for r in results if "fps" in r]
                row[runner] = {"fps": statistics.median(r["fps"] for r in good) if good else None,
                               "rss_peak_mb": max(r["rss_peak_mb"] for r in results if "rss_peak_mb" in r)
                               if any("rss_peak_mb" in r for r in results) else None,
                               "growth_mb": max(r["rss_peak_mb"] - r.get("rss_loaded_mb", r["rss_peak_mb"])
                                                for r in results if "rss_peak_mb" in r) if good else None,
                               "error": next((r["error"] for r in results if "error" in r), None)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| frames | eomt online frames/s | transformers clip frames/s | ratio | eomt peak RSS (growth) | "
          "transformers peak RSS (growth) |\n|---|---|---|---|---|---|")
    for row in rows:
        e, t = row["eomt"], row["transformers"]

        def cell(r: dict, key: str) -> str:
            return f"{r[key]:.1f}" if r.get(key) is not None else (r["error"] or "-")

        def memory(r: dict) -> str:
            if r.get("rss_peak_mb") is None:
                return r["error"] or "-"
            growth = f" (+{r['growth_mb']:.0f} MB)" if r.get("growth_mb") is not None else f" ({r['error']})"
            return f"{r['rss_peak_mb']:.0f} MB{growth}"

        ratio = f"{e['fps'] / t['fps']:.2f}" if e.get("fps") and t.get("fps") else "-"
        print(f"| {row['frames']} | {cell(e, 'fps')} | {cell(t, 'fps')} | {ratio} | {memory(e)} | {memory(t)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
