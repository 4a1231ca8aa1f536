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

import torch
import torch.nn.functional as F
from torch import Tensor

from .sizes import resized_size

MATCH_IOU = 0.5  # parts of one object: same class and at least this mask IoU on the shared strip
MAX_OVERLAP = 0.9
DEFAULT_OVERLAP = 0.25

__all__ = ["DEFAULT_OVERLAP", "MATCH_IOU", "SemanticMerger", "TilePlan",
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
