"""The paper's FPS table: forward frames per second of eomt's runtimes next to transformers on the same weights.

    python benchmarks/fps.py [--models S] [--size 640] [--batch 1 4] [--dtypes float32 bfloat16]
                             [--modes eager compiled onnxruntime] [--runs 5] [--device cpu]
    python benchmarks/fps.py --e2e FOLDER [--e2e-modes float32 bfloat16 onnxruntime int8] [--runs 3]

Forward table: per model size a transformers EoMT is built from a fixed seed (class and mask heads
sharpened so that panoptic thresholds keep segments, `attn_mask_probs` zero: a finished model), saved,
and loaded by eomt. Every row's runners (eomt eager / compiled / onnxruntime and transformers eager,
same dtype) are timed interleaved, round by round, after one warm-up call; the median is reported
as FPS = batch / median seconds. Each row is checked against eomt eager float32: max abs diff of
the mask logits and the agreement of the panoptic class map (pixels whose segment has the same
class) after eomt's panoptic post-processing at the input size.

End to end (`--e2e FOLDER`): fresh processes, model load included, the whole folder each time:
`eomt predict FOLDER` (which also writes PNG + JSON + overlay per image) vs a transformers
`pipeline("image-segmentation", subtask="panoptic")` over the same files with eomt's thresholds (its
clock stops when the last image is segmented: saving its results for the comparison is not timed).
The model's mask logits are shifted so that photos get 8-17 segments each (see `build`).
Reported: images/s (median of --runs, interleaved); the pixels on which each eomt runner's result
has the same class and the same segment (stuff classes merged, as eomt does and the pipeline does not)
as the pipeline's; and the pixel agreement of eomt's partitions with eomt float32's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from eomt import EomtForUniversalSegmentation
from eomt.processing.image_processor import EomtImageProcessor

# hidden size, layers, heads, query blocks; "T" is a tiny model for smoke runs (gpu_checks.sh --dry-run)
SIZES = {"S": (384, 12, 6, 3), "B": (768, 12, 12, 3), "L": (1024, 24, 16, 4), "g": (1536, 40, 24, 5),
         "T": (32, 2, 2, 1)}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def build(size: str, image_size: int, directory: Path) -> None:
    hidden, layers, heads, blocks = SIZES[size]
    config = transformers.EomtConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                     num_blocks=blocks, num_queries=200, num_labels=133, image_size=image_size,
                                     use_swiglu_ffn=size == "g")
    torch.manual_seed(0)
    model = transformers.EomtForUniversalSegmentation(config).eval()
    processor = transformers.EomtImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size},
                                                do_pad=True)
    with torch.no_grad():
        model.class_predictor.weight.mul_(10)
        model.mask_head.fc3.weight.mul_(30)
        model.attn_mask_probs.zero_()
        # Shift every query's mask logits down to their 90th percentile on a photo, so that a query covers
        # about a tenth of an image and panoptic post-processing keeps 8-17 segments per photo (unshifted,
        # random masks overlap so much that the overlap rule rejects every segment). The shift is exact:
        # the last LayerNorm's bias b * 1 and fc3's bias -k / (b * C) * 1 add -k to every logit, because the
        # normalised features sum to 0 over channels and the LayerNorm weight is 1.
        photo = Image.open(Path(__file__).resolve().parent.parent / "examples" / "coffee.png").convert("RGB")
        logits = model(**processor(images=photo, return_tensors="pt")).masks_queries_logits.flatten()
        shift = torch.quantile(logits[:: max(1, logits.numel() // 1_000_000)], 0.9).item()
        model.upscale_block.block[-1].layernorm2d.bias.fill_(1e-3)
        model.mask_head.fc3.bias.fill_(-shift / (1e-3 * hidden))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def class_map(processor: EomtImageProcessor, class_logits: torch.Tensor, mask_logits: torch.Tensor,
              size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) class of each pixel's panoptic segment (-1 void), from eomt's post-processing."""
    from eomt.modeling.eomt import EomtOutput

    out = EomtOutput(class_queries_logits=class_logits.float().cpu(), masks_queries_logits=mask_logits.float().cpu())
    maps = []
    for result in processor.post_process_panoptic_segmentation(out, target_sizes=[size] * class_logits.shape[0],
                                                               stuff_classes=list(range(80, 133))):
        seg = result["segmentation"]
        classes = torch.full_like(seg, -1)
        for s in result["segments_info"]:
            classes[seg == s["id"]] = s["label_id"]
        maps.append(classes)
    return torch.stack(maps)


