"""A small synthetic panoptic dataset, written in the COCO panoptic layout, for an offline quick start and tests.

Each image has a textured background of "stuff" (sky, grass, water: horizontal bands with wavy borders or
Voronoi-like cells) and 1-4 "thing" objects (circle, square, triangle, star) of random size, position and
rotation that may occlude one another. Every class has its own colour family and texture, so that the task
is learnable by a tiny ViT in a few CPU minutes:

========  =====  ========  ======================================================
class id  name   isthing   appearance
========  =====  ========  ======================================================
0 (1)     circle     1     red disc
1 (2)     square     1     yellow square, rotated
2 (3)     triangle   1     magenta equilateral triangle, rotated
3 (4)     star       1     near-white five-pointed star, rotated
4 (5)     sky        0     light blue, brighter towards the top, smooth
5 (6)     grass      0     green, grainy
6 (7)     water      0     dark blue with horizontal waves
========  =====  ========  ======================================================

(category ids in brackets; contiguous class ids follow them, things first.)

Layout written under ``root`` (read back by ``open_dataset("coco_panoptic", root, "train")`` / ``"val"``)::

    annotations/panoptic_train2017.json    annotations/panoptic_val2017.json
    annotations/panoptic_train2017/*.png   annotations/panoptic_val2017/*.png   (segment ids, R + 256 G + 256^2 B)
    train2017/*.png                        val2017/*.png                        (the RGB images)

Images are PNG (lossless), so everything is bit-exact for a given seed. Image ``i`` of a split depends
only on ``(seed, split, i)``: the first images are the same whatever ``num_train`` / ``num_val`` are.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eomt.outputs.coco_formats import segment_stats

__all__ = [
    "STUFF_CLASSES",
    "SYNTHETIC_CATEGORIES",
    "THING_CLASSES",
    "make_synthetic_dataset",
    "render_synthetic_image",
]

THING_CLASSES = ("circle", "square", "triangle", "star")
STUFF_CLASSES = ("sky", "grass", "water")

# Base colours (RGB); things get a per-instance jitter, stuff a smaller per-image one.
_THING_COLOURS = {
    "circle": (215, 45, 40),
    "square": (235, 205, 40),
    "triangle": (190, 55, 205),
    "star": (240, 240, 235),
}
_STUFF_COLOURS = {
    "sky": (140, 190, 235),
    "grass": (65, 140, 50),
    "water": (30, 65, 135),
}

SYNTHETIC_CATEGORIES: list[dict[str, Any]] = [
    {"id": i + 1, "name": name, "isthing": 1, "supercategory": "shape", "color": list(_THING_COLOURS[name])}
    for i, name in enumerate(THING_CLASSES)
] + [
    {"id": len(THING_CLASSES) + i + 1, "name": name, "isthing": 0, "supercategory": "background",
     "color": list(_STUFF_COLOURS[name])}
    for i, name in enumerate(STUFF_CLASSES)
]
_CATEGORY_ID = {c["name"]: c["id"] for c in SYNTHETIC_CATEGORIES}

SPLITS = ("train", "val")
MIN_SIDE = 16
THING_SIZE = (0.15, 0.40)  # object size (diameter / side) as a fraction of the shorter image side
MAX_THINGS = 4
THING_JITTER = 25  # per-channel uniform jitter of a thing's colour
STUFF_JITTER = 10  # per-channel uniform jitter of a stuff colour, per image


def _min_area(height: int, width: int) -> int:
    """Segments with fewer visible pixels are dropped: 30 at 128 x 128, less on very small images."""
    return max(4, min(30, height * width // 200))


# --------------------------------------------------------------------------------------------- shapes


def _polygon_mask(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Pixels (centres ``x``, ``y``) inside the closed polygon ``vertices`` (V, 2), even-odd rule."""
    inside = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_cross = x1 + (y - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (x < x_cross)
    return inside


def _regular_vertices(cx: float, cy: float, radii: list[float], angle: float) -> np.ndarray:
    """Vertices at the given radii (cycled), evenly spaced in angle, starting at ``angle``."""
    n = len(radii)
    t = angle + 2 * math.pi * np.arange(n) / n
    r = np.asarray(radii)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _shape_mask(shape: str, cx: float, cy: float, size: float, angle: float, x: np.ndarray,
                y: np.ndarray) -> np.ndarray:
    """The (H, W) mask of one object; ``size`` is a circle's diameter, a square's side or 0.8 times the
    diameter of the circle around a triangle or star (these being thinner, they are drawn larger)."""
    r = size / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return _polygon_mask(x, y, _regular_vertices(cx, cy, [r * math.sqrt(2)] * 4, angle))
    if shape == "triangle":
        return _polygon_mask(x, y, _regular_vertices(cx, cy, [1.25 * r] * 3, angle))
    if shape == "star":
        return _polygon_mask(x, y, _regular_vertices(cx, cy, [1.25 * r, 0.55 * r] * 5, angle))
    raise ValueError(f"unknown shape {shape!r}")


# ---------------------------------------------------------------------------------------------- stuff


def _stuff_layout(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, height: int,
                  width: int) -> np.ndarray:
    """(H, W) stuff class index (into STUFF_CLASSES): wavy horizontal bands or Voronoi-like cells."""
    k = len(STUFF_CLASSES)
    if rng.random() < 0.6:  # bands, neighbours of different classes
        n = int(rng.integers(2, 4))
        classes = [int(rng.integers(k))]
        for _ in range(n - 1):
            classes.append((classes[-1] + int(rng.integers(1, k))) % k)
        cuts = np.sort(rng.uniform(0.2, 0.8, n - 1)) * height
        layout = np.full((height, width), classes[0], dtype=np.int64)
        for cut, cls in zip(cuts, classes[1:], strict=True):
            amplitude = rng.uniform(0.0, 0.06) * height
            period = rng.uniform(0.5, 1.5) * width
            border = cut + amplitude * np.sin(2 * math.pi * x / period + rng.uniform(0, 2 * math.pi))
            layout[np.broadcast_to(y >= border, layout.shape)] = cls
        return layout
    n = int(rng.integers(2, 5))  # cells: nearest of n seeds, distances stretched per seed
    seeds = rng.uniform(0, 1, (n, 2)) * [width, height]
    stretch = rng.uniform(0.7, 1.4, (n, 2))
    classes = rng.permutation(np.resize(rng.permutation(k), n))
    dist = np.stack([((x - sx) * ax) ** 2 + ((y - sy) * ay) ** 2
                     for (sx, sy), (ax, ay) in zip(seeds, stretch, strict=True)])
    return classes[dist.argmin(axis=0)]


def _stuff_texture(rng: np.random.Generator, name: str, x: np.ndarray, y: np.ndarray, height: int,
                   width: int) -> np.ndarray:
    """(H, W, 3) float image of one stuff class over the whole frame."""
    colour = np.asarray(_STUFF_COLOURS[name], dtype=np.float32) + rng.uniform(-STUFF_JITTER, STUFF_JITTER, 3)
    if name == "sky":  # smooth vertical gradient, brighter at the top
        shade = 25.0 * (0.5 - y / height) + rng.normal(0.0, 2.0, (height, width))
    elif name == "grass":  # grainy, with short vertical blades
        grain = rng.normal(0.0, 1.0, (height // 2 + 1, width)).repeat(2, axis=0)[:height]
        shade = 12.0 * grain + rng.normal(0.0, 5.0, (height, width))
    elif name == "water":  # horizontal waves
        period = rng.uniform(0.06, 0.12) * height
        wobble = 2.0 * np.sin(2 * math.pi * x / (rng.uniform(0.3, 0.6) * width) + rng.uniform(0, 2 * math.pi))
        shade = 18.0 * np.sin(2 * math.pi * (y + wobble) / period + rng.uniform(0, 2 * math.pi))
        shade = shade + rng.normal(0.0, 4.0, (height, width))
    else:
        raise ValueError(f"unknown stuff class {name!r}")
    return colour + shade[..., None].astype(np.float32)


# --------------------------------------------------------------------------------------------- images


def render_synthetic_image(rng: np.random.Generator, height: int = 128,
                           width: int = 128) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Draw one synthetic image and its panoptic ground truth.

    Returns the (H, W, 3) uint8 image, the (H, W) int64 segment-id map (0 = void, which only covers
    stuff remnants smaller than the minimum area) and the COCO ``segments_info``: one dict per segment
    with ``id`` (1..N), ``category_id`` (see `SYNTHETIC_CATEGORIES`), ``iscrowd`` (0), ``area`` and
    ``bbox`` ([x, y, w, h]). Stuff segments come first, then things from back to front; each stuff class
    is one segment, each thing one segment; at least one thing is always visible.
    """
    height, width = int(height), int(width)
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"image size must be at least {MIN_SIDE} x {MIN_SIDE}, got {height} x {width}")
    y = np.arange(height, dtype=np.float32)[:, None] + 0.5
    x = np.arange(width, dtype=np.float32)[None, :] + 0.5
    min_area = _min_area(height, width)
    side = min(height, width)

    # things first (their masks decide which stuff stays visible)
    things: list[tuple[str, np.ndarray]] = []  # (class name, visible mask)
    for _attempt in range(20):
        masks, names = [], []
        for _ in range(int(rng.integers(1, MAX_THINGS + 1))):
            name = THING_CLASSES[int(rng.integers(len(THING_CLASSES)))]
            size = rng.uniform(*THING_SIZE) * side
            cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
            masks.append(_shape_mask(name, cx, cy, size, rng.uniform(0, 2 * math.pi), x, y))
            names.append(name)
        # later objects occlude earlier ones; drop the ones left too small, then recompute (can only grow)
        keep = [True] * len(masks)
        for _ in range(2):
            covered = np.zeros((height, width), dtype=bool)
            visible = [np.zeros(0)] * len(masks)
            for i in reversed(range(len(masks))):
                if keep[i]:
                    visible[i] = masks[i] & ~covered
                    covered |= masks[i]
            keep = [k and int(np.count_nonzero(v)) >= min_area for k, v in zip(keep, visible, strict=True)]
        things = [(n, v) for n, v, k in zip(names, visible, keep, strict=True) if k]
        if things:
            break
    if not things:  # practically unreachable: a centred square of the largest size
        mask = _shape_mask("square", width / 2, height / 2, THING_SIZE[1] * side, math.pi / 4, x, y)
        things = [("square", mask)]

    layout = _stuff_layout(rng, x, y, height, width)
    thing_area = np.zeros((height, width), dtype=bool)
    for _, mask in things:
        thing_area |= mask
    image = np.zeros((height, width, 3), dtype=np.float32)
    ids = np.zeros((height, width), dtype=np.int64)
    categories: list[int] = []
    for k, name in enumerate(STUFF_CLASSES):
        region = layout == k
        if not region.any():
            continue
        image[region] = _stuff_texture(rng, name, x, y, height, width)[region]
        region &= ~thing_area
        if np.count_nonzero(region) >= min_area:
            categories.append(_CATEGORY_ID[name])
            ids[region] = len(categories)

    for name, mask in things:
        colour = np.asarray(_THING_COLOURS[name], dtype=np.float32) + rng.uniform(-THING_JITTER, THING_JITTER, 3)
        t = rng.uniform(0, 2 * math.pi)  # mild linear shading across the object, plus noise
        shade = 12.0 * ((x / width - 0.5) * math.cos(t) + (y / height - 0.5) * math.sin(t))
        shade = shade + rng.normal(0.0, 4.0, (height, width))
        image[mask] = (colour + shade[..., None])[mask]
        categories.append(_CATEGORY_ID[name])
        ids[mask] = len(categories)

    segment_ids = list(range(1, len(categories) + 1))
    areas, boxes = segment_stats(ids, segment_ids)
    segments = [{"id": i, "category_id": c, "iscrowd": 0, "area": int(a), "bbox": [int(v) for v in box]}
                for i, c, a, box in zip(segment_ids, categories, areas.tolist(), boxes.tolist(), strict=True)]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), ids, segments


def _ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _write_split(root: Path, split: str, split_index: int, count: int, height: int, width: int,
                 seed: int) -> None:
    name = f"panoptic_{split}2017"
    image_dir, png_dir = root / f"{split}2017", root / "annotations" / name
    image_dir.mkdir(parents=True, exist_ok=True)
    png_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, i]))
        image, ids, segments = render_synthetic_image(rng, height, width)
        image_id = i + 1
        file_name = f"{image_id:012d}.png"
        Image.fromarray(image).save(image_dir / file_name, format="PNG", compress_level=3)
        Image.fromarray(_ids_to_rgb(ids)).save(png_dir / file_name, format="PNG", compress_level=3)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    data = {
        "info": {"description": f"EoMT synthetic panoptic dataset ({split}, seed {seed})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": SYNTHETIC_CATEGORIES,
    }
    (root / "annotations" / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")


def make_synthetic_dataset(root: str | os.PathLike, num_train: int = 200, num_val: int = 50,
                           size: int | tuple[int, int] = (128, 128), seed: int = 0, overwrite: bool = False) -> Path:
    """Write a synthetic COCO-panoptic dataset with splits "train" and "val" under ``root``; return ``root``.

    Args:
        root: output folder, created if missing. A folder that already holds files is refused unless
            ``overwrite``, which replaces it whole. The dataset is written into a hidden sibling folder and
            moved into place when complete, so an interrupted run leaves ``root`` as it was.
        num_train: number of training images (>= 0).
        num_val: number of validation images (>= 0).
        size: image size ``(height, width)``, or one int for square images; each side at least 16.
        seed: non-negative int; the same seed gives byte-identical files.

    Classes (contiguous ids, things first): 0 circle, 1 square, 2 triangle, 3 star (things), 4 sky,
    5 grass, 6 water (stuff); see the module docstring. Read it back with
    ``eomt.data.open_dataset("coco_panoptic", root, "train")`` (or ``"val"``). About 200 images of
    128 x 128 per second or two on one CPU core.
    """
    if isinstance(size, int):
        height = width = size
    else:
        if len(size) != 2:
            raise ValueError(f"size must be (height, width) or an int, got {size!r}")
        height, width = (int(s) for s in size)
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"image size must be at least {MIN_SIDE} x {MIN_SIDE}, got {height} x {width}")
    for label, count in (("num_train", num_train), ("num_val", num_val)):
        if int(count) != count or count < 0:
            raise ValueError(f"{label} must be a non-negative int, got {count!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    from eomt.outputs.folders import check_new_output, staged_directory

    root = check_new_output(root, overwrite, "files", option="synthetic dataset folder")
    with staged_directory(root) as staging:
        for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val), strict=True)):
            _write_split(staging, split, split_index, int(count), height, width, int(seed))
    return root
