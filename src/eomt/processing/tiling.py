"""Tiled inference at native resolution: window planning and merging the windows' results.

An image is covered by overlapping windows of `tile` x `tile` image pixels (the last window in each
direction aligned to the image edge; a side no longer than `tile` is one window). Each window is
segmented like a model-size input elsewhere (the predictor runs the model); this module plans the windows
and merges their results into one result at full resolution, in plain torch:

- semantic: per-pixel class scores averaged over the windows covering the pixel. The sums live in the
  cells between window borders, and a cell is turned into class ids (and freed) as soon as its last window
  has been added, so that only the overlap strips around the current window are held;
- instance: masks kept as image-coordinate crops; parts of one object in two windows (same class, mask
  IoU >= `MATCH_IOU` on the strip both windows see, or on the two pixel lines along a shared border when
  windows abut) are merged, which also removes the duplicates of objects inside an overlap;
- panoptic: things as instance, stuff merged per class over all windows; each pixel takes the segment of
  the window in which it lies most centrally, so that the id map is one partition.

"Most centrally": a pixel's owner window maximises its distance to the window's borders that lie inside the
image (image edges do not count). Windows form a grid, so the owner is the most central row span and the
most central column span, computed per axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..outputs.instance_masks import InstanceMasks, pack_mask, tight_crop, unpack_mask
from . import postprocess
from .sizes import resized_size

MATCH_IOU = 0.5  # parts of one object: same class and at least this mask IoU on the shared strip
MAX_OVERLAP = 0.9
DEFAULT_OVERLAP = 0.25
_BAND_ROWS = 256  # rows of full-width work at a time, so that int64 temporaries stay small on huge images

__all__ = ["DEFAULT_OVERLAP", "MATCH_IOU", "InstanceMerger", "PanopticMerger", "SemanticMerger", "TilePlan",
           "Window", "check_tiling", "plan_windows"]


def check_tiling(tile, overlap, patch_size: int | None = None) -> None:
    """ValueError naming the value unless `tile` is a whole number of pixels (at least the patch size) and
    `overlap` a fraction in [0, 0.9)."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a whole number of image pixels >= 1, got {tile!r}")
    if patch_size is not None and tile < patch_size:
        raise ValueError(f"tile {tile} is smaller than the model's patch size {patch_size}: a window must hold "
                         "at least one patch")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not (
            math.isfinite(overlap) and 0.0 <= overlap < MAX_OVERLAP):
        raise ValueError(f"tile overlap must be a fraction in [0, {MAX_OVERLAP}), got {overlap!r}")


