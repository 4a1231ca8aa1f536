"""Conversions of post-processed segmentations to standard (COCO) formats.

Pure functions over torch tensors or numpy arrays; nothing here reads or writes files (see
`eomt.outputs.atomic` for the writers).

Conventions:

- Boxes are COCO ``[x, y, w, h]`` in pixels, as Python floats (COCO stores floats), tight around the
  mask: ``x``/``y`` are the first column/row holding a mask pixel and ``w``/``h`` the number of
  columns/rows spanned. An empty mask has the box ``[0, 0, 0, 0]`` (as ``pycocotools.mask.toBbox``).
- RLEs are those of ``pycocotools.mask.encode`` with ``"counts"`` decoded to ``str`` so that they can
  be written as JSON (``pycocotools.mask.decode`` accepts them as they are).
- Panoptic PNGs follow COCO panoptic: a pixel's segment id is ``R + 256 * G + 256**2 * B`` and 0 means
  void. Post-processing numbers segments from 0 and marks void with -1, so the id written to the PNG
  (and reported as ``"id"`` by `panoptic_segments_info`) is the post-processing id **plus one**,
  unless an explicit ``ids_map`` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .instance_masks import InstanceMasks

__all__ = [
    "PANOPTIC_ID_OFFSET",
    "encode_rle",
    "encode_rles",
    "instance_results",
    "mask_to_bbox",
    "masks_to_bboxes",
    "panoptic_segments_info",
    "panoptic_to_rgb",
    "rgb_to_panoptic",
]

# Added to post-processing segment ids to get the ids written to COCO panoptic PNGs (0 is void there).
PANOPTIC_ID_OFFSET = 1
# Largest id a 24-bit RGB PNG can hold.
_MAX_PNG_ID = 256**3 - 1
# Rows per band of the full-resolution conversions, so that their int64 temporaries stay small on huge images.
_BAND_ROWS = 256


def _to_int_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False)


def _to_bool_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype == np.bool_ else x != 0


# ------------------------------------------------------------------------------------------ boxes


def masks_to_bboxes(masks: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(N, H, W) masks -> (N, 4) float64 COCO ``[x, y, w, h]`` boxes; empty masks get zeros.

    Returns a tensor for a tensor input and a numpy array otherwise. Nonzero values count as mask.
    `InstanceMasks` give a numpy array, from their crops.
    """
    if isinstance(masks, InstanceMasks):
        return np.array(masks.coco_boxes(), dtype=np.float64).reshape(len(masks), 4)
    is_tensor = isinstance(masks, torch.Tensor)
    m = _to_bool_numpy(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {m.shape}")
    n, h, w = m.shape
    boxes = np.zeros((n, 4), dtype=np.float64)
    if n and h and w:
        rows = m.any(axis=2)  # (N, H)
        cols = m.any(axis=1)  # (N, W)
        nonempty = rows.any(axis=1)
        y0 = rows.argmax(axis=1)  # first True
        y1 = h - 1 - rows[:, ::-1].argmax(axis=1)  # last True
        x0 = cols.argmax(axis=1)
        x1 = w - 1 - cols[:, ::-1].argmax(axis=1)
        boxes[nonempty] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)[nonempty]
    return torch.from_numpy(boxes) if is_tensor else boxes


def mask_to_bbox(mask: torch.Tensor | np.ndarray) -> list[float]:
    """(H, W) mask -> COCO ``[x, y, w, h]`` (floats); an empty mask gives ``[0, 0, 0, 0]``."""
    m = _to_bool_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {m.shape}")
    return [float(v) for v in masks_to_bboxes(m[None])[0].tolist()]


# -------------------------------------------------------------------------------------------- RLE


