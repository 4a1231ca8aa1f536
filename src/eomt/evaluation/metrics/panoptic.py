"""Panoptic quality (PQ, SQ, RQ) with panopticapi's `pq_compute` rules, vectorised.

A panoptic image is an integer map of segment ids plus a list of segments. Ground-truth segments are
`{"id", "label_id", "iscrowd"}` (iscrowd optional, default 0), predicted ones `{"id", "label_id"}`
(other keys, such as "score", are ignored); `label_id` is a class index in [0, K). Pixels whose id is
not listed (e.g. -1 as returned by `eomt.processing.postprocess`, or 0 as in COCO's PNGs) are void.

Per image, with areas counted in pixels (eomt.md section 6; panopticapi `pq_compute_single_core`):

- a ground-truth segment g and a predicted segment p *match* when g is not crowd, they have the same
  class, and IoU = |g ∩ p| / (|p| + |g| - |g ∩ p| - |p ∩ void|) > 0.5; the predicted pixels that lie
  on void ground truth are left out of the union (those on crowd segments are not). Such a match is
  unique (IoU > 0.5). Each match is a true positive of its class and adds its IoU to the class's
  IoU sum;
- an unmatched, non-crowd ground-truth segment is a false negative of its class, also when it is
  listed but has no pixels (as in panopticapi, which takes ground-truth areas from the JSON);
  crowd segments are never counted;
- an unmatched predicted segment is a false positive of its class unless more than half of its
  pixels lie on void or on the crowd region of its own class (it is then ignored). As in panopticapi,
  a class has one crowd region per image: its last crowd segment in the ground-truth list order (a
  dict keyed by class, overwritten segment by segment); pixels on its other crowd segments count as
  neither void nor crowd.

Per class: PQ = iou_sum / (tp + fp/2 + fn/2), SQ = iou_sum / tp (0 when tp = 0), RQ = tp / (tp + fp/2
+ fn/2). "All", "Things" and "Stuff" average them over the classes of the group that appear
(tp + fp + fn > 0); "n" is that number of classes.

Differences from panopticapi, all for inputs panopticapi rejects or COCO never has:

- pixels with an unlisted id are void on both sides (panopticapi requires every predicted id to be
  listed and treats only ground-truth id 0 as void);
- a listed predicted segment with no pixels is ignored (panopticapi raises);
- classes that do not appear get NaN per-class values (panopticapi reports 0), and a group with no
  class that appears gets NaN (panopticapi divides by zero).

A predicted or ground-truth `label_id` outside [0, K), or an id listed twice, raises `ValueError`.

Implementation: segment ids are mapped to dense indices (ground truth 0..G-1, predictions 0..P-1,
void G and P) with a lookup table, a hash table or a binary search depending on how widely the ids
spread (see `_dense_index`), one `torch.bincount` over `gt_index * (P + 1) + pred_index` gives the whole
(G + 1, P + 1) intersection table, and the matches, false negatives and false positives are decided
with tensor operations on it; match decisions use exact integer comparisons (2 |g ∩ p| > union).
The state is four (K,) tensors (iou_sum float64; tp, fp, fn int64) that sum across processes.
All reported values are percentages (0-100).
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import torch

from .repeats import ImageContributions
from .semantic import _all_reduce_sum, _distributed, _Scratch

__all__ = ["PanopticMetric"]

# Segment ids -> dense indices: ids spanning less than _LUT_LIMIT values go through a lookup table
# indexed by the id; other ids within +-2^32 through a table indexed by a multiplicative hash of the
# id (chosen so that the listed ids do not collide, and checked against the id); the rest through a
# binary search.
_LUT_LIMIT = 1 << 20
_HASH_MAX_BITS = 20


def _hash_parameters(ids: list[int]) -> tuple[int, int] | None:
    """(multiplier, bits) of a hash ((id * multiplier) >> (32 - bits)) & (2^bits - 1) without collisions
    among `ids`, or None. Needs |id| < 2^32 so that the int64 product cannot overflow."""
    if any(not -(1 << 32) < i < (1 << 32) for i in ids):
        return None
    n = len(ids)
    generator = random.Random(n)
    for bits in range(max(4, (n * n).bit_length() - 1), _HASH_MAX_BITS + 1):
        mask = (1 << bits) - 1
        for _ in range(4):
            multiplier = generator.randrange(1 << 29, 1 << 30) | 1
            if len({((i * multiplier) >> (32 - bits)) & mask for i in ids}) == n:
                return multiplier, bits
    return None


def _dense_index(id_map: torch.Tensor, ids: list[int], scale: int = 1, scratch: _Scratch | None = None,
                 out: str = "index") -> torch.Tensor:
    """`scale` x the position of each pixel's id in `ids`, or `scale` x len(ids) for unlisted ids (void).

    `id_map` is an int64 tensor of any shape; the result has the same shape. With `scratch`, the result
    lives in its buffer named `out` (valid until that buffer is used again) and the temporaries in its
    buffers "work", "work2" and "mask"; without, they are new tensors.
    """
    flat = id_map.reshape(-1)
    n = len(ids)
    device = flat.device
    scratch = scratch if scratch is not None else _Scratch()
    result = scratch.get(out, flat)
    if n == 0:
        return (result.zero_() if result is not None else torch.zeros_like(flat)).view(id_map.shape)
    lo, hi = min(ids), max(ids)
    id_tensor = torch.tensor(ids, dtype=torch.int64, device=device)
    positions = torch.arange(0, n * scale, scale, dtype=torch.int64, device=device)
    if hi - lo < _LUT_LIMIT:
        # ids below lo become lo - 1 and ids above hi become hi + 1, both void in the table.
        low = lo - 1
        lut = torch.full((hi + 2 - low,), n * scale, dtype=torch.int64, device=device)
        lut[id_tensor - low] = positions
        clamped = torch.clamp(flat, low, hi + 1, out=scratch.get("work", flat))
        result = torch.index_select(lut, 0, clamped.sub_(low) if low != 0 else clamped, out=result)
        return result.view(id_map.shape)
    hashing = _hash_parameters(ids)
    if hashing is not None:
        multiplier, bits = hashing
        slot_of_id = ((id_tensor * multiplier) >> (32 - bits)) & ((1 << bits) - 1)
        lut = torch.full((1 << bits,), n * scale, dtype=torch.int64, device=device)
        lut[slot_of_id] = positions
        id_in_slot = torch.full((1 << bits,), lo, dtype=torch.int64, device=device)  # empty slots: any id
        id_in_slot[slot_of_id] = id_tensor
        slot = torch.mul(flat, multiplier, out=scratch.get("work", flat))
        slot.bitwise_right_shift_(32 - bits).bitwise_and_((1 << bits) - 1)
        result = torch.index_select(lut, 0, slot, out=result)
        listed = torch.index_select(id_in_slot, 0, slot, out=scratch.get("work2", flat))
        result.masked_fill_(torch.ne(listed, flat, out=scratch.get("mask", flat, torch.bool)), n * scale)
        return result.view(id_map.shape)
    sorted_ids, order = id_tensor.sort()
    slot = torch.searchsorted(sorted_ids, flat).clamp_(max=n - 1)
    index = torch.where(sorted_ids[slot] == flat, order[slot], n)
    return (index.mul_(scale) if scale != 1 else index).view(id_map.shape)


class PanopticMetric:
    """PQ / SQ / RQ over a stream of panoptic (prediction, ground truth) pairs.

    Args:
        num_classes: K; class indices are 0..K-1.
        thing_classes: the class indices that are "things"; the others are "stuff".
        device: where the state lives (default CPU). Updates are computed on the maps' device and only
            the per-class counts are moved here.

    Distributed use: as `SemanticMetric` — each process updates with its share, all call `sync()`, and
    every process then holds the global counts (idempotent until `reset()`; `update()` after `sync()`
    raises).
    """

    def __init__(self, num_classes: int, thing_classes: Iterable[int] = (),
                 device: torch.device | str | None = None) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        things = sorted({int(c) for c in thing_classes})
        if things and (things[0] < 0 or things[-1] >= self.num_classes):
            raise ValueError(f"thing_classes must lie in [0, {self.num_classes}), got {things}")
        self.thing_classes = things
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._is_thing = torch.zeros(self.num_classes, dtype=torch.bool)
        self._is_thing[things] = True
        k = self.num_classes
        self.iou_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        self.tp = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.fp = torch.zeros(k, dtype=torch.int64, device=self.device)
        self.fn = torch.zeros(k, dtype=torch.int64, device=self.device)
        self._synced = False
        self._scratch = _Scratch()
        self._images = ImageContributions()

    # ----------------------------------------------------------------------------------- state

    _STATE = ("iou_sum", "tp", "fp", "fn")

    def reset(self) -> None:
        self._images.reset()
        for name in self._STATE:
            getattr(self, name).zero_()
        self._synced = False
        self._scratch.clear()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"num_classes": self.num_classes, "thing_classes": list(self.thing_classes)}
        for name in self._STATE:
            state[name] = getattr(self, name).detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_compatible(state)
        for name in self._STATE:
            getattr(self, name).copy_(state[name].to(self.device))
        self._synced = False

    def merge(self, other: PanopticMetric | dict[str, Any]) -> PanopticMetric:
        """Add the counts of `other` (a metric or a `state_dict()`) to this one; returns self."""
        state = other.state_dict() if isinstance(other, PanopticMetric) else other
        self._check_compatible(state)
        for name in self._STATE:
            getattr(self, name).add_(state[name].to(self.device))
        return self

    def _check_compatible(self, state: dict[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes or sorted(state["thing_classes"]) != self.thing_classes:
            raise ValueError("incompatible state: different num_classes or thing_classes")

    def sync(self) -> None:
        """Sum the counts over all processes (torch.distributed); a no-op when it is not initialised."""
        if self._synced:
            return
        state = [getattr(self, name) for name in self._STATE]
        if _distributed():
            self._images.drop_repeats_across_processes(state)
        self._synced = _all_reduce_sum(state)

    # ---------------------------------------------------------------------------------- update

    def _parse(self, segments: Sequence[dict[str, Any]], what: str,
               crowd: bool) -> tuple[list[int], list[int], list[bool]]:
        ids: list[int] = []
        labels: list[int] = []
        iscrowd: list[bool] = []
        for segment in segments:
            ids.append(int(segment["id"]))
            label = int(segment["label_id"])
            if not 0 <= label < self.num_classes:
                raise ValueError(f"{what} segment {segment['id']} has label_id {label}, "
                                 f"outside [0, {self.num_classes})")
            labels.append(label)
            iscrowd.append(bool(segment.get("iscrowd", 0)) if crowd else False)
        if len(set(ids)) != len(ids):
            raise ValueError(f"{what} segments list an id more than once: {ids}")
        return ids, labels, iscrowd

    def update(self, pred_map: torch.Tensor, pred_segments: Sequence[dict[str, Any]],
               gt_map: torch.Tensor, gt_segments: Sequence[dict[str, Any]], image_id: Hashable | None = None) -> None:
        """Accumulate one image: (H, W) integer segment-id maps and their segment lists.

        With `image_id`, an image given again (here or, after `sync()`, in another process) counts once.
        """
        if self._synced:
            raise RuntimeError("update() after sync(): call reset() first")
        if image_id is None:
            return self._update(pred_map, pred_segments, gt_map, gt_segments)
        if image_id in self._images:
            return None
        state = [getattr(self, name) for name in self._STATE]
        before = [t.clone() for t in state]
        self._update(pred_map, pred_segments, gt_map, gt_segments)
        self._images.record(image_id, before, state)
        return None

    @torch.no_grad()
    def _update(self, pred_map: torch.Tensor, pred_segments: Sequence[dict[str, Any]],
                gt_map: torch.Tensor, gt_segments: Sequence[dict[str, Any]]) -> None:
        pred_map = torch.as_tensor(pred_map)
        gt_map = torch.as_tensor(gt_map)
        if pred_map.shape != gt_map.shape or gt_map.dim() != 2:
            raise ValueError(f"expected two (H, W) maps of the same shape, got {tuple(pred_map.shape)} "
                             f"and {tuple(gt_map.shape)}")
        for name, t in (("pred_map", pred_map), ("gt_map", gt_map)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer segment ids, got {t.dtype}")
        gt_ids, gt_labels_list, gt_crowd_list = self._parse(gt_segments, "ground-truth", crowd=True)
        pred_ids, pred_labels_list, _ = self._parse(pred_segments, "predicted", crowd=False)

        device = gt_map.device
        g, p, k = len(gt_ids), len(pred_ids), self.num_classes
        gt_index = _dense_index(gt_map.reshape(-1).long(), gt_ids, p + 1, self._scratch, "gt")
        pred_index = _dense_index(pred_map.to(device).reshape(-1).long(), pred_ids, 1, self._scratch, "pred")
        table = torch.bincount(gt_index.add_(pred_index), minlength=(g + 1) * (p + 1)).view(g + 1, p + 1)

        gt_labels = torch.tensor(gt_labels_list, dtype=torch.int64, device=device)
        pred_labels = torch.tensor(pred_labels_list, dtype=torch.int64, device=device)
        gt_crowd = torch.tensor(gt_crowd_list, dtype=torch.bool, device=device)

        inter = table[:g, :p]                      # (G, P) |g ∩ p|
        gt_area = table[:g].sum(1)                 # (G,)
        pred_area = table[:, :p].sum(0)            # (P,)
        pred_void = table[g, :p]                   # (P,) |p ∩ void|
        same_class = gt_labels[:, None] == pred_labels[None, :]
        union = gt_area[:, None] + (pred_area - pred_void)[None, :] - inter
        match = same_class & ~gt_crowd[:, None] & (2 * inter > union)
        gt_matched = match.any(1)
        pred_matched = match.any(0)
        # each row holds at most one match, so summing a row's IoUs picks the matched one.
        iou = torch.where(match, inter.double() / union.clamp(min=1).double(), 0.0).sum(1)

        matched_labels = gt_labels[gt_matched]
        tp = torch.bincount(matched_labels, minlength=k)
        iou_sum = torch.bincount(matched_labels, weights=iou[gt_matched], minlength=k).double()
        fn = torch.bincount(gt_labels[~gt_matched & ~gt_crowd], minlength=k)
        last_crowd = {label: i for i, (label, crowd) in enumerate(zip(gt_labels_list, gt_crowd_list, strict=True))
                      if crowd}  # panopticapi: one crowd region per class, the last one listed
        crowd_region = torch.zeros(g, dtype=torch.bool, device=device)
        crowd_region[list(last_crowd.values())] = True
        absorbed = pred_void + (inter * (same_class & crowd_region[:, None])).sum(0)
        is_fp = ~pred_matched & (pred_area > 0) & ~(2 * absorbed > pred_area)
        fp = torch.bincount(pred_labels[is_fp], minlength=k)

        self.iou_sum += iou_sum.to(self.device)
        self.tp += tp.to(self.device)
        self.fp += fp.to(self.device)
        self.fn += fn.to(self.device)

    # --------------------------------------------------------------------------------- compute

    def compute(self) -> dict[str, Any]:
        """PQ / SQ / RQ in percent.

        Returns {"PQ", "SQ", "RQ" (= All), "All", "Things", "Stuff" (each {"PQ", "SQ", "RQ", "n"}),
        "per_class_PQ", "per_class_SQ", "per_class_RQ" (lists of K floats, NaN for classes that do
        not appear)}.
        """
        iou_sum = self.iou_sum.detach().to("cpu", torch.float64)
        tp = self.tp.detach().to("cpu", torch.float64)
        fp = self.fp.detach().to("cpu", torch.float64)
        fn = self.fn.detach().to("cpu", torch.float64)
        appears = (tp + fp + fn) > 0
        denominator = (tp + 0.5 * fp + 0.5 * fn).clamp(min=0.5)
        nan = torch.full_like(tp, math.nan)
        pq = torch.where(appears, iou_sum / denominator, nan)
        sq = torch.where(appears, torch.where(tp > 0, iou_sum / tp.clamp(min=1), 0.0), nan)
        rq = torch.where(appears, tp / denominator, nan)

        def group(selected: torch.Tensor) -> dict[str, Any]:
            chosen = selected & appears
            n = int(chosen.sum())
            if n == 0:
                return {"PQ": math.nan, "SQ": math.nan, "RQ": math.nan, "n": 0}
            return {"PQ": 100.0 * float(pq[chosen].mean()), "SQ": 100.0 * float(sq[chosen].mean()),
                    "RQ": 100.0 * float(rq[chosen].mean()), "n": n}

        everything = group(torch.ones_like(appears))
        return {
            "PQ": everything["PQ"], "SQ": everything["SQ"], "RQ": everything["RQ"],
            "All": everything, "Things": group(self._is_thing), "Stuff": group(~self._is_thing),
            "per_class_PQ": [100.0 * v for v in pq.tolist()],
            "per_class_SQ": [100.0 * v for v in sq.tolist()],
            "per_class_RQ": [100.0 * v for v in rq.tolist()],
        }
