"""Semantic segmentation metrics (mIoU) from a confusion matrix.

`SemanticMetric` accumulates, over any number of `update` calls, a confusion matrix whose rows are
target classes and whose columns are predicted classes, with one `torch.bincount` per call. Its state
is a single int64 tensor that sums across processes, so `sync()` is one all-reduce.

Rules (eomt.md section 6: per-class IoU from a confusion matrix at original resolution, ignore 255,
mean over classes present):

- pixels whose target is `ignore_index` (which must not be a class index) are skipped entirely;
- a target value that is neither `ignore_index` nor in [0, K) is an error (`ValueError`);
- a prediction outside [0, K) (for example 255, or -1 for "no class") is kept and counted as wrong:
  the pixel counts for its target class (it enlarges that class's union and lowers its accuracy)
  but for no predicted class. It is recorded in an extra column of the matrix;
- IoU_c = TP_c / (target_c + predicted_c - TP_c). A class is *present* when this union is > 0,
  that is, it has target pixels or predicted pixels (among the non-ignored pixels). mIoU is the mean
  IoU over present classes, so a class that is only predicted (absent from the targets) counts with
  IoU 0, and a class neither in the targets nor predicted is left out (its IoU is NaN);
- pixel accuracy = sum_c TP_c / number of non-ignored pixels;
- mean accuracy = mean over classes with target pixels of TP_c / target_c.

All values are Python floats in percent (0-100); NaN where undefined (nothing accumulated).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import torch
import torch.distributed as dist

from .repeats import ImageContributions

__all__ = ["SemanticMetric"]


def _distributed() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensors: list[torch.Tensor]) -> bool:
    """Sum `tensors` in place across processes; a no-op (returns False) unless `_distributed()`.

    With the NCCL backend, tensors that are not on a CUDA device are reduced through a temporary
    copy on the current CUDA device.
    """
    if not _distributed():
        return False
    nccl = dist.get_backend() == "nccl"
    for tensor in tensors:
        if nccl and tensor.device.type != "cuda":
            buffer = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(buffer)
            tensor.copy_(buffer.to(tensor.device))
        else:
            dist.all_reduce(tensor)
    return True


class _Scratch:
    """Reusable flat buffers for per-pixel temporaries of CPU updates (`out=` arguments).

    A fresh multi-megabyte CPU tensor is usually memory the allocator gets from (and later returns to)
    the operating system, and touching its pages again costs about as much as the arithmetic done in
    it. On other devices (CUDA has a caching allocator) `get` returns None: torch then allocates as
    usual. A buffer grows to the largest image seen; `clear()` releases them.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor | None:
        if like.device.type != "cpu":
            return None
        numel = like.numel()
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            buffer = torch.empty(numel, dtype=dtype)
            self._buffers[name] = buffer
        return buffer[:numel].view(like.shape)

    def clear(self) -> None:
        self._buffers.clear()


def _percent(value: float) -> float:
    return 100.0 * float(value)


