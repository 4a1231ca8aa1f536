"""Eval-mode forward time of `eomt.EomtForUniversalSegmentation` vs transformers' on the same weights.

For every model size the transformers model is built from a fixed seed, its `attn_mask_probs` is set
to zeros (an annealed, inference-ready model: no masked attention in eval mode), it is saved with
`save_pretrained` to a temporary directory, and ours is loaded from that directory with
`eomt.EomtForUniversalSegmentation.from_pretrained`. Both run in eval mode under `torch.inference_mode()`
on the same input; their outputs are compared before anything is timed (a float32 max abs diff above
1e-3 aborts the run). Runs of the two models are interleaved, alternating which goes first, so that
clock or thermal drift does not favour either. Reported: median and IQR in ms per forward, and
ratio = transformers median / ours median (> 1 means ours is faster).

bfloat16 is run by casting both models and the input with `.to(torch.bfloat16)` (pure bf16
inference) by default; `--bf16-mode autocast` keeps float32 weights and runs both under
`torch.autocast` instead. The mode is printed in the header and stored in every row.

transformers is only a reference for this benchmark; the `eomt` package never imports it.

Run from the repository root, e.g.:

    /work/venv/bin/python benchmarks/forward_speed.py                      # S, batch 1, CPU, float32
    /work/venv/bin/python benchmarks/forward_speed.py --models S B L --batch 1 8 --device cuda \\
        --dtype float32 bfloat16 --compile --json results.json

Sizes: S = 384 hidden / 12 layers / 6 heads / 3 query blocks, B = 768 / 12 / 12 / 3,
L = 1024 / 24 / 16 / 4; 200 queries, 133 labels, patch 16, images of --size (default 640) pixels.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

SIZES = {
    #     hidden, layers, heads, num_blocks
    "S": (384, 12, 6, 3),
    "B": (768, 12, 12, 3),
    "L": (1024, 24, 16, 4),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FP32_TOLERANCE = 1e-3


@dataclass
class Row:
    model: str
    size: int
    batch: int
    dtype: str
    compile: bool
    ours_ms: float
    ours_iqr_ms: float
    transformers_ms: float
    transformers_iqr_ms: float
    ratio: float
    paired_ratio: float  # median over runs i of transformers_i / ours_i (the two ran back to back)
    max_diff_class: float
    max_diff_masks: float
    bf16_mode: str | None
    runs: int
    warmup: int
    ours_times_ms: list[float]
    transformers_times_ms: list[float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["S"], choices=sorted(SIZES), help="model sizes (default: S)")
    parser.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes (default: 1)")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=sorted(DTYPES),
                        help="compute dtypes (default: float32)")
    parser.add_argument("--bf16-mode", choices=["cast", "autocast"], default="cast",
                        help="how bfloat16 runs: cast both models with .to(bfloat16) (default) or torch.autocast")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--size", type=int, default=640, help="square image size in pixels (default: 640)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warmup runs per model (default: 3)")
    parser.add_argument("--compile", action="store_true",
                        help="wrap both models' forward in torch.compile (default mode) before warmup")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--hf-attn", choices=["sdpa", "eager"], default="sdpa",
                        help="attention implementation of the transformers model (default: sdpa)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and input (default: 0)")
    parser.add_argument("--show-times", action="store_true", help="print every timed run below its row")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if args.size % 16:
        parser.error("--size must be a multiple of the patch size 16")
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    return str(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_pair(name: str, size: int, seed: int, hf_attn: str, tmp: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, transformers) in float32 on CPU with identical weights."""
    import transformers

    import eomt

    hidden, layers, heads, num_blocks = SIZES[name]
    config = transformers.EomtConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_blocks=num_blocks,
        num_queries=200, num_labels=133, patch_size=16, image_size=size,
    )
    torch.manual_seed(seed)
    theirs = transformers.EomtForUniversalSegmentation._from_config(config, attn_implementation=hf_attn)
    with torch.no_grad():
        theirs.attn_mask_probs.zero_()
    directory = tmp / name
    theirs.save_pretrained(directory)
    ours = eomt.EomtForUniversalSegmentation.from_pretrained(directory)
    if ours.attn_mask_probs.any():
        raise RuntimeError(f"ours loaded attn_mask_probs={ours.attn_mask_probs.tolist()}, expected zeros")
    return ours.float().eval(), theirs.float().eval()


