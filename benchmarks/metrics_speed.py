"""Accumulation speed of `eomt.evaluation.metrics` PQ and mIoU vs plain per-segment / per-class loops.

    /work/venv/bin/python benchmarks/metrics_speed.py [--pairs 500] [--baseline-pairs 500] [--device cpu]
        [--threads N]

Data: generated 640x480 (H=480, W=640) image pairs, made afresh from a per-pair seed, so the same
pairs reach both implementations:

- panoptic: 20-40 ground-truth segments (rectangles and ellipses painted over one another) of 20
  classes (0-9 things, 10-19 stuff), about 1 in 10 things crowd, void areas (id 0, unlisted); the
  prediction is the ground truth shifted by a few pixels, with some segments dropped, merged or
  relabelled, some extra segments, and unpredicted areas (-1);
- semantic: 150 classes, 25-40 painted regions over a random background class, ignore (255) areas;
  the prediction is shifted, with some regions relabelled and a few out-of-range (255) pixels.

Timed: only the `update` calls (ours: `PanopticMetric.update` / `SemanticMetric.update` on int64
tensors on --device; baseline: the loops below on the same arrays as numpy), with
`time.perf_counter`; synchronised after each call on CUDA. Generation is not timed. The baselines:

- PQ: per pair, a boolean mask per ground-truth and per predicted segment (numpy), then a loop over
  ground-truth x predicted segments of the same class computing each intersection with `&` and
  `count_nonzero`, then loops for false negatives and false positives (crowd and void overlaps again
  with masks) — panopticapi's rules;
- mIoU: per pair, a loop over the classes computing intersection, target and prediction counts with
  numpy comparisons.

The "PQ, 24-bit ids" row repeats PQ with segment ids replaced by random 24-bit values, as COCO's
R + 256 G + 256^2 B ids, which our metric maps with a binary search instead of a lookup table.

The baselines can be timed on fewer pairs, the first --baseline-pairs (default: all; rates are per
image). On the pairs both ran, both implementations must give the same per-class counts and
scores, or the script exits with an error.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time

import numpy as np
import torch

from eomt.evaluation.metrics import PanopticMetric, SemanticMetric

H, W = 480, 640
PQ_CLASSES, THINGS = 20, list(range(10))
SEM_CLASSES, IGNORE = 150, 255


# ------------------------------------------------------------------------------------------- data


def _shape_mask(rng: np.random.Generator, min_r: int, max_r: int) -> tuple[slice, slice, np.ndarray]:
    """A rectangle or an ellipse: (row slice, column slice, mask within that box)."""
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    ry, rx = int(rng.integers(min_r, max_r)), int(rng.integers(min_r, max_r))
    rows, cols = slice(max(cy - ry, 0), min(cy + ry + 1, H)), slice(max(cx - rx, 0), min(cx + rx + 1, W))
    yy, xx = np.ogrid[rows, cols]
    if rng.random() < 0.5:
        return rows, cols, np.ones((rows.stop - rows.start, cols.stop - cols.start), bool)
    return rows, cols, ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def panoptic_pair(seed: int, wide_ids: bool = False) -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """With `wide_ids`, segment ids are random 24-bit values (as COCO's R + 256 G + 256^2 B ids)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((H, W), np.int64)
    gt_segments = []
    for k in range(int(rng.integers(20, 41))):
        rows, cols, mask = _shape_mask(rng, 15, 200)
        gt[rows, cols][mask] = k + 1
        label = int(rng.integers(PQ_CLASSES))
        gt_segments.append({"id": k + 1, "label_id": label, "iscrowd": int(label in THINGS and rng.random() < 0.1)})
    for _ in range(int(rng.integers(1, 5))):
        rows, cols, mask = _shape_mask(rng, 5, 40)
        gt[rows, cols][mask] = 0
    pred = np.full((H, W), -1, np.int64)
    pred_segments = []
    for segment in gt_segments:
        r = rng.random()
        if r < 0.1:
            continue  # missed
        target = segment["id"] if r > 0.15 or not pred_segments else pred_segments[-1]["id"] - 1000  # merged
        pred[gt == segment["id"]] = target + 1000
        if target == segment["id"]:
            label = segment["label_id"] if rng.random() < 0.85 else int(rng.integers(PQ_CLASSES))
            pred_segments.append({"id": target + 1000, "label_id": label, "score": 0.9})
    pred = np.roll(pred, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
    for k in range(int(rng.integers(0, 6))):
        rows, cols, mask = _shape_mask(rng, 10, 80)
        pred[rows, cols][mask] = 5000 + k
        pred_segments.append({"id": 5000 + k, "label_id": int(rng.integers(PQ_CLASSES)), "score": 0.5})
    for _ in range(int(rng.integers(0, 3))):
        rows, cols, mask = _shape_mask(rng, 5, 30)
        pred[rows, cols][mask] = -1
    if wide_ids:
        for id_map, segments in ((gt, gt_segments), (pred, pred_segments)):
            values, inverse = np.unique(id_map, return_inverse=True)
            new = rng.choice(1 << 24, size=len(values) + len(segments), replace=False)
            lookup = dict(zip(values.tolist(), new[: len(values)].tolist(), strict=True))
            lookup.update({-1: -1, 0: 0})  # void stays void
            id_map[...] = np.array([lookup[v] for v in values.tolist()])[inverse.reshape(id_map.shape)]
            for k, segment in enumerate(segments):  # listed ids without pixels get fresh values
                segment["id"] = lookup.get(segment["id"], int(new[len(values) + k]))
    return pred, pred_segments, gt, gt_segments


def semantic_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = np.full((H, W), int(rng.integers(SEM_CLASSES)), np.int64)
    for _ in range(int(rng.integers(25, 41))):
        rows, cols, mask = _shape_mask(rng, 10, 150)
        target[rows, cols][mask] = int(rng.integers(SEM_CLASSES))
    pred = np.roll(target, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    for _ in range(int(rng.integers(5, 15))):
        rows, cols, mask = _shape_mask(rng, 10, 100)
        pred[rows, cols][mask] = int(rng.integers(SEM_CLASSES))
    for _ in range(int(rng.integers(1, 4))):
        rows, cols, mask = _shape_mask(rng, 5, 40)
        target[rows, cols][mask] = IGNORE
    pred[rng.random((H, W)) < 0.001] = 255  # out-of-range predictions: wrong for their target class
    return pred, target


# -------------------------------------------------------------------------------------- baselines


class LoopPanoptic:
    """panopticapi's rules with a boolean mask per segment and a loop over segment pairs."""

    def __init__(self, num_classes: int) -> None:
        self.tp = np.zeros(num_classes, np.int64)
        self.fp = np.zeros(num_classes, np.int64)
        self.fn = np.zeros(num_classes, np.int64)
        self.iou_sum = np.zeros(num_classes, np.float64)

    def update(self, pred: np.ndarray, pred_segments: list[dict], gt: np.ndarray, gt_segments: list[dict]) -> None:
        gt_masks = {s["id"]: gt == s["id"] for s in gt_segments}
        pred_masks = {s["id"]: pred == s["id"] for s in pred_segments}
        gt_void = ~np.isin(gt, list(gt_masks))
        gt_area = {g: np.count_nonzero(m) for g, m in gt_masks.items()}
        pred_area = {p: np.count_nonzero(m) for p, m in pred_masks.items()}
        pred_void = {p: np.count_nonzero(m & gt_void) for p, m in pred_masks.items()}
        gt_matched, pred_matched = set(), set()
        for g in gt_segments:
            if g["iscrowd"]:
                continue
            for p in pred_segments:
                if p["label_id"] != g["label_id"] or p["id"] in pred_matched:
                    continue
                inter = np.count_nonzero(gt_masks[g["id"]] & pred_masks[p["id"]])
                union = pred_area[p["id"]] + gt_area[g["id"]] - inter - pred_void[p["id"]]
                if inter > 0 and inter / union > 0.5:
                    self.tp[g["label_id"]] += 1
                    self.iou_sum[g["label_id"]] += inter / union
                    gt_matched.add(g["id"])
                    pred_matched.add(p["id"])
                    break
        crowd = {}
        for g in gt_segments:
            if g["id"] in gt_matched:
                continue
            if g["iscrowd"]:
                crowd[g["label_id"]] = crowd.get(g["label_id"], False) | gt_masks[g["id"]]
                continue
            self.fn[g["label_id"]] += 1
        for p in pred_segments:
            if p["id"] in pred_matched or pred_area[p["id"]] == 0:
                continue
            ignored = pred_void[p["id"]]
            if p["label_id"] in crowd:
                ignored += np.count_nonzero(pred_masks[p["id"]] & crowd[p["label_id"]])
            if ignored / pred_area[p["id"]] > 0.5:
                continue
            self.fp[p["label_id"]] += 1


class LoopSemantic:
    """Per-class intersection / target / prediction counts with numpy comparisons."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.inter = np.zeros(num_classes, np.int64)
        self.target = np.zeros(num_classes, np.int64)
        self.pred = np.zeros(num_classes, np.int64)
        self.pixels = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        keep = target != IGNORE
        self.pixels += np.count_nonzero(keep)
        for c in range(self.num_classes):
            t = target == c
            p = (pred == c) & keep
            self.inter[c] += np.count_nonzero(t & p)
            self.target[c] += np.count_nonzero(t)
            self.pred[c] += np.count_nonzero(p)

    def compute(self) -> dict[str, float]:
        union = self.target + self.pred - self.inter
        present = union > 0
        iou = self.inter[present] / union[present]
        return {"mIoU": 100 * iou.mean(), "pixel_accuracy": 100 * self.inter.sum() / self.pixels}


# ------------------------------------------------------------------------------------------- runs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours_panoptic(seeds: list[int], device: torch.device, wide: bool = False) -> tuple[float, PanopticMetric]:
    metric = PanopticMetric(PQ_CLASSES, THINGS, device=device)
    total = 0.0
    for seed in seeds:
        pred, pred_segments, gt, gt_segments = panoptic_pair(seed, wide)
        pred_t, gt_t = torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device)
        _sync(device)
        start = time.perf_counter()
        metric.update(pred_t, pred_segments, gt_t, gt_segments)
        _sync(device)
        total += time.perf_counter() - start
    return total, metric


def time_loop_panoptic(seeds: list[int], wide: bool = False) -> tuple[float, LoopPanoptic]:
    metric = LoopPanoptic(PQ_CLASSES)
    total = 0.0
    for seed in seeds:
        pair = panoptic_pair(seed, wide)
        start = time.perf_counter()
        metric.update(*pair)
        total += time.perf_counter() - start
    return total, metric


def time_ours_semantic(seeds: list[int], device: torch.device) -> tuple[float, SemanticMetric]:
    metric = SemanticMetric(SEM_CLASSES, IGNORE, device=device)
    total = 0.0
    for seed in seeds:
        pred, target = semantic_pair(seed)
        pred_t, target_t = torch.from_numpy(pred).to(device), torch.from_numpy(target).to(device)
        _sync(device)
        start = time.perf_counter()
        metric.update(pred_t, target_t)
        _sync(device)
        total += time.perf_counter() - start
    return total, metric


def time_loop_semantic(seeds: list[int]) -> tuple[float, LoopSemantic]:
    metric = LoopSemantic(SEM_CLASSES)
    total = 0.0
    for seed in seeds:
        pair = semantic_pair(seed)
        start = time.perf_counter()
        metric.update(*pair)
        total += time.perf_counter() - start
    return total, metric


def check_panoptic(ours: PanopticMetric, loop: LoopPanoptic) -> str:
    for name in ("tp", "fp", "fn"):
        if getattr(ours, name).cpu().tolist() != getattr(loop, name).tolist():
            sys.exit(f"PQ mismatch in {name}: {getattr(ours, name).tolist()} vs {getattr(loop, name).tolist()}")
    if not np.allclose(ours.iou_sum.cpu().numpy(), loop.iou_sum, rtol=0, atol=1e-9):
        sys.exit("PQ mismatch in iou_sum")
    result = ours.compute()
    appears = (loop.tp + loop.fp + loop.fn) > 0
    denominator = loop.tp + 0.5 * loop.fp + 0.5 * loop.fn
    loop_pq = 100 * np.mean(loop.iou_sum[appears] / denominator[appears])
    if not math.isclose(result["PQ"], loop_pq, abs_tol=1e-9):
        sys.exit(f"PQ mismatch: {result['PQ']} vs {loop_pq}")
    return (f"PQ {result['PQ']:.4f} (SQ {result['SQ']:.2f}, RQ {result['RQ']:.2f}; tp {int(loop.tp.sum())}, "
            f"fp {int(loop.fp.sum())}, fn {int(loop.fn.sum())}) identical")


def check_semantic(ours: SemanticMetric, loop: LoopSemantic) -> str:
    confusion = ours.confusion.cpu()
    k = SEM_CLASSES
    same = (torch.diagonal(confusion[:, :k]).tolist() == loop.inter.tolist()
            and confusion.sum(1).tolist() == loop.target.tolist()
            and confusion[:, :k].sum(0).tolist() == loop.pred.tolist())
    if not same:
        sys.exit("mIoU mismatch in the per-class counts")
    result, reference = ours.compute(), loop.compute()
    for key in ("mIoU", "pixel_accuracy"):
        if not math.isclose(result[key], reference[key], abs_tol=1e-9):
            sys.exit(f"mismatch in {key}: {result[key]} vs {reference[key]}")
    return f"mIoU {result['mIoU']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f} identical"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=500, help="pairs timed for ours")
    parser.add_argument("--baseline-pairs", type=int, default=500, help="first pairs timed for the loop baselines")
    parser.add_argument("--device", default="cpu", help="device of our metrics' inputs and state")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (the loops use one)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seeds = [args.seed * 1_000_003 + i for i in range(args.pairs)]
    base_seeds = seeds[: min(args.baseline_pairs, args.pairs)]
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, numpy {np.__version__}, ours on {device}; {H}x{W} pairs")

    time_ours_panoptic(seeds[:3], device)  # warm-up
    time_ours_semantic(seeds[:3], device)
    rows, checks = [], []
    for wide in (False, True):
        ours_t, ours = time_ours_panoptic(seeds, device, wide)
        if len(base_seeds) < len(seeds):
            _, ours = time_ours_panoptic(base_seeds, device, wide)
        loop_t, loop = time_loop_panoptic(base_seeds, wide)
        checks.append(("PQ, 24-bit ids: " if wide else "") + check_panoptic(ours, loop))
        rows.append(("PQ, 24-bit ids" if wide else "PQ", len(seeds), ours_t, len(base_seeds), loop_t))
    ours_t, ours_sem = time_ours_semantic(seeds, device)
    if len(base_seeds) < len(seeds):
        _, ours_sem = time_ours_semantic(base_seeds, device)
    loop_t, loop_sem = time_loop_semantic(base_seeds)
    checks.append(check_semantic(ours_sem, loop_sem))
    rows.append(("mIoU, 150 classes", len(seeds), ours_t, len(base_seeds), loop_t))

    print("\n| metric | ours: pairs | ours img/s | ms/img | loop: pairs | loop img/s | ms/img | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n_ours, t_ours, n_loop, t_loop in rows:
        rate_ours, rate_loop = n_ours / t_ours, n_loop / t_loop
        print(f"| {name} | {n_ours} | {rate_ours:.1f} | {1e3 * t_ours / n_ours:.2f} | {n_loop} | {rate_loop:.1f} | "
              f"{1e3 * t_loop / n_loop:.2f} | {rate_ours / rate_loop:.1f}x |")
    print("\nratio = ours img/s / loop img/s (per-image rates)")
    print(f"same results on the first {len(base_seeds)} pairs:")
    for check in checks:
        print(f"  {check}")


if __name__ == "__main__":
    main()
