"""Size arithmetic shared by pre- and post-processing.

The rules are those of transformers 5.x (and so of the published preprocessor configs): sizes are
truncated with `int`, as in transformers 5.x; the authors' research code rounds instead, which
can make the long side one pixel longer for some aspect ratios.
"""

from __future__ import annotations

import math


def resized_size(height: int, width: int, shortest_edge: int, longest_edge: int | None = None) -> tuple[int, int]:
    """Output (height, width) of the aspect-preserving resize.

    With only `shortest_edge`, the short side becomes `shortest_edge` (semantic, sliding window).
    With both, the short side becomes `shortest_edge` unless that makes the long side exceed
    `longest_edge`, in which case the long side becomes `longest_edge` (padded inference uses
    shortest = longest = S, i.e. "long side = S"). The short side is never below 1 pixel (transformers' rule
    makes it 0 for an aspect ratio beyond 2 x longest_edge, and resizing to 0 rows fails).
    """
    if longest_edge is None:
        short, long = min(height, width), max(height, width)
        new_short, new_long = shortest_edge, int(shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    size, raw = shortest_edge, None
    short, long = float(min(height, width)), float(max(height, width))
    if long / short * size > longest_edge:
        raw = longest_edge * short / long
        size = max(1, int(round(raw)))  # an extreme aspect ratio (10000x9 into 640) keeps one row, not zero
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    scale_from = raw if raw is not None else size
    if width < height:
        return int(scale_from * height / width), size
    return size, int(scale_from * width / height)


def window_starts(long_side: int, window: int) -> list[int]:
    """Starts of the n = ceil(L / S) overlapping windows of size S covering a side of length L."""
    count = math.ceil(long_side / window)
    overlap = (count * window - long_side) / (count - 1) if count > 1 else 0
    return [int(i * (window - overlap)) for i in range(count)]


def size_pair(size: dict[str, int]) -> tuple[int, int]:
    """(height, width) of the network input a size dict describes: shortest_edge x (longest_edge or shortest)."""
    return size["shortest_edge"], size.get("longest_edge") or size["shortest_edge"]
