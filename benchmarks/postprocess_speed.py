"""Post-processing time of `eomt.processing.postprocess` vs transformers' EomtImageProcessor.post_process_*.

Tasks (batch 1, 200 queries, mask logits at 1/4 of the network input):

- semantic: a 640x960 image at size {"shortest_edge": 640} (resized 640x960 -> 2 sliding windows
  of 640x640, so the logits batch is 2), 150 classes; confident queries tile the image;
- semantic-gaps: the same, but the confident queries lie on random rectangles, so that parts of the
  image are covered only by no-object queries;
- semantic-uncertain: Gaussian class and mask logits;
- panoptic and instance (threshold mode): a 480x640 image padded to 640x640, 133 classes.

The logits are synthetic but shaped like a trained model's: 30 confident object queries (one class
logit at +10..+12) with +/-8 mask logits on smoothed rectangles, 10 weak queries (below the
thresholds) and the rest no-object winners. Both implementations get the same logits; their outputs
are compared first (segment maps equal, up to at most a handful of tied pixels for semantic maps,
segments_info equal with scores within 1e-5). Runs are interleaved, alternating which goes first;
reported: median ms per call and ratio = transformers median / ours median (> 1: ours is faster).

transformers is only a reference for this benchmark; the `eomt` package never imports it.

Run from the repository root:

    /work/venv/bin/python benchmarks/postprocess_speed.py                 # CPU, 7 runs per task
    /work/venv/bin/python benchmarks/postprocess_speed.py --device cuda --runs 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from eomt.processing.postprocess import instance_segmentation, panoptic_segmentation, semantic_segmentation
from eomt.processing.sizes import resized_size, window_starts

QUERIES = 200


def synthetic_logits(batch: int, classes: int, h: int, w: int, seed: int, layout: str = "random"):
    """(mask logits, class logits). layout "random": 30 confident object queries on random rectangles
    (parts of the image are covered only by no-object queries); "tiled": the first 20 object queries
    tile the image (every pixel has a confident query, as in semantic outputs); "uncertain":
    Gaussian class and mask logits, no confident query at all."""
    g = torch.Generator().manual_seed(seed)
    if layout == "uncertain":
        return 4 * torch.randn((batch, QUERIES, h, w), generator=g), 0.5 * torch.randn(
            (batch, QUERIES, classes + 1), generator=g)
    corners = torch.rand((batch, QUERIES, 4), generator=g)
    y0, x0 = (corners[..., 0] * h * 0.8).long(), (corners[..., 1] * w * 0.8).long()
    y1, x1 = y0 + 8 + (corners[..., 2] * h * 0.3).long(), x0 + 8 + (corners[..., 3] * w * 0.3).long()
    order = torch.stack([torch.randperm(QUERIES, generator=g) for _ in range(batch)])
    if layout == "tiled":  # 4 x 5 cells, each one object query's mask, grown by 2 pixels to overlap
        for b in range(batch):
            for cell, q in enumerate(order[b, :20].tolist()):
                row, col = divmod(cell, 5)
                y0[b, q], y1[b, q] = row * h // 4 - 2, (row + 1) * h // 4 + 2
                x0[b, q], x1[b, q] = col * w // 5 - 2, (col + 1) * w // 5 + 2
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    inside = ((ys >= y0[..., None, None]) & (ys < y1[..., None, None])
              & (xs >= x0[..., None, None]) & (xs < x1[..., None, None]))
    mask_logits = torch.where(inside, 8.0, -8.0)
    mask_logits = F.avg_pool2d(mask_logits.flatten(0, 1)[:, None], 5, stride=1, padding=2, count_include_pad=False)
    mask_logits = mask_logits.view(batch, QUERIES, h, w) + 0.3 * torch.randn((batch, QUERIES, h, w), generator=g)
    class_logits = torch.randn((batch, QUERIES, classes + 1), generator=g)
    for b in range(batch):
        objects, weak, rest = order[b, :30], order[b, 30:40], order[b, 40:]
        class_logits[b, objects, torch.randint(0, classes, (30,), generator=g)] = 10 + 2 * torch.rand(30, generator=g)
        class_logits[b, weak, torch.randint(0, classes, (10,), generator=g)] = 3.0
        class_logits[b, rest, -1] = 12.0
    return mask_logits, class_logits


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def semantic_agree(ours: list, theirs: list) -> str:
    differ = sum(int((a != b.to(a.device)).sum()) for a, b in zip(ours, theirs, strict=True))
    if differ > 5:
        raise RuntimeError(f"semantic maps differ at {differ} pixels")
    return "maps equal" if differ == 0 else f"{differ} tie px"


def segments_agree(ours: list, theirs: list) -> str:
    for a, b in zip(ours, theirs, strict=True):
        if not torch.equal(a["segmentation"], b["segmentation"].to(a["segmentation"]).long()):
            raise RuntimeError("segment maps differ")
        sa, sb = a["segments_info"], b["segments_info"]
        if len(sa) != len(sb) or any(
            x["id"] != y["id"] or x["label_id"] != y["label_id"] or abs(x["score"] - y["score"]) > 1e-5
            for x, y in zip(sa, sb, strict=True)
        ):
            raise RuntimeError("segments_info differ")
    return f"equal ({sum(len(a['segments_info']) for a in ours)} segments)"


def tasks(device: torch.device, seed: int):
    import transformers

    processor = transformers.EomtImageProcessor()
    padded = {"shortest_edge": 640, "longest_edge": 640}

    # semantic, sliding windows: 640x960 at shortest edge 640 -> 640x960 -> windows at 0 and 320
    height, width = 640, 960
    long_side = max(resized_size(height, width, 640))
    offsets = [torch.tensor([0, s, s + 640]) for s in window_starts(long_side, 640)]
    for name, layout in (("semantic", "tiled"), ("semantic-gaps", "random"), ("semantic-uncertain", "uncertain")):
        masks, classes = (t.to(device) for t in synthetic_logits(len(offsets), 150, 160, 160, seed, layout))
        outputs = SimpleNamespace(masks_queries_logits=masks, class_queries_logits=classes, patch_offsets=offsets)
        yield (
            name, f"{height}x{width}, {len(offsets)} windows",
            lambda m=masks, c=classes: semantic_segmentation(m, c, [(height, width)], {"shortest_edge": 640},
                                                             patch_offsets=offsets),
            lambda o=outputs: processor.post_process_semantic_segmentation(
                o, target_sizes=[(height, width)], size={"shortest_edge": 640, "longest_edge": None}),
            semantic_agree,
        )

    target = [(480, 640)]
    masks, classes = (t.to(device) for t in synthetic_logits(1, 133, 160, 160, seed + 1))
    outputs = SimpleNamespace(masks_queries_logits=masks, class_queries_logits=classes, patch_offsets=None)
    yield (
        "panoptic", "480x640 padded 640",
        lambda: panoptic_segmentation(masks, classes, target, padded),
        lambda: processor.post_process_panoptic_segmentation(outputs, target_sizes=target, size=padded),
        segments_agree,
    )
    yield (
        "instance", "480x640 padded 640",
        lambda: instance_segmentation(masks, classes, target, padded),
        lambda: processor.post_process_instance_segmentation(outputs, target_sizes=target, size=padded),
        segments_agree,
    )


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per implementation and task (default: 7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per implementation and task (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.runs} runs (median, interleaved), {QUERIES} queries, batch 1")
    header = f"{'task':<19} {'input':<24} {'ours ms':>9} {'transformers ms':>16} {'ratio':>7}  outputs"
    print(header)
    print("-" * len(header))
    with torch.inference_mode():
        for name, what, ours_fn, theirs_fn, agree in tasks(device, args.seed):
            verdict = agree(ours_fn(), theirs_fn())
            for _ in range(args.warmup):
                ours_fn(), theirs_fn()
            ours_ms, theirs_ms = [], []
            for run in range(args.runs):
                pair = [(ours_fn, ours_ms), (theirs_fn, theirs_ms)]
                for fn, times in pair if run % 2 == 0 else pair[::-1]:
                    times.append(timed(fn, device))
            ours, theirs = statistics.median(ours_ms), statistics.median(theirs_ms)
            print(f"{name:<19} {what:<24} {ours:>9.1f} {theirs:>16.1f} {theirs / ours:>6.2f}x  {verdict}")


if __name__ == "__main__":
    main()
