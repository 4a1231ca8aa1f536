"""COCO mask AP with pycocotools' `COCOeval` as the engine (eomt.md section 6: pycocotools is the reference).

`InstanceMetric.update` encodes each image's ground-truth and predicted masks to compressed RLE right
away (so only RLE strings are kept) and stores one record per image. `compute()` builds the COCO
ground-truth dataset in memory — images with height and width; annotations with RLE segmentation,
area, bbox, iscrowd, category_id and ids 1, 2, ... in update order — loads the predictions with
`COCO.loadRes` (which computes their areas and boxes from the RLE and sets iscrowd 0) and runs
`COCOeval(iouType="segm")` with its default parameters (maxDets 1/10/100: at most the 100
highest-scoring predictions per image count), with its printing captured.

Reported (percent): "AP" (AP@[.5:.95]), "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
"ARs", "ARm", "ARl" — COCOeval's `stats` — and "per_class_AP" (a list over class indices; for class
k the mean of `eval["precision"][:, :, k, 0, -1]` over entries > -1, the usual per-category AP).

Empty cases: where pycocotools reports -1 (no ground truth in that area range or class, or nothing
accumulated) the value is NaN. With ground truth but no predictions at all, AP is 0 (every object is
missed); pycocotools' `loadRes` cannot take an empty list, so that case builds an empty result set
directly.

Ground-truth areas decide the small / medium / large ranges; by default they are mask pixel counts
(COCO's json areas come from polygons and differ slightly; pass `gt_areas` to use them).

Distributed use: `sync()` gathers every process's records with `torch.distributed.all_gather_object`;
afterwards each process holds all of them. Records with an image id seen before are dropped (keeping
the first, in rank order), so the repeated images of a padding sampler count once.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ...outputs.coco_formats import rle_areas
from .semantic import _distributed

__all__ = ["InstanceMetric"]

_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

Masks = torch.Tensor | np.ndarray | Sequence[dict[str, Any]]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _encode(masks: Masks, what: str) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """Compressed RLEs ({"size": [h, w], "counts": str}) of (N, H, W) binary masks or of a list of RLEs.

    Returns the RLEs and (H, W) when it is known.
    """
    if isinstance(masks, (list, tuple)):
        rles = []
        for rle in masks:
            if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                raise TypeError(f"{what}: expected RLE dicts with 'size' and 'counts'")
            if isinstance(rle["counts"], list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(rle, *rle["size"])
            counts = rle["counts"]
            rles.append({"size": [int(s) for s in rle["size"]],
                         "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
        size = {tuple(r["size"]) for r in rles}
        if len(size) > 1:
            raise ValueError(f"{what}: RLEs of different sizes {sorted(size)}")
        return rles, (next(iter(size)) if size else None)
    array = _to_numpy(masks)
    if array.ndim != 3:
        raise ValueError(f"{what}: expected (N, H, W) masks, got shape {array.shape}")
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what}: expected boolean (or 0/1 integer) masks, got {array.dtype}")
    size = (int(array.shape[1]), int(array.shape[2]))
    if array.shape[0] == 0:
        return [], size
    binary = array if array.dtype == np.bool_ else array != 0
    # pycocotools wants (H, W, N) uint8 in Fortran order: one copy of the masks, viewed as bytes.
    encoded = mask_utils.encode(np.asfortranarray(binary.view(np.uint8).transpose(1, 2, 0)))
    rles = [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in encoded]
    return rles, size


def _vector(x: Any, n: int, what: str, dtype: type) -> np.ndarray:
    array = _to_numpy(x).reshape(-1)
    if array.shape[0] != n:
        raise ValueError(f"{what}: expected {n} values, got {array.shape[0]}")
    return array.astype(dtype)


class InstanceMetric:
    """COCO mask AP over a stream of images.

    Args:
        num_classes: K, or a sequence of K class names (used as the COCO category names).
        category_ids: the COCO category id of each class index (default: the class index itself);
            only the ids the COCO datasets carry, results are reported by class index.
    """

    def __init__(self, num_classes: int | Sequence[str], category_ids: Sequence[int] | None = None) -> None:
        if isinstance(num_classes, int):
            names = [str(k) for k in range(num_classes)]
        else:
            names = [str(name) for name in num_classes]
        if not names:
            raise ValueError("need at least one class")
        self.class_names = names
        self.num_classes = len(names)
        ids = list(range(self.num_classes)) if category_ids is None else [int(c) for c in category_ids]
        if len(ids) != self.num_classes or len(set(ids)) != len(ids):
            raise ValueError(f"category_ids must be {self.num_classes} distinct ids, got {category_ids}")
        self.category_ids = ids
        self.records: list[dict[str, Any]] = []
        self._image_ids: set[int] = set()
        self._synced = False

    # ----------------------------------------------------------------------------------- state

    def reset(self) -> None:
        self.records = []
        self._image_ids = set()
        self._synced = False

    def state_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "category_ids": list(self.category_ids),
                "records": copy.deepcopy(self.records)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_compatible(state)
        self.reset()
        self._add_records(state["records"])

    def merge(self, other: InstanceMetric | dict[str, Any]) -> InstanceMetric:
        """Add the records of `other` (a metric or a `state_dict()`); images already present are skipped."""
        state = other.state_dict() if isinstance(other, InstanceMetric) else other
        self._check_compatible(state)
        self._add_records(state["records"])
        return self

    def _check_compatible(self, state: dict[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes or list(state["category_ids"]) != self.category_ids:
            raise ValueError("incompatible state: different classes or category ids")

    def _add_records(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            image_id = record["image"]["id"]
            if image_id not in self._image_ids:
                self._image_ids.add(image_id)
                self.records.append(copy.deepcopy(record))

    def sync(self) -> None:
        """Gather all processes' records (torch.distributed.all_gather_object); a no-op when not initialised."""
        if self._synced or not _distributed():
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.records)
        self.records, self._image_ids = [], set()
        for records in gathered:
            self._add_records(records)
        self._synced = True

    # ---------------------------------------------------------------------------------- update

    def update(self, image_id: int, gt_masks: Masks, gt_labels: Any, gt_iscrowd: Any, pred_masks: Masks,
               pred_labels: Any, pred_scores: Any, *, gt_areas: Any = None,
               image_size: tuple[int, int] | None = None) -> None:
        """Record one image.

        Args:
            image_id: a unique id for the image (COCO's id when evaluating COCO).
            gt_masks: (N, H, W) boolean masks, or a list of N RLE dicts.
            gt_labels: (N,) class indices in [0, K).
            gt_iscrowd: (N,) 0/1 flags, or None for all 0.
            pred_masks: (M, H, W) boolean masks, or a list of M RLE dicts.
            pred_labels: (M,) class indices in [0, K).
            pred_scores: (M,) confidences.
            gt_areas: (N,) areas for the small/medium/large ranges (default: mask pixel counts).
            image_size: (H, W); needed only when no mask gives it (no objects and lists of RLEs).
        """
        if self._synced:
            raise RuntimeError("update() after sync(): call reset() first")
        image_id = int(image_id)
        if image_id in self._image_ids:
            raise ValueError(f"image {image_id} was already recorded")
        gt_rles, gt_size = _encode(gt_masks, "gt_masks")
        pred_rles, pred_size = _encode(pred_masks, "pred_masks")
        sizes = {tuple(s) for s in (gt_size, pred_size, image_size) if s is not None}
        if len(sizes) != 1:
            raise ValueError(f"image {image_id}: " + ("unknown size: pass image_size" if not sizes
                                                       else f"inconsistent sizes {sorted(sizes)}"))
        height, width = next(iter(sizes))
        n, m = len(gt_rles), len(pred_rles)
        gt_label_array = _vector(gt_labels, n, "gt_labels", np.int64)
        pred_label_array = _vector(pred_labels, m, "pred_labels", np.int64)
        scores = _vector(pred_scores, m, "pred_scores", np.float64)
        crowd = np.zeros(n, np.int64) if gt_iscrowd is None else _vector(gt_iscrowd, n, "gt_iscrowd", np.int64)
        for what, labels in (("gt_labels", gt_label_array), ("pred_labels", pred_label_array)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{what} must lie in [0, {self.num_classes}), got {labels.tolist()}")
        if gt_areas is None:
            areas = rle_areas(gt_rles).astype(np.float64) if n else np.zeros(0)
        else:
            areas = _vector(gt_areas, n, "gt_areas", np.float64)
        boxes = mask_utils.toBbox(gt_rles) if n else np.zeros((0, 4))

        gts = [{"segmentation": rle, "area": float(area), "bbox": [float(v) for v in box], "iscrowd": int(c != 0),
                "category_id": self.category_ids[int(label)]}
               for rle, area, box, c, label in zip(gt_rles, areas, boxes, crowd, gt_label_array, strict=True)]
        dts = [{"segmentation": rle, "score": float(score), "category_id": self.category_ids[int(label)]}
               for rle, score, label in zip(pred_rles, scores, pred_label_array, strict=True)]
        self._image_ids.add(image_id)
        self.records.append({"image": {"id": image_id, "height": int(height), "width": int(width)},
                             "gts": gts, "dts": dts})

    # --------------------------------------------------------------------------------- compute

    def coco_objects(self) -> tuple[COCO, COCO | None]:
        """The in-memory COCO ground truth and result sets (None when there are no predictions)."""
        images, annotations, results = [], [], []
        for record in self.records:
            images.append(dict(record["image"]))
            image_id = record["image"]["id"]
            for gt in record["gts"]:
                annotations.append({**gt, "segmentation": dict(gt["segmentation"]), "bbox": list(gt["bbox"]),
                                    "image_id": image_id, "id": len(annotations) + 1})
            for dt in record["dts"]:
                results.append({**dt, "segmentation": dict(dt["segmentation"]), "image_id": image_id})
        categories = [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names, strict=True)]
        with contextlib.redirect_stdout(io.StringIO()):
            gt_coco = COCO()
            gt_coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
            gt_coco.createIndex()
            dt_coco = gt_coco.loadRes(results) if results else None
        return gt_coco, dt_coco

    def compute(self) -> dict[str, Any]:
        """{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", ..., "ARl" (percent, NaN where pycocotools
        says -1), "per_class_AP" (list of K, NaN for classes without ground truth)}."""
        if not self.records:
            return {**{name: math.nan for name in _STAT_NAMES}, "per_class_AP": [math.nan] * self.num_classes}
        gt_coco, dt_coco = self.coco_objects()
        with contextlib.redirect_stdout(io.StringIO()):
            if dt_coco is None:  # loadRes rejects an empty list; an empty result set gives AP 0 where there is GT
                dt_coco = COCO()
                dt_coco.dataset = {"images": copy.deepcopy(gt_coco.dataset["images"]), "annotations": [],
                                   "categories": copy.deepcopy(gt_coco.dataset["categories"])}
                dt_coco.createIndex()
            evaluator = COCOeval(gt_coco, dt_coco, iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [float(v) for v in evaluator.stats]
        result: dict[str, Any] = {name: (100.0 * v if v > -1 else math.nan) for name, v in zip(_STAT_NAMES, stats,
                                                                                                   strict=True)}
        precision = evaluator.eval["precision"]  # (T, R, K, A, M)
        position = {cid: k for k, cid in enumerate(evaluator.params.catIds)}
        per_class = []
        for cid in self.category_ids:
            values = precision[:, :, position[cid], 0, -1]
            values = values[values > -1]
            per_class.append(100.0 * float(values.mean()) if values.size else math.nan)
        result["per_class_AP"] = per_class
        return result