def prepare(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, compile_: bool) -> torch.nn.Module:
    """A copy of the float32 master on `device` in `dtype`, optionally with a compiled forward."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if compile_:
        model.forward = torch.compile(model.forward)
    return model


def run_once(model: torch.nn.Module, pixels: torch.Tensor, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(), autocast():
        out = model(pixel_values=pixels)
    return out["class_queries_logits"], out["masks_queries_logits"]


def timed(model: torch.nn.Module, pixels: torch.Tensor, autocast, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run_once(model, pixels, autocast)
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def median_iqr(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q3 - q1


def bench_one(args: argparse.Namespace, name: str, pair: tuple[torch.nn.Module, torch.nn.Module], batch: int,
              dtype_name: str, device: torch.device) -> Row:
    dtype = DTYPES[dtype_name]
    bf16_mode = args.bf16_mode if dtype == torch.bfloat16 else None
    use_autocast = bf16_mode == "autocast"
    weight_dtype = torch.float32 if use_autocast else dtype
    if args.compile:
        # Fresh compile caches per grid point: every point compiles new model copies, and reusing the
        # caches would hit dynamo's recompile limit on a large grid (silently falling back to eager)
        # or turn the batch dimension dynamic.
        torch._dynamo.reset()
    models = {
        "ours": prepare(pair[0], device, weight_dtype, args.compile),
        "transformers": prepare(pair[1], device, weight_dtype, args.compile),
    }

    def autocast():
        if use_autocast:
            return torch.autocast(device_type=device.type, dtype=dtype)
        return contextlib.nullcontext()

    generator = torch.Generator().manual_seed(args.seed + 1)
    pixels = torch.randn(batch, 3, args.size, args.size, generator=generator)
    pixels = pixels.to(device=device, dtype=weight_dtype)

    # Agreement first (this is also the first warmup call, the one that triggers compilation).
    outs = {key: run_once(model, pixels, autocast) for key, model in models.items()}
    diff_class = (outs["ours"][0].float() - outs["transformers"][0].float()).abs().max().item()
    diff_masks = (outs["ours"][1].float() - outs["transformers"][1].float()).abs().max().item()
    del outs
    if dtype == torch.float32 and max(diff_class, diff_masks) > FP32_TOLERANCE:
        raise SystemExit(
            f"FAIL: {name} batch {batch} float32 outputs disagree: max |diff| class {diff_class:.3g}, "
            f"masks {diff_masks:.3g} (tolerance {FP32_TOLERANCE})")

    order = list(models)
    for _ in range(args.warmup):
        for key in order:
            run_once(models[key], pixels, autocast)
    times: dict[str, list[float]] = {key: [] for key in models}
    for i in range(args.runs):
        for key in order if i % 2 == 0 else order[::-1]:
            times[key].append(timed(models[key], pixels, autocast, device))

    ours_med, ours_iqr = median_iqr(times["ours"])
    paired = statistics.median([t / o for t, o in zip(times["transformers"], times["ours"], strict=True)])
    hf_med, hf_iqr = median_iqr(times["transformers"])
    del models
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Row(model=name, size=args.size, batch=batch, dtype=dtype_name, compile=args.compile,
               ours_ms=ours_med, ours_iqr_ms=ours_iqr, transformers_ms=hf_med, transformers_iqr_ms=hf_iqr,
               ratio=hf_med / ours_med,
               paired_ratio=paired,
               max_diff_class=diff_class, max_diff_masks=diff_masks,
               bf16_mode=bf16_mode, runs=args.runs, warmup=args.warmup,
               ours_times_ms=times["ours"], transformers_times_ms=times["transformers"])


HEADER = (f"{'model':<5} {'size':>5} {'batch':>5} {'dtype':<9} {'compile':<7} {'ours ms (IQR)':>18} "
          f"{'transformers ms (IQR)':>22} {'ratio':>6} {'max diff':>9}")


def format_row(row: Row) -> str:
    ours = f"{row.ours_ms:.1f} ({row.ours_iqr_ms:.1f})"
    theirs = f"{row.transformers_ms:.1f} ({row.transformers_iqr_ms:.1f})"
    diff = max(row.max_diff_class, row.max_diff_masks)
    return (f"{row.model:<5} {row.size:>5} {row.batch:>5} {row.dtype:<9} {str(row.compile):<7} {ours:>18} "
            f"{theirs:>22} {row.ratio:>6.3f} {diff:>9.2e}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"device: {device} ({device_name(device)}), torch threads: {torch.get_num_threads()}")
    if "bfloat16" in args.dtype:
        how = ("both models cast with .to(torch.bfloat16)" if args.bf16_mode == "cast"
               else "float32 weights, both run under torch.autocast(dtype=torch.bfloat16)")
        print(f"bfloat16 mode: {args.bf16_mode} ({how})")
    print(f"image {args.size}x{args.size}, warmup {args.warmup}, runs {args.runs} (interleaved), "
          f"compile {args.compile}, transformers attention {args.hf_attn}; ratio = transformers / ours (>1: ours "
          f"faster); max diff = max |ours - transformers| over class and mask logits")
    print()
    print(HEADER, flush=True)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="eomt-bench-") as tmp:
        for name in args.models:
            pair = build_pair(name, args.size, args.seed, args.hf_attn, Path(tmp))
            for dtype_name in args.dtype:
                for batch in args.batch:
                    row = bench_one(args, name, pair, batch, dtype_name, device)
                    rows.append(row)
                    print(format_row(row), flush=True)
                    if args.show_times:
                        for key in ("ours", "transformers"):
                            values = " ".join(f"{t:.1f}" for t in getattr(row, f"{key}_times_ms"))
                            print(f"    {key} ms: {values}", flush=True)
            del pair
            gc.collect()

    if args.json is not None:
        meta = {"torch": torch.__version__, "transformers": transformers.__version__, "device": str(device),
                "device_name": device_name(device), "threads": torch.get_num_threads(), "hf_attn": args.hf_attn}
        args.json.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
        print(f"\nwrote {len(rows)} row(s) to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