def runners(directory: Path, dtype: str, modes: list[str], device: str, cache: Path):
    """name -> callable(pixel_values) -> (class_logits, mask_logits)."""
    torch_dtype = getattr(torch, dtype)
    found = {}
    ours = EomtForUniversalSegmentation.from_pretrained(directory).to(device, torch_dtype).eval()

    def eomt_call(model):
        def call(x):
            out = model(x.to(torch_dtype))
            return out.class_queries_logits, out.masks_queries_logits
        return call

    if "eager" in modes:
        found["eomt eager"] = eomt_call(ours)
    if "compiled" in modes:
        ours.mask_probs()
        mode = "max-autotune" if device.startswith("cuda") else None
        found["eomt compiled"] = eomt_call(torch.compile(ours, mode=mode, dynamic=False))
    if "onnxruntime" in modes and not (device == "cpu" and dtype == "bfloat16"):  # no bf16 kernels on ORT CPU
        os.environ["EOMT_CACHE"] = str(cache)
        from eomt.runtimes.onnx_runtime import OnnxRuntimeModel, cached_export

        runtime = OnnxRuntimeModel(cached_export(str(directory), "float16" if dtype != "float32" else dtype), device)
        found["eomt onnxruntime" + ("" if dtype == "float32" else " fp16")] = eomt_call(runtime)
        if dtype == "float32" and device == "cpu":  # int8 encoder blocks, float32 query blocks and heads
            found["eomt onnxruntime int8"] = eomt_call(OnnxRuntimeModel(cached_export(str(directory), "int8")))
    theirs = transformers.EomtForUniversalSegmentation.from_pretrained(directory).to(device, torch_dtype).eval()

    def theirs_call(x):
        out = theirs(pixel_values=x.to(torch_dtype))
        return out.class_queries_logits, out.masks_queries_logits

    found["transformers eager"] = theirs_call
    return found