def _spans(length: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """(start, end) of the windows along one side: every `round(tile * (1 - overlap))` pixels, the last one
    ending at the edge; a side no longer than `tile` is one span."""
    if length <= tile:
        return [(0, length)]
    stride = max(1, round(tile * (1 - overlap)))
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return [(s, s + tile) for s in starts]


def _owners(spans: list[tuple[int, int]], length: int) -> Tensor:
    """(length,) index of the span in which each position lies most centrally (first one on ties)."""
    position = torch.arange(length, dtype=torch.float64)
    inf = torch.full_like(position, math.inf)
    central = []
    for start, end in spans:
        to_start = position - start if start > 0 else inf
        to_end = (end - 1) - position if end < length else inf
        depth = torch.minimum(to_start, to_end)
        central.append(torch.where((position >= start) & (position < end), depth, torch.full_like(depth, -1.0)))
    return torch.stack(central).argmax(0)


@dataclass(frozen=True)
class Window:
    """One window: its index in the plan (row-major), its grid row and column, its pixels [top, bottom) x
    [left, right) in image coordinates."""

    index: int
    row: int
    col: int
    top: int
    left: int
    bottom: int
    right: int

    @property
    def hw(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left


@dataclass
class TilePlan:
    """The windows covering a (height, width) image, row-major, and which window owns each pixel."""

    height: int
    width: int
    rows: list[tuple[int, int]]
    cols: list[tuple[int, int]]
    windows: list[Window] = field(init=False)
    row_owner: Tensor = field(init=False, repr=False)
    col_owner: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.windows = [Window(r * len(self.cols) + c, r, c, top, left, bottom, right)
                        for r, (top, bottom) in enumerate(self.rows) for c, (left, right) in enumerate(self.cols)]
        self.row_owner = _owners(self.rows, self.height)
        self.col_owner = _owners(self.cols, self.width)

    def owner(self, top: int, left: int, bottom: int, right: int) -> Tensor:
        """(bottom - top, right - left) int64: the index of the window owning each pixel of the box."""
        return self.row_owner[top:bottom, None] * len(self.cols) + self.col_owner[None, left:right]

    def owned(self, window: Window) -> tuple[int, int, int, int]:
        """The box (top, left, bottom, right) of the pixels `window` owns (empty when it owns none)."""
        rows = (self.row_owner == window.row).nonzero().flatten()
        cols = (self.col_owner == window.col).nonzero().flatten()
        if rows.numel() == 0 or cols.numel() == 0:
            return window.top, window.left, window.top, window.left
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def plan_windows(height: int, width: int, tile: int, overlap: float = DEFAULT_OVERLAP) -> TilePlan:
    """The overlapping `tile` x `tile` windows covering a (height, width) image."""
    check_tiling(tile, overlap)
    return TilePlan(height, width, _spans(height, tile, overlap), _spans(width, tile, overlap))


def _input_crop(window_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) a window occupies in the padded network input (long side = input size, zero padding)."""
    return resized_size(*window_hw, input_hw[0], input_hw[1])


# -------------------------------------------------------------------------------------- semantic


def window_class_scores(mask_logits: Tensor, class_logits: Tensor, input_hw: tuple[int, int],
                        window_hw: tuple[int, int]) -> Tensor:
    """(K, h, w) per-pixel class scores of one window at its full resolution.

    mask logits (Q, h', w') -> bilinear to the network input size, crop of the region the window occupies,
    sigmoid; scores = softmax(class)[:, :-1]^T @ probabilities, resized bilinearly to the window's size (the
    arithmetic of the sliding-window semantic post-processing for one window).
    """
    crop_h, crop_w = _input_crop(window_hw, input_hw)
    probs = mask_logits.float()[None]
    if tuple(probs.shape[-2:]) != tuple(input_hw):
        probs = F.interpolate(probs, size=input_hw, mode="bilinear", align_corners=False)
    probs = probs[0]
    if (crop_h, crop_w) != tuple(input_hw):
        probs = probs[:, :crop_h, :crop_w]
    probs = probs.sigmoid()
    weights = class_logits.float().softmax(-1)[:, :-1]
    scores = (weights.T @ probs.flatten(1)).view(weights.shape[1], crop_h, crop_w)
    if (crop_h, crop_w) != tuple(window_hw):
        scores = F.interpolate(scores[None], size=window_hw, mode="bilinear", align_corners=False)[0]
    return scores


def _cuts(spans: list[tuple[int, int]]) -> list[int]:
    return sorted({s for s, _ in spans} | {e for _, e in spans})


class SemanticMerger:
    """Sums window class scores per cell (the rectangles between window borders); a cell's mean over its
    windows becomes class ids (first maximum) as soon as its last window is in, and its sums are freed."""

    def __init__(self, plan: TilePlan, input_hw: tuple[int, int]) -> None:
        self.plan, self.input_hw = plan, input_hw
        self.ycuts, self.xcuts = _cuts(plan.rows), _cuts(plan.cols)
        self.labels = torch.zeros((plan.height, plan.width), dtype=torch.long)
        self._sums: dict[tuple[int, int], list] = {}
        self._row_cover, self._col_cover = self._cover(self.ycuts, plan.rows), self._cover(self.xcuts, plan.cols)

    @staticmethod
    def _cover(cuts: list[int], spans: list[tuple[int, int]]) -> list[int]:
        return [sum(1 for s, e in spans if s <= a and b <= e) for a, b in zip(cuts, cuts[1:], strict=False)]

    def add(self, windows: Sequence[Window], mask_logits: Tensor, class_logits: Tensor) -> None:
        """Add a batch of windows' outputs (mask logits (B, Q, h, w), class logits (B, Q, K + 1))."""
        for i, window in enumerate(windows):
            scores = window_class_scores(mask_logits[i], class_logits[i], self.input_hw, window.hw)
            for a in range(self.ycuts.index(window.top), self.ycuts.index(window.bottom)):
                for b in range(self.xcuts.index(window.left), self.xcuts.index(window.right)):
                    y0, y1, x0, x1 = self.ycuts[a], self.ycuts[a + 1], self.xcuts[b], self.xcuts[b + 1]
                    part = scores[:, y0 - window.top:y1 - window.top, x0 - window.left:x1 - window.left]
                    entry = self._sums.get((a, b))
                    if entry is None:
                        entry = self._sums[(a, b)] = [part.clone(), 0]
                    else:
                        entry[0].add_(part)
                    entry[1] += 1
                    count = self._row_cover[a] * self._col_cover[b]
                    if entry[1] == count:
                        self.labels[y0:y1, x0:x1] = (entry[0] / count).argmax(0).cpu()
                        del self._sums[(a, b)]

    def result(self) -> Tensor:
        """(H, W) int64 class ids."""
        if self._sums:
            raise RuntimeError(f"{len(self._sums)} cells still wait for windows: not every window was added")
        return self.labels


# ------------------------------------------------------------------------------ instance / panoptic


@dataclass
class Instance:
    """A segment in image coordinates: its class, score and a tight crop of its mask at (top, left), kept
    bit-packed (instance segments overlap: a window of 640 x 640 may hold a hundred of them)."""

    label: int
    score: float
    top: int
    left: int
    shape: tuple[int, int]  # (h, w) of the crop
    packed: np.ndarray  # `pack_mask` of the crop
    area: int

    @property
    def mask(self) -> Tensor:
        """The (h, w) bool crop."""
        return torch.from_numpy(unpack_mask(self.packed, self.shape))

    @property
    def bottom(self) -> int:
        return self.top + self.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.shape[1]


@dataclass
class Part(Instance):
    """One window's segment, before merging with the other windows' parts of the same object."""

    window: int = -1
    key: int = -1  # panoptic: the part's index among all windows' segments


def _part(window: Window, label: int, score: float, mask: Tensor) -> Part | None:
    """The part of a (h, w) window mask, or None when the mask is empty."""
    y0, x0, crop = tight_crop(mask)
    if crop.numel() == 0:
        return None
    return Part(int(label), float(score), window.top + y0, window.left + x0, (int(crop.shape[0]), int(crop.shape[1])),
                pack_mask(crop), int(crop.sum()), window=window.index)


def _in_box(part: Part, box: tuple[int, int, int, int]) -> Tensor:
    """The part's mask inside box (top, left, bottom, right), as a box-sized bool tensor."""
    top, left, bottom, right = box
    out = torch.zeros((bottom - top, right - left), dtype=torch.bool)
    y0, y1, x0, x1 = max(top, part.top), min(bottom, part.bottom), max(left, part.left), min(right, part.right)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = part.mask[y0 - part.top:y1 - part.top,
                                                                 x0 - part.left:x1 - part.left]
    return out


def _touches(part: Part, box: tuple[int, int, int, int]) -> bool:
    top, left, bottom, right = box
    return part.top < bottom and top < part.bottom and part.left < right and left < part.right


def _strips(a: Window, b: Window) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """Where windows a and b see the same object: their common pixels (the same box twice) when they overlap;
    when they abut, the pixel line of each along the shared border; None when they only meet at a corner."""
    top, bottom = max(a.top, b.top), min(a.bottom, b.bottom)
    left, right = max(a.left, b.left), min(a.right, b.right)
    if bottom > top and right > left:
        return (top, left, bottom, right), (top, left, bottom, right)
    if bottom > top and right == left:  # side by side, border at column `left`
        inner = (top, left - 1, bottom, left), (top, left, bottom, left + 1)
        return inner if a.right == left else inner[::-1]
    if right > left and bottom == top:  # one above the other, border at row `top`
        inner = (top - 1, left, top, right), (top, left, top + 1, right)
        return inner if a.bottom == top else inner[::-1]
    return None


def _related(spans: list[tuple[int, int]]) -> list[list[int]]:
    """For each span, the spans that overlap or abut it (itself included)."""
    return [[j for j, (s, e) in enumerate(spans) if s <= end and start <= e] for start, end in spans]


def _matches(plan: TilePlan, parts: list[Part]) -> list[tuple[int, int]]:
    """Pairs of part indices (from two windows) that are one object: same class, mask IoU >= MATCH_IOU on the
    windows' shared strip."""
    by_window: dict[int, list[int]] = {}
    for index, part in enumerate(parts):
        by_window.setdefault(part.window, []).append(index)
    rows, cols = _related(plan.rows), _related(plan.cols)
    pairs = []
    for a in plan.windows:
        for b in (plan.windows[r * len(plan.cols) + c] for r in rows[a.row] for c in cols[a.col]):
            strips = _strips(a, b) if b.index > a.index else None
            if strips is None:
                continue
            near_a = [i for i in by_window.get(a.index, []) if _touches(parts[i], strips[0])]
            near_b = [j for j in by_window.get(b.index, []) if _touches(parts[j], strips[1])]
            for label in {parts[i].label for i in near_a} & {parts[j].label for j in near_b}:
                ids_a = [i for i in near_a if parts[i].label == label]
                ids_b = [j for j in near_b if parts[j].label == label]
                pairs += _strip_matches(parts, ids_a, ids_b, strips)
    return pairs


def _strip_matches(parts: list[Part], ids_a: list[int], ids_b: list[int],
                   strips: tuple[tuple[int, int, int, int], tuple[int, int, int, int]]) -> list[tuple[int, int]]:
    """The pairs (i in ids_a, j in ids_b) whose masks have IoU >= MATCH_IOU on their strips: each part's
    strip mask is unpacked once, and the pixel counts of all pairs come from one product (of 0/1 values: the
    sums are whole numbers, exact in float32 below 2^24 pixels, in float64 above)."""
    pixels = (strips[0][2] - strips[0][0]) * (strips[0][3] - strips[0][1])
    dtype = torch.float32 if pixels < 2 ** 24 else torch.float64
    mask_b = torch.stack([_in_box(parts[j], strips[1]).flatten() for j in ids_b]).to(dtype)
    area_b = mask_b.sum(1)
    rows = max(1, (64 << 20) // (pixels * mask_b.element_size()))  # parts of a at a time: 64 MB of their masks
    pairs = []
    for start in range(0, len(ids_a), rows):
        chunk = ids_a[start:start + rows]
        mask_a = torch.stack([_in_box(parts[i], strips[0]).flatten() for i in chunk]).to(dtype)
        common = mask_a @ mask_b.T
        union = mask_a.sum(1)[:, None] + area_b[None, :] - common
        matched = (union > 0) & (common.double() >= MATCH_IOU * union.double())
        pairs += [(chunk[i], ids_b[j]) for i, j in matched.nonzero().tolist()]
    return pairs


def _groups(count: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected groups of 0..count-1 under `pairs`, each sorted, ordered by their first member."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _mean_score(parts: list[Part]) -> float:
    """The parts' scores weighted by their areas (a single part keeps its score)."""
    if len(parts) == 1:
        return parts[0].score
    return round(sum(p.score * p.area for p in parts) / sum(p.area for p in parts), 6)


def _merge_instance(plan: TilePlan, parts: list[Part]) -> Instance | None:
    """One object from its parts: each pixel is decided by the part of the window owning it, or, where that
    window holds no part of the object, by any part covering it (a part alone is the object as it is)."""
    if len(parts) == 1:
        p = parts[0]
        return Instance(p.label, p.score, p.top, p.left, p.shape, p.packed, p.area)
    top, left = min(p.top for p in parts), min(p.left for p in parts)
    bottom, right = max(p.bottom for p in parts), max(p.right for p in parts)
    mask = torch.zeros((bottom - top, right - left), dtype=torch.bool)
    windows = torch.tensor(sorted({p.window for p in parts}))
    for p in parts:
        owner = plan.owner(p.top, p.left, p.bottom, p.right)
        decides = (owner == p.window) | ~torch.isin(owner, windows)
        mask[p.top - top:p.bottom - top, p.left - left:p.right - left] |= p.mask & decides
    y0, x0, crop = tight_crop(mask)
    if crop.numel() == 0:
        return None
    return Instance(parts[0].label, _mean_score(parts), top + y0, left + x0, (int(crop.shape[0]), int(crop.shape[1])),
                    pack_mask(crop), int(crop.sum()))


def instance_post(instances: list[Instance], image_hw: tuple[int, int]) -> dict:
    """The instance post-processing dict ("segmentation", "segments_info", "masks") of merged instances, as
    the predictor's result is built from it; "masks" are the instances' crops (`InstanceMasks`), no stack."""
    masks = InstanceMasks(*image_hw)
    for inst in instances:
        masks.add_packed(inst.packed, inst.shape, inst.area, inst.top, inst.left)
    info = [{"id": i, "label_id": inst.label, "score": inst.score} for i, inst in enumerate(instances)]
    # the last instance covering a pixel, as untiled results
    return {"segmentation": masks.last_covering(), "segments_info": info, "masks": masks}


class InstanceMerger:
    """Instances of every window (post-processed as a padded model input each) merged across windows.

    With mode "topk" (AP evaluation) each window gives its top `top_k` and the image keeps the `top_k`
    highest-scoring merged instances (empty window masks are dropped: they have no place in the image).
    """

    def __init__(self, plan: TilePlan, size: dict[str, int], threshold: float = 0.8, mode: str = "threshold",
                 top_k: int = 100) -> None:
        self.plan, self.size = plan, size
        self.options = dict(threshold=threshold, mode=mode, top_k=top_k)
        self.parts: list[Part] = []

    def add(self, windows: Sequence[Window], mask_logits: Tensor, class_logits: Tensor) -> None:
        posts = postprocess.instance_masks(mask_logits, class_logits, [w.hw for w in windows], self.size,
                                           **self.options)
        for window, (masks, segments) in zip(windows, posts, strict=True):
            for info, (top, left), shape, packed, area in zip(segments, masks.offsets, masks.shapes, masks.packed,
                                                               masks.areas(), strict=True):
                if area:  # an empty window mask (topk) has no place in the image
                    self.parts.append(Part(int(info["label_id"]), float(info["score"]), window.top + top,
                                           window.left + left, shape, packed, area, window=window.index))

    def instances(self) -> list[Instance]:
        """The merged instances, in the order of their first part (window by window), or by score for topk."""
        merged = [_merge_instance(self.plan, [self.parts[i] for i in group])
                  for group in _groups(len(self.parts), _matches(self.plan, self.parts))]
        merged = [m for m in merged if m is not None]
        if self.options["mode"] == "topk":
            merged = sorted(merged, key=lambda m: -m.score)[:self.options["top_k"]]
        return merged

    def result(self) -> dict:
        return instance_post(self.instances(), (self.plan.height, self.plan.width))


class PanopticMerger:
    """Panoptic windows merged into one id map: every pixel takes the segment of the window owning it; thing
    segments that are one object (see `_matches`) and all stuff segments of one class share an id."""

    def __init__(self, plan: TilePlan, size: dict[str, int], threshold: float = 0.8, mask_threshold: float = 0.5,
                 overlap_mask_area_threshold: float = 0.8, stuff_classes: Sequence[int] | None = None) -> None:
        self.plan, self.size = plan, size
        self.options = dict(threshold=threshold, mask_threshold=mask_threshold,
                            overlap_mask_area_threshold=overlap_mask_area_threshold, stuff_classes=stuff_classes)
        self.stuff = set(stuff_classes or [])
        self.keys = torch.full((plan.height, plan.width), -1, dtype=torch.int32)  # owner window's segment key
        self.segments: list[Part] = []  # every window segment, by key (a stuff one holds no mask)

    def add(self, windows: Sequence[Window], mask_logits: Tensor, class_logits: Tensor) -> None:
        posts = postprocess.panoptic_segmentation(mask_logits, class_logits, [w.hw for w in windows], self.size,
                                                  **self.options)
        for window, post in zip(windows, posts, strict=True):
            local = post["segmentation"].cpu()
            lookup = torch.full((len(post["segments_info"]) + 1,), -1, dtype=torch.int32)  # local id + 1 -> key
            for info in post["segments_info"]:
                key = len(self.segments)
                lookup[info["id"] + 1] = key
                mask = local == info["id"]
                if info["label_id"] in self.stuff:
                    no_mask = np.zeros(0, dtype=np.uint8)
                    part = Part(info["label_id"], info["score"], 0, 0, (0, 0), no_mask, int(mask.sum()),
                                window=window.index)
                else:
                    part = _part(window, info["label_id"], info["score"], mask)
                part.key = key
                self.segments.append(part)
            top, left, bottom, right = self.plan.owned(window)
            owned = local[top - window.top:bottom - window.top, left - window.left:right - window.left]
            self.keys[top:bottom, left:right] = lookup[owned + 1]

    def result(self) -> dict:
        """{"segmentation": (H, W) int64 segment ids (-1 void), "segments_info": [{id, label_id, score}]}."""
        things = [p for p in self.segments if p.label not in self.stuff]
        pairs = [(things[i].key, things[j].key) for i, j in _matches(self.plan, things)]
        first_of_stuff: dict[int, int] = {}
        for part in self.segments:
            if part.label in self.stuff:
                pairs.append((first_of_stuff.setdefault(part.label, part.key), part.key))
        shown = torch.zeros(len(self.segments) + 1, dtype=torch.long)  # pixels per key (+ 1), a band at a time
        for rows in self.keys.split(_BAND_ROWS):
            shown += torch.bincount(rows.flatten().long() + 1, minlength=len(self.segments) + 1)
        shown = shown[1:]
        lookup = torch.full((len(self.segments) + 1,), -1, dtype=torch.long)  # key + 1 -> segment id
        info = []
        for group in _groups(len(self.segments), pairs):
            if int(shown[group].sum()) == 0:  # every pixel went to other windows' segments
                continue
            parts = [self.segments[k] for k in group]
            lookup[torch.tensor(group) + 1] = len(info)
            info.append({"id": len(info), "label_id": parts[0].label, "score": _mean_score(parts)})
        segmentation = torch.empty(self.keys.shape, dtype=torch.long)
        for top in range(0, self.plan.height, _BAND_ROWS):
            segmentation[top:top + _BAND_ROWS] = lookup[self.keys[top:top + _BAND_ROWS].long() + 1]
        return {"segmentation": segmentation, "segments_info": info}