def _rle_to_json(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def encode_rle(mask: torch.Tensor | np.ndarray) -> dict:
    """(H, W) mask -> COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-serialisable)."""
    m = _to_bool_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {m.shape}")
    return _rle_to_json(mask_utils.encode(np.asfortranarray(m, dtype=np.uint8)))


def encode_rles(masks: torch.Tensor | np.ndarray | InstanceMasks) -> list[dict]:
    """(N, H, W) masks -> list of N JSON-serialisable COCO RLEs, encoded in one pycocotools call (from the crops
    for `InstanceMasks`, without the full stack)."""
    if isinstance(masks, InstanceMasks):
        return [_rle_to_json(r) for r in masks.raw_rles()]
    m = _to_bool_numpy(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {m.shape}")
    if m.shape[0] == 0:
        return []
    return [_rle_to_json(r) for r in _encode_many(m)]


def rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """`mask_utils.area` of raw RLEs, 255 at a time: pycocotools sizes a uint8 array by their count, which
    numpy 2 refuses above 255 (an image with 256 instances would fail)."""
    parts = [mask_utils.area(list(rles[i:i + 255])) for i in range(0, len(rles), 255)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


def _encode_many(m: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> raw pycocotools RLEs (bytes counts)."""
    n, h, w = m.shape
    # pycocotools wants an (H, W, N) uint8 array in Fortran order, which is the memory layout of a
    # C-ordered (N, W, H) array: fill one mask at a time (a transposed copy per mask is much faster
    # than a single strided np.asfortranarray over all masks).
    buffer = np.empty((n, w, h), dtype=np.uint8)
    u8 = m.view(np.uint8)
    for i in range(n):
        buffer[i] = u8[i].T
    return mask_utils.encode(buffer.transpose(2, 1, 0))


# --------------------------------------------------------------------------------------- panoptic


def panoptic_to_rgb(segment_map: torch.Tensor | np.ndarray, ids_map: Mapping[int, int] | None = None) -> np.ndarray:
    """(H, W) segment ids (-1 = void) -> (H, W, 3) uint8 COCO panoptic PNG array.

    Without ``ids_map`` a segment id ``i`` is written as ``i + 1`` (`PANOPTIC_ID_OFFSET`, because
    COCO reserves 0 for void). With ``ids_map`` (post-processing id -> PNG id), each segment is written
    with its mapped id; segments missing from ``ids_map`` are written as void (0), which drops them.
    Void (any negative id) is always 0. The id is stored as ``R + 256 * G + 256**2 * B``.
    """
    seg = segment_map.detach().cpu().numpy() if isinstance(segment_map, torch.Tensor) else np.asarray(segment_map)
    if seg.ndim != 2:
        raise ValueError(f"segment_map must have shape (H, W), got {seg.shape}")
    if ids_map is not None:
        keys = np.unique(seg)
        lut_keys = keys.astype(np.int64)
        lut_values = np.array([int(ids_map.get(k, 0)) if k >= 0 else 0 for k in lut_keys.tolist()], dtype=np.int64)
    rgb = np.empty((*seg.shape, 3), dtype=np.uint8)
    for top in range(0, seg.shape[0], _BAND_ROWS):  # int64 temporaries a band of rows at a time
        band = seg[top:top + _BAND_ROWS].astype(np.int64, copy=False)
        if ids_map is None:
            png = np.where(band >= 0, band + PANOPTIC_ID_OFFSET, 0)
        else:
            png = lut_values[np.searchsorted(lut_keys, band)]
        if png.size and (int(png.max()) > _MAX_PNG_ID or int(png.min()) < 0):
            raise ValueError(f"panoptic PNG ids must lie in [0, {_MAX_PNG_ID}]")
        rgb[top:top + _BAND_ROWS, :, 0] = png & 0xFF
        rgb[top:top + _BAND_ROWS, :, 1] = (png >> 8) & 0xFF
        rgb[top:top + _BAND_ROWS, :, 2] = (png >> 16) & 0xFF
    return rgb


def rgb_to_panoptic(rgb: Any, raw: bool = False) -> np.ndarray:
    """Inverse of `panoptic_to_rgb`: (H, W, 3) uint8 array or PIL image -> (H, W) int64 ids.

    By default returns post-processing-style ids (PNG id - 1, so void is -1). With ``raw=True``
    returns the PNG ids themselves (``R + 256 * G + 256**2 * B``, void = 0).
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {arr.shape}")
    arr = arr[..., :3].astype(np.int64)
    ids = arr[..., 0] + 256 * arr[..., 1] + 256 * 256 * arr[..., 2]
    return ids if raw else ids - PANOPTIC_ID_OFFSET


def segment_stats(seg: np.ndarray | torch.Tensor, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (K,) and COCO boxes (K, 4) of the segments ``ids`` in the (H, W) map ``seg``.

    Vectorised: pixels are mapped to a compact index (K = void / unlisted), then per-(segment, row) and
    per-(segment, column) pixel counts come from two bincounts, whose first/last nonzero entries give
    the box.
    """
    seg = seg.detach().cpu().numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
    k = len(ids)
    areas = np.zeros(k, dtype=np.int64)
    boxes = np.zeros((k, 4), dtype=np.float64)
    if k == 0 or seg.size == 0:
        return areas, boxes
    h, w = seg.shape
    wanted = np.asarray(ids, dtype=np.int64)
    if len(np.unique(wanted)) != k:
        raise ValueError("segment ids in segments_info must be unique")
    lo = min(int(wanted.min()), 0)
    hi = max(int(wanted.max()), int(seg.max()))
    dense_lut = hi - lo < max(4 * seg.size, 1 << 16)
    if dense_lut:
        lut = np.full(hi - lo + 1, k, dtype=np.int64)
        lut[wanted - lo] = np.arange(k)
    else:  # very sparse ids
        order = np.argsort(wanted)
    per_row = np.zeros((k + 1, h), dtype=np.int64)
    per_col = np.zeros((k + 1) * w, dtype=np.int64)
    for top in range(0, h, _BAND_ROWS):  # the int64 index map a band of rows at a time
        band = seg[top:top + _BAND_ROWS].astype(np.int64, copy=False)
        rows = band.shape[0]
        if dense_lut:
            index = lut[np.maximum(band, lo) - lo]
            index[band < lo] = k
        else:
            pos = np.searchsorted(wanted[order], band).clip(max=k - 1)
            index = np.where(wanted[order][pos] == band, order[pos], k)
        per_row[:, top:top + rows] = np.bincount((index * rows + np.arange(rows)[:, None]).ravel(),
                                                 minlength=(k + 1) * rows).reshape(k + 1, rows)
        per_col += np.bincount((index * w + np.arange(w)[None, :]).ravel(), minlength=(k + 1) * w)
    per_row, per_col = per_row[:k], per_col.reshape(k + 1, w)[:k]
    areas = per_row.sum(axis=1)
    rows, cols = per_row > 0, per_col > 0
    y0 = rows.argmax(axis=1)
    y1 = h - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - 1 - cols[:, ::-1].argmax(axis=1)
    present = areas > 0
    boxes[present] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)[present]
    return areas, boxes


def _label_to_category(label_id: int, label_to_category: Mapping[int, int] | None) -> int:
    if label_to_category is None:
        return int(label_id)
    return int(label_to_category[int(label_id)])


def panoptic_segments_info(
    segment_map: torch.Tensor | np.ndarray,
    segments_info: Sequence[Mapping[str, Any]],
    label_to_category: Mapping[int, int] | None = None,
    is_thing: Callable[[int], bool] | Collection[int] | None = None,
    drop_empty: bool = True,
) -> list[dict]:
    """COCO panoptic ``segments_info`` for one image.

    Each entry: ``{"id": segment id + 1 (the PNG id of `panoptic_to_rgb`), "category_id":
    label_to_category[label_id] (or label_id), "iscrowd": 0, "area": pixel count, "bbox": [x, y, w, h],
    "score"}``, plus ``"isthing"`` (bool) when ``is_thing`` (a predicate or a set of label ids) is given.
    Areas and boxes are computed from ``segment_map`` in one vectorised pass. Segments with no pixel
    in the map are left out unless ``drop_empty=False`` (then they have area 0 and box zeros).
    """
    seg = _to_int_numpy(segment_map)
    if seg.ndim != 2:
        raise ValueError(f"segment_map must have shape (H, W), got {seg.shape}")
    ids = [int(s["id"]) for s in segments_info]
    areas, boxes = segment_stats(seg, ids)
    if is_thing is not None and not callable(is_thing):
        things = {int(t) for t in is_thing}

        def thing_fn(label: int) -> bool:
            return label in things
    else:
        thing_fn = is_thing  # type: ignore[assignment]
    out = []
    for info, area, box in zip(segments_info, areas.tolist(), boxes.tolist(), strict=True):
        if drop_empty and area == 0:
            continue
        label = int(info["label_id"])
        entry: dict[str, Any] = {
            "id": int(info["id"]) + PANOPTIC_ID_OFFSET,
            "category_id": _label_to_category(label, label_to_category),
            "iscrowd": 0,
            "area": int(area),
            "bbox": [float(v) for v in box],
        }
        if "score" in info and info["score"] is not None:
            entry["score"] = float(info["score"])
        if thing_fn is not None:
            entry["isthing"] = bool(thing_fn(label))
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------- instance


def instance_results(
    masks: torch.Tensor | np.ndarray | InstanceMasks,
    segments_info: Sequence[Mapping[str, Any]],
    image_id: int | str,
    label_to_category: Mapping[int, int] | None = None,
) -> list[dict]:
    """COCO detection results for one image's instances (``masks`` (N, H, W) in ``segments_info`` order).

    Each entry: ``{"image_id", "category_id", "segmentation": RLE (str counts), "bbox": [x, y, w, h],
    "score", "area"}``. Every instance is kept, including empty masks (area 0, box zeros). `InstanceMasks`
    are encoded from their crops (the same RLE strings), never as a full (N, H, W) stack.
    """
    if isinstance(masks, InstanceMasks):
        count = len(masks)
    else:
        m = _to_bool_numpy(masks)
        if m.ndim != 3:
            raise ValueError(f"masks must have shape (N, H, W), got {m.shape}")
        count = m.shape[0]
    if count != len(segments_info):
        raise ValueError(f"{count} masks but {len(segments_info)} segments")
    if count == 0:
        return []
    if isinstance(masks, InstanceMasks):  # tight crops: their areas and boxes are those of the RLEs
        raw, areas, boxes = masks.raw_rles(), masks.areas(), masks.coco_boxes()
    else:  # area and box from the RLEs (cheap) rather than from another pass over the masks
        raw = _encode_many(m)
        areas, boxes = rle_areas(raw).tolist(), mask_utils.toBbox(raw).tolist()
    rles = [_rle_to_json(r) for r in raw]
    out = []
    for info, rle, box, area in zip(segments_info, rles, boxes, areas, strict=True):
        out.append(
            {
                "image_id": image_id,
                "category_id": _label_to_category(int(info["label_id"]), label_to_category),
                "segmentation": rle,
                "bbox": [float(v) for v in box],
                "score": float(info.get("score", 1.0)),
                "area": int(area),
            }
        )
    return out