def forward_table(args) -> None:
    print("| model | input | batch | dtype | runtime | FPS | ms / batch | vs transformers | "
          "mask logits max diff vs fp32 | class map agreement vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / "model"
            build(size, args.size, directory)
            processor = EomtImageProcessor.from_pretrained(directory)
            reference = EomtForUniversalSegmentation.from_pretrained(directory).eval()
            for batch in args.batch:
                torch.manual_seed(1)
                x = torch.randn(batch, 3, args.size, args.size)
                with torch.inference_mode():
                    ref = reference(x)
                ref_map = class_map(processor, ref.class_queries_logits, ref.masks_queries_logits,
                                    (args.size, args.size))
                for dtype in args.dtypes:
                    calls = runners(directory, dtype, args.modes, args.device, Path(tmp) / "cache")
                    xd = x.to(args.device)
                    times = {name: [] for name in calls}
                    checks = {}
                    with torch.inference_mode():
                        for name, call in calls.items():  # warm-up (compiles), and the output check
                            cls, masks = call(xd)
                            diff = (masks.float().cpu() - ref.masks_queries_logits).abs().max().item()
                            agree = (class_map(processor, cls, masks, (args.size, args.size)) == ref_map)
                            checks[name] = (diff, agree.float().mean().item())
                        for _ in range(args.runs):
                            for name, call in calls.items():
                                sync(args.device)
                                start = time.perf_counter()
                                call(xd)
                                sync(args.device)
                                times[name].append(time.perf_counter() - start)
                    theirs = statistics.median(times["transformers eager"])
                    for name in calls:
                        med = statistics.median(times[name])
                        diff, agree = checks[name]
                        print(f"| ViT-{size} | {args.size} | {batch} | {dtype} | {name} | {batch / med:.2f} | "
                              f"{med * 1e3:.0f} | {theirs / med:.2f}x | {diff:.1e} | {agree * 100:.2f}% |", flush=True)
                    del calls


THEIRS_SCRIPT = """
import json, sys, pathlib, time
import numpy as np
from transformers import pipeline
files = sorted(pathlib.Path(sys.argv[2]).iterdir())
out = pathlib.Path(sys.argv[4])
out.mkdir(exist_ok=True)
pipe = pipeline("image-segmentation", model=sys.argv[1], device=sys.argv[3])
results = []
for f in files:
    # eomt predict's thresholds (transformers' post-processing defaults; the pipeline's own are 0.9 / 0.5)
    segments = pipe(str(f), subtask="panoptic", threshold=0.8, mask_threshold=0.5, overlap_mask_area_threshold=0.8)
    ids = np.full(segments[0]["mask"].size[::-1] if segments else (1, 1), -1, dtype=np.int32)
    for index, segment in enumerate(segments):
        ids[np.asarray(segment["mask"]) > 0] = index  # (under 1% of the pipeline's time per image)
    results.append((f.stem, ids, [s["label"] for s in segments]))
print(time.time())  # the segmentation is done: saving it for the comparison is not timed
for stem, ids, labels in results:
    np.save(out / (stem + ".npy"), ids)
    (out / (stem + ".json")).write_text(json.dumps(labels))
"""


def e2e_table(args) -> None:
    folder = Path(args.e2e)
    count = sum(1 for p in folder.iterdir() if p.is_file())
    variants = {"eomt predict float32": ["--dtype", "float32"], "eomt predict bfloat16": ["--dtype", "bfloat16"],
                "eomt predict onnxruntime": ["--backend", "onnxruntime"],
                "eomt predict onnxruntime int8": ["--backend", "onnxruntime", "--dtype", "int8"],
                "eomt predict compiled": ["--compile"]}
    variants = {k: v for k, v in variants.items() if k.split()[-1] in args.e2e_modes}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "model"
        build(args.models[0], args.size, directory)
        env = {**os.environ, "EOMT_CACHE": str(Path(tmp) / "cache")}
        for mode, dtype in (("onnxruntime", "float32"), ("int8", "int8")):  # one-time exports are not timed
            if mode in args.e2e_modes:
                subprocess.run([sys.executable, "-c", "import sys; from eomt.runtimes.onnx_runtime import "
                                "cached_export; cached_export(sys.argv[1], sys.argv[2])", str(directory), dtype],
                               env=env, check=True)
        times = {name: [] for name in [*variants, "transformers pipeline"]}
        outs = {name: Path(tmp) / name.replace(" ", "_") for name in variants}
        theirs_out = Path(tmp) / "transformers"
        for _ in range(args.runs):
            for name in times:
                if name in variants:
                    cmd = [sys.executable, "-m", "eomt", "predict", str(folder), "--model", str(directory), "--out",
                           str(outs[name]), "--device", args.device, "-q", *variants[name]]
                else:
                    shutil.rmtree(theirs_out, ignore_errors=True)
                    cmd = [sys.executable, "-c", THEIRS_SCRIPT, str(directory), str(folder), args.device,
                           str(theirs_out)]
                if name in outs:  # each run writes a fresh folder (predict refuses to mix into an old one)
                    shutil.rmtree(outs[name], ignore_errors=True)
                start = time.time()
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                end = float(done.stdout.split()[-1]) if name not in variants and done.returncode == 0 else time.time()
                times[name].append(end - start)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
        def agreement(name: str) -> str:
            base = outs.get("eomt predict float32")
            if base is None or name not in outs:
                return "-"
            same = total = 0
            for png in sorted(base.glob("*.png")):
                a, b = _png_ids(png), _png_ids(outs[name] / png.name)
                same += _partition_agreement(a, b)
                total += a.size
            return f"{same / total * 100:.2f}%"

        stuff = {f"LABEL_{i}" for i in range(80, 133)}  # what eomt predict merges for a 133-class model (COCO)

        def versus_transformers(name: str) -> str:
            if name not in outs:
                return "-"
            same = total = segments = 0
            for png in sorted(outs[name].glob("*.png")):
                ours, theirs = _ours_segments(png, stuff), _theirs_segments(theirs_out, png.stem, stuff)
                same += _segmentation_agreement(ours, theirs)
                total += ours[0].size
                segments += len(json.loads(png.with_suffix(".json").read_text())["segments_info"])
            return f"{same / total * 100:.3f}% ({segments} segments)"

        theirs = statistics.median(times["transformers pipeline"])
        print(f"\n{count} images in {folder}, ViT-{args.models[0]} {args.size} panoptic, fresh process per run "
              f"(load included), median of {args.runs}, {device_name(args.device)}")
        print("| runner | images/s | s per run | vs transformers pipeline | same segment and class as transformers "
              "| partition agreement vs eomt float32 |")
        print("|---|---|---|---|---|---|")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {name} | {count / med:.2f} | {med:.1f} | {theirs / med:.2f}x | {versus_transformers(name)} "
                  f"| {agreement(name)} |")