class SemanticMetric:
    """mIoU, pixel accuracy and mean accuracy over a stream of (prediction, target) label maps.

    Args:
        num_classes: K; valid labels are 0..K-1.
        ignore_index: target value of pixels that are not evaluated.
        device: where the state lives (default CPU). Updates are computed on the inputs' device and
            only the (K, K + 1) counts are moved here; use the inputs' device to avoid that copy.

    Distributed use: every process updates with its share of the images, then all call `sync()`,
    after which every process holds the global counts. `sync()` is idempotent until the next
    `reset()`; updating a synced metric raises (it would count the other processes' pixels twice).
    Images given with `update(..., image_id=...)` count once even when a padding sampler hands one to
    two processes, or twice to one (see `repeats`).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= int(ignore_index) < int(num_classes):
            raise ValueError(f"ignore_index {ignore_index} is a class index (0..{int(num_classes) - 1})")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._synced = False
        self._scratch = _Scratch()
        self._images = ImageContributions()
        # rows: target class; columns: predicted class, plus one column for predictions outside [0, K).
        self.confusion = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64, device=self.device)

    # ----------------------------------------------------------------------------------- state

    def reset(self) -> None:
        self._images.reset()
        self.confusion.zero_()
        self._synced = False
        self._scratch.clear()

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """(K, K) int64 counts, rows = target class, columns = predicted class (a copy).

        Pixels predicted outside [0, K) are not in it (they are in `self.confusion[:, K]`).
        """
        return self.confusion[:, : self.num_classes].clone()

    def state_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "confusion": self.confusion.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_compatible(state)
        self.confusion.copy_(state["confusion"].to(self.device))
        self._synced = False

    def merge(self, other: SemanticMetric | dict[str, Any]) -> SemanticMetric:
        """Add the counts of `other` (a metric or a `state_dict()`) to this one; returns self."""
        state = other.state_dict() if isinstance(other, SemanticMetric) else other
        self._check_compatible(state)
        self.confusion += state["confusion"].to(self.device)
        return self

    def _check_compatible(self, state: dict[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes or int(state["ignore_index"]) != self.ignore_index:
            raise ValueError(
                f"incompatible state: num_classes {state['num_classes']} / ignore_index {state['ignore_index']}, "
                f"expected {self.num_classes} / {self.ignore_index}")
        if tuple(state["confusion"].shape) != tuple(self.confusion.shape):
            raise ValueError(f"confusion has shape {tuple(state['confusion'].shape)}, "
                             f"expected {tuple(self.confusion.shape)}")

    def sync(self) -> None:
        """Sum the counts over all processes (torch.distributed); a no-op when it is not initialised."""
        if self._synced:
            return
        if _distributed():
            self._images.drop_repeats_across_processes([self.confusion])
        self._synced = _all_reduce_sum([self.confusion])

    # ---------------------------------------------------------------------------------- update

    def update(self, pred: torch.Tensor, target: torch.Tensor, image_id: Hashable | None = None) -> None:
        """Accumulate one prediction / target pair of integer label maps of the same shape (e.g. (H, W)).

        With `image_id`, an image given again (here or, after `sync()`, in another process) counts once.
        """
        if self._synced:
            raise RuntimeError("update() after sync(): call reset() first")
        if image_id is None:
            return self._update(pred, target)
        if image_id in self._images:
            return None
        before = [self.confusion.clone()]
        self._update(pred, target)
        self._images.record(image_id, before, [self.confusion])
        return None

    @torch.no_grad()
    def _update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}")
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer labels, got {t.dtype}")
        k = self.num_classes
        target = target.to(pred.device).reshape(-1).long()
        pred = pred.reshape(-1).long()
        # Labels clamped to [-1, K] and shifted by one: 0 = below range, 1..K = classes, K + 1 = above
        # range. One bincount over (K + 2) x (K + 2) bins, index (t + 1) (K + 2) + (p + 1).
        n = k + 2
        scratch = self._scratch
        index = torch.clamp(pred, -1, k, out=scratch.get("pred", pred))
        index.add_(torch.clamp(target, -1, k, out=scratch.get("target", target)), alpha=n).add_(n + 1)
        counts = torch.bincount(index, minlength=n * n).view(n, n)
        outside = int(counts[0].sum() + counts[k + 1].sum())
        if outside and outside != int(torch.eq(target, self.ignore_index,
                                               out=scratch.get("mask", target, torch.bool)).sum()):
            bad = torch.unique(target[((target < 0) | (target >= k)) & (target != self.ignore_index)])[:10]
            raise ValueError(f"target holds labels outside [0, {k}) that are not ignore_index "
                             f"{self.ignore_index}: {bad.tolist()}")
        rows = counts[1:k + 1]
        counted = torch.cat([rows[:, 1:k + 1], (rows[:, 0] + rows[:, k + 1])[:, None]], dim=1)
        self.confusion += counted.to(self.device)

    # --------------------------------------------------------------------------------- compute

    def compute(self) -> dict[str, Any]:
        """{"mIoU", "pixel_accuracy", "mean_accuracy" (floats, percent), "per_class_iou" (list, NaN if absent)}."""
        cm = self.confusion.detach().to("cpu", torch.float64)
        k = self.num_classes
        tp = torch.diagonal(cm[:, :k])
        target_count = cm.sum(1)
        pred_count = cm[:, :k].sum(0)
        union = target_count + pred_count - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        has_target = target_count > 0
        total = float(cm.sum())
        return {
            "mIoU": _percent(iou[present].mean()) if bool(present.any()) else math.nan,
            "pixel_accuracy": _percent(float(tp.sum()) / total) if total > 0 else math.nan,
            "mean_accuracy": (_percent((tp[has_target] / target_count[has_target]).mean())
                              if bool(has_target.any()) else math.nan),
            "per_class_iou": [_percent(v) for v in iou.tolist()],
        }
