"""Overlays of segmentations on images.

Colours: each segment is drawn in ``PALETTE[segment_id % len(PALETTE)]``, a fixed table of 256 colours
(golden-ratio hue steps, three saturation and two brightness levels), so the same id always gets the
same colour. Panoptic and instance overlays are keyed by segment/instance id; semantic overlays by class
id (each present class is one segment), so a class keeps its colour across images.

Drawing: segment pixels are blended with their colour (``alpha``), segment borders (a pixel differing
from its right or bottom neighbour, on either side of the edge) are drawn at full opacity, and void
pixels (negative ids) are left untouched. Each labelled segment gets its class name (and score) in a
dark box (`LABEL_BOX_COLOR`) centred on the point of the segment farthest from its border (computed
with one Euclidean distance transform over a downscaled map for all segments at once; segments too
small to survive downscaling use their pixel nearest to their centroid). Colours come from a lookup
table indexed by the segment map, so the cost hardly depends on the number of segments.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = [
    "LABEL_BOX_COLOR",
    "LABEL_TEXT_COLOR",
    "PALETTE",
    "color_for",
    "overlay",
    "overlay_instances",
    "overlay_panoptic",
    "overlay_semantic",
]

LABEL_BOX_COLOR = (20, 20, 20)
LABEL_TEXT_COLOR = (255, 255, 255)
# Longest side of the downscaled map used to place labels.
_LABEL_GRID = 320
_BAND_PIXELS = 1 << 20  # pixels per band of the blend


def _make_palette(n: int = 256) -> np.ndarray:
    golden = (math.sqrt(5) - 1) / 2
    sats, vals = (0.75, 0.55, 0.95), (0.95, 0.75)
    colours = []
    for i in range(n):
        hue = (0.08 + i * golden) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, sats[i % 3], vals[(i // 3) % 2])
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(colours, dtype=np.uint8)


PALETTE: np.ndarray = _make_palette()


def color_for(segment_id: int) -> tuple[int, int, int]:
    """Colour used for ``segment_id``: ``PALETTE[segment_id % 256]`` as an (R, G, B) tuple."""
    r, g, b = PALETTE[int(segment_id) % len(PALETTE)].tolist()
    return r, g, b


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_rgb(image: Any) -> Image.Image:
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.ascontiguousarray(_as_numpy(image).astype(np.uint8, copy=False)))
    return image if image.mode == "RGB" else image.convert("RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # old Pillow or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def _row_bands(height: int, width: int) -> list[tuple[int, int]]:
    """(top, bottom) row ranges of about `_BAND_PIXELS` pixels covering an image."""
    rows = max(1, _BAND_PIXELS // max(1, width))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _compact(seg: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """(H, W) ids -> (a function mapping a block of ids to its index map, ids): index 0 is void (negative ids),
    index j >= 1 is ``ids[j - 1]``."""
    hi = int(seg.max()) if seg.size else -1
    if hi < (1 << 20):
        def shift(block: np.ndarray) -> np.ndarray:
            index = block + 1
            np.maximum(index, 0, out=index)  # every negative id is void
            return index

        return shift, np.arange(hi + 1)
    ids = np.unique(seg)
    ids = ids[ids >= 0]

    def search(block: np.ndarray) -> np.ndarray:
        index = np.searchsorted(ids, block) + 1
        index[block < 0] = 0
        return index

    return search, ids


def _borders(seg: np.ndarray, width: int) -> np.ndarray:
    """Non-void pixels on a segment edge (differing from a 4-neighbour), thickened to ``width`` pixels."""
    edge = np.zeros(seg.shape, dtype=bool)
    horizontal = seg[:, :-1] != seg[:, 1:]
    edge[:, :-1] |= horizontal
    edge[:, 1:] |= horizontal
    vertical = seg[:-1, :] != seg[1:, :]
    edge[:-1, :] |= vertical
    edge[1:, :] |= vertical
    for _ in range(max(width, 1) - 1):
        grown = edge.copy()
        grown[:, :-1] |= edge[:, 1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:-1, :] |= edge[1:, :]
        grown[1:, :] |= edge[:-1, :]
        edge = grown
    edge &= seg >= 0
    return edge


def _index_over(seg: np.ndarray, wanted: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping a block of ``seg`` to indices over ``wanted`` (j + 1 for ``wanted[j]``, 0 = void or
    unlisted): a lookup table over the id range, or a sorted search when the ids are spread too far."""
    lo = min(int(wanted.min()), 0)
    hi = max(int(wanted.max()), int(seg.max()))
    if hi - lo < (1 << 22):
        lut = np.zeros(hi - lo + 1, dtype=np.int64)
        lut[wanted - lo] = np.arange(1, len(wanted) + 1)

        def lookup(block: np.ndarray) -> np.ndarray:
            index = lut[np.clip(block, lo, None) - lo]
            index[block < lo] = 0
            return index

        return lookup
    order = np.argsort(wanted)

    def search(block: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(wanted[order], block).clip(max=len(wanted) - 1)
        return np.where(wanted[order][pos] == block, order[pos] + 1, 0)

    return search


def _label_points(seg: np.ndarray, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(y, x) label anchor per segment id present in ``seg``: the pixel farthest from its border."""
    if not ids or seg.size == 0:
        return {}
    h, w = seg.shape
    wanted = np.asarray(ids, dtype=np.int64)
    index_of = _index_over(seg, wanted)

    step = max(1, math.ceil(max(h, w) / _LABEL_GRID))
    small = index_of(seg[::step, ::step])
    inner = np.ones(small.shape, dtype=bool)
    horizontal = small[:, :-1] != small[:, 1:]
    inner[:, :-1] &= ~horizontal
    inner[:, 1:] &= ~horizontal
    vertical = small[:-1, :] != small[1:, :]
    inner[:-1, :] &= ~vertical
    inner[1:, :] &= ~vertical
    dist = ndimage.distance_transform_edt(np.pad(inner, 1))[1:-1, 1:-1]

    points: dict[int, tuple[int, int]] = {}
    counts = np.bincount(small.ravel(), minlength=len(wanted) + 1)
    present = np.nonzero(counts[1:])[0] + 1
    if len(present):
        positions = ndimage.maximum_position(dist, labels=small, index=present)
        for j, (y, x) in zip(present.tolist(), positions, strict=True):
            points[int(wanted[j - 1])] = (int(y) * step, int(x) * step)

    # Segments lost by downscaling: their pixel nearest to their centroid (their pixels found a band at a time).
    missing = np.ones(len(wanted) + 1, dtype=bool)
    missing[0] = False
    missing[present] = False
    if missing.any():
        found_y, found_x, owners = [], [], []
        for top, bottom in _row_bands(h, w):
            index = index_of(seg[top:bottom])
            band_y, band_x = np.nonzero(missing[index])
            found_y.append(band_y + top)
            found_x.append(band_x)
            owners.append(index[band_y, band_x])
        ys, xs, owner = np.concatenate(found_y), np.concatenate(found_x), np.concatenate(owners)
        if len(ys):
            n = np.bincount(owner, minlength=len(wanted) + 1)
            cy = np.bincount(owner, weights=ys, minlength=len(wanted) + 1) / np.maximum(n, 1)
            cx = np.bincount(owner, weights=xs, minlength=len(wanted) + 1) / np.maximum(n, 1)
            d2 = (ys - cy[owner]) ** 2 + (xs - cx[owner]) ** 2
            order = np.lexsort((d2, owner))
            first = np.ones(len(order), dtype=bool)
            first[1:] = owner[order][1:] != owner[order][:-1]
            for k in order[first].tolist():
                points[int(wanted[owner[k] - 1])] = (int(ys[k]), int(xs[k]))
    return points


def _draw_labels(image: Image.Image, labels: list[tuple[str, tuple[int, int], int]], font_size: int) -> None:
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    w, h = image.size
    pad = max(1, font_size // 5)
    for text, (y, x), segment_id in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        bw, bh = right - left + 2 * pad, bottom - top + 2 * pad
        bx = min(max(x - bw // 2, 0), max(w - bw, 0))
        by = min(max(y - bh // 2, 0), max(h - bh, 0))
        draw.rectangle((bx, by, bx + bw - 1, by + bh - 1), fill=LABEL_BOX_COLOR, outline=color_for(segment_id))
        draw.text((bx + pad - left, by + pad - top), text, fill=LABEL_TEXT_COLOR, font=font)


def overlay(
    image: Any,
    segment_map: Any,
    segments: Sequence[tuple[int, str, float | None]] | None = None,
    alpha: float = 0.5,
    *,
    border_width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """Draw a segment map over ``image`` and return a new RGB image of the same size.

    ``segment_map``: (H, W) integer tensor/array of segment ids, negative = void (left unchanged).
    ``segments``: ``(segment_id, label_name, score or None)`` per segment to label; every non-void
    pixel is coloured, only listed segments get a text label. ``border_width`` defaults to about
    1/500 of the shorter side (at least 1; 0 disables borders); ``font_size`` to about 1/40 of it.
    """
    base = _as_rgb(image)
    seg = _as_numpy(segment_map)
    if seg.ndim != 2:
        raise ValueError(f"segment_map must have shape (H, W), got {seg.shape}")
    if seg.shape != (base.height, base.width):
        raise ValueError(f"segment_map shape {seg.shape} does not match image size (H, W) = {base.height, base.width}")
    seg = seg.astype(np.int64, copy=False)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    short = min(seg.shape) if seg.size else 0
    if border_width is None:
        border_width = max(1, round(short / 500))
    if font_size is None:
        font_size = min(max(10, round(short / 40)), 48)

    index_of, ids = _compact(seg)
    colour_lut = np.zeros((len(ids) + 1, 3), dtype=np.uint16)
    colour_lut[1:] = PALETTE[ids % len(PALETTE)]
    weight_lut = np.full(len(ids) + 1, round(alpha * 256), dtype=np.uint16)
    weight_lut[0] = 0  # void keeps the image exactly

    # a band of rows at a time, so that the temporaries stay a few MB whatever the image size; borders are
    # found with `border_width` rows of the neighbouring bands, which is all a border pixel depends on
    source = np.asarray(base)
    blended = np.empty_like(source)
    height, width = seg.shape

    def blend(band: tuple[int, int], blended: np.ndarray = blended) -> np.ndarray:
        """Blend rows top..bottom - 1 into `blended`; their pixel count per index."""
        top, bottom = band
        index = index_of(seg[top:bottom])
        weight = weight_lut[index]
        if border_width > 0:
            above, below = max(0, top - border_width), min(height, bottom + border_width)
            weight[_borders(seg[above:below], border_width)[top - above:bottom - above]] = 256
        weight = weight[..., None]
        pixels = source[top:bottom].astype(np.uint16)
        blended[top:bottom] = (pixels * (256 - weight) + colour_lut[index] * weight + 128) >> 8
        return np.bincount(index.ravel(), minlength=len(ids) + 1)

    bands = _row_bands(height, width)
    workers = min(len(bands), torch.get_num_threads())
    if workers > 1:  # bands are independent and numpy releases the GIL: on torch's number of threads
        with ThreadPoolExecutor(workers) as pool:
            counts = sum(pool.map(blend, bands))
    else:
        counts = sum(map(blend, bands), np.zeros(len(ids) + 1, dtype=np.int64))
    out = Image.fromarray(blended)
    del blended

    if segments:
        names = {int(sid): (name, score) for sid, name, score in segments}
        points = _label_points(seg, list(names))
        # Largest segments first, so labels of small ones are drawn on top.

        def area(sid: int) -> int:
            pos = int(np.searchsorted(ids, sid))  # ids are sorted
            return int(counts[pos + 1]) if pos < len(ids) and ids[pos] == sid else 0

        labels = []
        for sid, (y, x) in sorted(points.items(), key=lambda item: -area(item[0])):
            name, score = names[sid]
            text = str(name) if score is None else f"{name} {float(score):.2f}"
            labels.append((text, (y, x), sid))
        _draw_labels(out, labels, font_size)
    return out


def overlay_semantic(
    image: Any, semantic_map: Any, id2label: Mapping[int, str] | None = None, alpha: float = 0.5, **kwargs: Any
) -> Image.Image:
    """Overlay of an (H, W) class-id map: each present class is one segment, coloured by class id."""
    sem = _as_numpy(semantic_map).astype(np.int64, copy=False)
    present = np.unique(sem)
    names = id2label or {}
    segments = [(int(c), names.get(int(c), str(int(c))), None) for c in present.tolist() if c >= 0]
    return overlay(image, sem, segments, alpha, **kwargs)


def overlay_panoptic(
    image: Any, result: Mapping[str, Any], id2label: Mapping[int, str] | None = None, alpha: float = 0.5, **kwargs: Any
) -> Image.Image:
    """Overlay of a panoptic post-processing result ``{"segmentation", "segments_info"}``."""
    names = id2label or {}
    segments = [
        (int(s["id"]), names.get(int(s["label_id"]), str(int(s["label_id"]))), s.get("score"))
        for s in result["segments_info"]
    ]
    return overlay(image, result["segmentation"], segments, alpha, **kwargs)


def overlay_instances(
    image: Any,
    masks: Any,
    labels: Sequence[str],
    scores: Sequence[float] | None = None,
    alpha: float = 0.5,
    **kwargs: Any,
) -> Image.Image:
    """Overlay of possibly overlapping (N, H, W) instance masks, labelled ``labels[i]`` (+ ``scores[i]``).

    Instances are painted in order of decreasing area, so where they overlap the smaller one is
    shown; instance ``i`` is coloured ``color_for(i)``. Instances left with no visible pixel get no label.
    ``masks`` may be an `InstanceMasks` (crops: painted from them, no (N, H, W) stack is made).
    """
    from .instance_masks import InstanceMasks

    if not isinstance(masks, InstanceMasks):
        m = _as_numpy(masks)
        if m.ndim != 3:
            raise ValueError(f"masks must have shape (N, H, W), got {m.shape}")
        masks = InstanceMasks.from_dense(torch.from_numpy(np.ascontiguousarray(m)))
    n, h, w = masks.shape
    if len(labels) != n or (scores is not None and len(scores) != n):
        raise ValueError(f"{n} masks but {len(labels)} labels / {None if scores is None else len(scores)} scores")
    areas = np.array(masks.areas(), dtype=np.int64)
    order = [i for i in np.argsort(-areas, kind="stable").tolist() if areas[i] > 0]
    instance_of_rank = np.array([-1, *order], dtype=np.int64)
    seg = instance_of_rank[masks.paint_order(order)]  # the last painted (smallest) instance of each pixel
    segments = [(i, labels[i], None if scores is None else float(scores[i])) for i in range(n)]
    return overlay(image, seg, segments, alpha, **kwargs)