def _png_ids(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64) @ [1, 256, 65536]


def _ours_segments(png: Path, stuff: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(segment key map, class name map) of an eomt predict result; keys: stuff by class, things by id."""
    info = json.loads(png.with_suffix(".json").read_text())
    ids = _png_ids(png)
    names = {s["id"]: info["labels"][str(s["category_id"])] for s in info["segments_info"]}
    return _keyed(ids, names, stuff, void=0)


def _theirs_segments(folder: Path, stem: str, stuff: set[str]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.load(folder / f"{stem}.npy").astype(np.int64)
    names = dict(enumerate(json.loads((folder / f"{stem}.json").read_text())))
    return _keyed(ids, names, stuff, void=-1)


def _keyed(ids: np.ndarray, names: dict[int, str], stuff: set[str], void: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids -> (keys, classes): keys make a stuff class one segment however many queries made it
    (transformers' pipeline does not merge them, eomt does); classes are class names' indices, void -1."""
    order = sorted(set(names.values()) | stuff)
    unique, inverse = np.unique(ids, return_inverse=True)
    keys, classes = [], []
    for segment in unique.tolist():
        name = names.get(segment) if segment != void else None
        classes.append(-1 if name is None else order.index(name))
        keys.append(-1 if name is None else -2 - order.index(name) if name in stuff else segment)
    inverse = inverse.reshape(ids.shape)
    return np.asarray(keys)[inverse], np.asarray(classes)[inverse]


def _segmentation_agreement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int:
    """Pixels on which two panoptic results agree: same class, and the segments correspond both ways."""
    same_class = int((a[1] == b[1]).sum())
    return min(same_class, _partition_agreement(a[0], b[0]), _partition_agreement(b[0], a[0]))


def make_photos(folder: Path, count: int) -> None:
    """`count` JPEG photos from the two example images: crops, flips and sizes from 480 to 1024 pixels wide."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open("examples/coffee.png").convert("RGB"), Image.open("examples/chelsea.png").convert("RGB")]
    widths = [480, 640, 800, 1024]
    for i in range(count):
        image = sources[i % 2]
        if i % 4 >= 2:
            image = ImageOps.mirror(image)
        w, h = image.size
        crop = (i % 3) * w // 12
        image = image.crop((crop, 0, w - crop // 2, h))
        width = widths[(i // 2) % len(widths)]
        image = image.resize((width, round(image.height * width / image.width)), Image.BICUBIC)
        image.save(folder / f"photo_{i:02d}.jpg", quality=90)


def _partition_agreement(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels whose segment in b is the segment of b that overlaps their segment in a most (ids may differ)."""
    pairs, counts = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1, return_counts=True)
    best: dict[int, int] = {}
    for (sa, _), c in zip(pairs.T, counts, strict=True):
        best[sa] = max(best.get(sa, 0), c)
    return int(sum(best.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["S"], choices=list(SIZES))
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled", "onnxruntime"],
                        choices=["eager", "compiled", "onnxruntime"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--e2e", metavar="FOLDER", help="time `eomt predict` vs the transformers pipeline instead")
    parser.add_argument("--make-photos", type=int, metavar="N",
                        help="first write N test photos (JPEG, from examples/) into the --e2e folder")
    parser.add_argument("--e2e-modes", nargs="+", default=["float32", "bfloat16", "onnxruntime", "int8"],
                        choices=["float32", "bfloat16", "onnxruntime", "int8", "compiled"])
    args = parser.parse_args()
    print(f"device: {device_name(args.device)}; torch {torch.__version__}, transformers {transformers.__version__}")
    if args.e2e:
        if args.make_photos:
            make_photos(Path(args.e2e), args.make_photos)
        e2e_table(args)
    else:
        forward_table(args)


if __name__ == "__main__":
    main()
