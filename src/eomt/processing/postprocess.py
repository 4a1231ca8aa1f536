"""Post-processing of EoMT outputs into semantic, panoptic and instance segmentations.

Plain functions over the model's `masks_queries_logits` (B, Q, h, w) and `class_queries_logits`
(B, Q, K + 1; the last class is "no object"). Everything is computed on the logits' device, without
gradients; float16 and bfloat16 logits are upcast to float32 first (the logits are small; the large
tensors are made from them). The inputs are never modified.

The rules are those of transformers 5.x `EomtImageProcessor.post_process_*_segmentation`, and the
results are the same (segment maps equal, scores within float rounding), but the work is done
differently:

- panoptic and instance segmentation select the queries first (from the class probabilities,
  which is exact: an instance score is at most its class probability) and only upsample those;
- semantic segmentation sums windows as matrix products (classes x queries @ queries x pixels)
  straight into the canvas, in place where it can;
- bilinear resizes to the size a tensor already has are skipped (they are the identity);
- the panoptic validity checks are tensor reductions over the argmax map, not one pass per query;
- the resize to the padded input size computes only the crop the image occupied (bit-equal values);
- per-pixel work runs a cache-sized band of rows at a time, and argmax over queries or classes is an
  amax (vectorised on CPU) of ranks.

Differences in the returned values, by design: the panoptic and instance "segmentation" maps are
always int64 with -1 for void (transformers returns a float map for instance segmentation, and a
float map of -1 for panoptic images with no kept query); instance results also carry "masks".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from eomt.processing.sizes import resized_size, size_pair

__all__ = ["instance_segmentation", "panoptic_segmentation", "semantic_segmentation"]

# --------------------------------------------------------------------------------------- helpers


def _check_logits(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if mask_logits.dim() != 4 or class_logits.dim() != 3:
        raise ValueError(
            f"expected mask logits (B, Q, h, w) and class logits (B, Q, K+1), got shapes "
            f"{tuple(mask_logits.shape)} and {tuple(class_logits.shape)}"
        )
    if mask_logits.shape[:2] != class_logits.shape[:2]:
        raise ValueError(
            f"mask logits {tuple(mask_logits.shape)} and class logits {tuple(class_logits.shape)} "
            "disagree on batch or query count"
        )
    if class_logits.shape[-1] < 2:
        raise ValueError(f"class logits need at least one class plus no-object, got {class_logits.shape[-1]} entries")
    if not mask_logits.is_floating_point() or not class_logits.is_floating_point():
        raise ValueError("logits must be floating point tensors")
    if mask_logits.dtype in (torch.float16, torch.bfloat16):
        mask_logits = mask_logits.float()
    if class_logits.dtype in (torch.float16, torch.bfloat16):
        class_logits = class_logits.float()
    return mask_logits, class_logits


def _as_sizes(target_sizes: Any, expected: int, what: str) -> list[tuple[int, int]]:
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = target_sizes.tolist()
    sizes = []
    for entry in target_sizes:
        values = entry.tolist() if isinstance(entry, torch.Tensor) else list(entry)
        if len(values) != 2 or min(int(v) for v in values) <= 0:
            raise ValueError(f"each target size must be a positive (height, width) pair, got {values}")
        sizes.append((int(values[0]), int(values[1])))
    if len(sizes) != expected:
        raise ValueError(f"got {len(sizes)} target sizes for {expected} {what}")
    return sizes


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (N, C, h, w); a resize to the current size is the identity."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def _rows_needed(out_size: int, in_size: int, keep: int) -> int:
    """Input rows (a prefix) that a bilinear resize in_size -> out_size reads for its first `keep` outputs
    and that resize exactly like the whole: the prefix p must give the same scale (p / (p * out / in)) and
    its last row must not be clamped; in_size when no shorter prefix qualifies."""
    source = (keep - 0.5) * in_size / out_size - 0.5  # where the last kept output row samples
    for rows in range(max(1, int(source) + 2), in_size):
        if (rows * out_size) % in_size == 0 and rows * out_size // in_size >= keep:
            return rows
    return in_size


def _masks_at_target(logits: torch.Tensor, size: dict[str, int], target: tuple[int, int]) -> torch.Tensor:
    """Mask logits (N, h, w) of a padded input -> (N, H, W) at the original image size.

    Up to the network input size, crop the region the resized image occupied, resize to the target.
    The first resize only computes the rows and columns the crop keeps (from an input prefix with the same
    scale, so the values are those of the full resize; padding is a third of a landscape photo's input).
    """
    height, width = target
    (full_h, full_w), (h, w) = size_pair(size), logits.shape[-2:]
    crop_h, crop_w = resized_size(height, width, size["shortest_edge"], size.get("longest_edge"))
    rows, cols = _rows_needed(full_h, h, crop_h), _rows_needed(full_w, w, crop_w)
    out = _resize(logits[None, :, :rows, :cols], (rows * full_h // h, cols * full_w // w))
    return _resize(out[..., :crop_h, :crop_w], target)[0]


def _band_rows(x: torch.Tensor) -> int:
    """Rows of a (N, H, W) tensor per band so that a band (about 2 MB of float32) stays in CPU cache."""
    return x.shape[1] if x.device.type != "cpu" else max(1, (1 << 19) // max(1, x.shape[0] * x.shape[2]))


def _argmax0(x: torch.Tensor) -> torch.Tensor:
    """`x.argmax(0)` of a (N, H, W) tensor (the first maximum), 3-4x faster on CPU (other devices: argmax).

    The index is N - max(rank) over the entries equal to the maximum, with rank = N - n: an amax over the
    leading dimension is vectorised where argmax is not. Done a band of rows at a time. A pixel whose
    values are all NaN gets N - 1.
    """
    count = x.shape[0]
    if x.device.type != "cpu" or count == 0:
        return x.argmax(0)
    dtype = torch.int16 if count < 32767 else torch.int32
    ranks = torch.arange(count, 0, -1, dtype=dtype, device=x.device).view(-1, 1, 1)
    out = torch.empty(x.shape[1:], dtype=torch.long, device=x.device)
    band = _band_rows(x)
    for top in range(0, x.shape[1], band):
        part = x[:, top:top + band]
        rank = (part.eq(part.amax(0)).to(dtype) * ranks).amax(0)
        out[top:top + band] = (count - rank.long()).clamp_(max=count - 1)
    return out


def _last_covering(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (H, W) int64: index of the last mask covering each pixel, -1 where none does."""
    count = masks.shape[0]
    if count == 0:
        return torch.full(masks.shape[1:], -1, dtype=torch.long, device=masks.device)
    dtype = torch.int16 if count < 32767 else torch.int32  # small integers keep the max cheap
    ranks = torch.arange(1, count + 1, dtype=dtype, device=masks.device).view(-1, 1, 1)
    return (masks.to(dtype) * ranks).amax(0).long() - 1


# -------------------------------------------------------------------------------------- semantic


def _as_offsets(patch_offsets: Any) -> list[tuple[int, int, int]]:
    if isinstance(patch_offsets, torch.Tensor):
        patch_offsets = patch_offsets.tolist()
    offsets = []
    for entry in patch_offsets:
        values = entry.tolist() if isinstance(entry, torch.Tensor) else list(entry)
        if len(values) != 3:
            raise ValueError(f"each patch offset must be (image_index, start, end), got {values}")
        offsets.append((int(values[0]), int(values[1]), int(values[2])))
    return offsets


def _semantic_scores(
    probs: list[torch.Tensor],
    weights: list[torch.Tensor],
    placement: list[tuple[int, int]] | None,
    axis: int,
    canvas_hw: tuple[int, int],
    target: tuple[int, int],
) -> torch.Tensor:
    """Per-pixel scores (C, H, W) at the target size of the channels `weights` (one (Q, C) per window).

    Each window's scores are weights^T @ mask probabilities; with a placement, windows are summed
    into a canvas along `axis` and divided by the per-pixel window count (as transformers does).
    """
    channels = weights[0].shape[1]
    if placement is None:
        (p,), (w,) = probs, weights
        scores = (w.T @ p.flatten(1)).view(channels, *p.shape[1:])
    else:
        device, dtype = probs[0].device, probs[0].dtype
        scores = torch.zeros((channels, *canvas_hw), device=device, dtype=dtype)
        count = torch.zeros(canvas_hw, device=device, dtype=dtype)
        for p, w, (start, end) in zip(probs, weights, placement, strict=True):
            window = (w.T @ p.flatten(1)).view(channels, *p.shape[1:])
            scores.narrow(axis + 1, start, end - start).add_(window)
            count.narrow(axis, start, end - start).add_(1)
        scores = scores / count.clamp(min=1)
    return _resize(scores[None], target)[0]


@torch.no_grad()
def semantic_segmentation(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    target_sizes: Sequence[Sequence[int]] | torch.Tensor,
    size: dict[str, int],
    patch_offsets: Sequence[Sequence[int] | torch.Tensor] | None = None,
    return_scores: bool = False,
) -> list[torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
    """Semantic maps (H, W) int64 of class ids, as transformers' `post_process_semantic_segmentation`.

    Mask logits are resized bilinearly to `size_pair(size)`; per-pixel class scores are
    einsum(softmax(class)[..., :-1], sigmoid(mask)). With `patch_offsets` (one (image_index, start,
    end) per batch row; the window runs along the height if the target is taller than wide, else
    along the width), window scores are summed into a canvas of the resized image size
    `resized_size(H, W, shortest_edge, longest_edge)`, divided by the per-pixel window count and
    resized to the target size; `target_sizes` then has one entry per image index. Without
    `patch_offsets`, each row's scores are resized straight to its target size.

    With `return_scores`, each item is (map, scores (K, H, W)).
    """
    mask_logits, class_logits = _check_logits(mask_logits, class_logits)
    batch = mask_logits.shape[0]
    window_hw = size_pair(size)
    class_probs = class_logits.softmax(-1)[..., :-1]

    if patch_offsets is None or len(patch_offsets) == 0:
        sizes = _as_sizes(target_sizes, batch, "images in the batch")
        plans = [([row], None, 0, window_hw) for row in range(batch)]
    else:
        offsets = _as_offsets(patch_offsets)
        if len(offsets) != batch:
            raise ValueError(f"got {len(offsets)} patch offsets for a batch of {batch} windows")
        if min(o[0] for o in offsets) < 0:
            raise ValueError("patch offsets have a negative image index")
        num_images = max(o[0] for o in offsets) + 1
        sizes = _as_sizes(target_sizes, num_images, "images referenced by patch_offsets")
        plans = []
        for image, (height, width) in enumerate(sizes):
            canvas_hw = resized_size(height, width, size["shortest_edge"], size.get("longest_edge"))
            axis = 0 if height > width else 1
            rows = [row for row, o in enumerate(offsets) if o[0] == image]
            placement = [(offsets[row][1], offsets[row][2]) for row in rows]
            for start, end in placement:
                if (
                    end - start != window_hw[axis]
                    or start < 0
                    or end > canvas_hw[axis]
                    or canvas_hw[1 - axis] != window_hw[1 - axis]
                ):
                    raise ValueError(
                        f"window ({image}, {start}, {end}) of size {window_hw} does not fit the "
                        f"{canvas_hw} resized image along {'height' if axis == 0 else 'width'}"
                    )
            plans.append((rows, placement, axis, canvas_hw))

    results: list = []
    for (rows, placement, axis, canvas_hw), target in zip(plans, sizes, strict=True):
        if not rows:  # an image with no window: all scores are 0, as in transformers
            scores = torch.zeros((class_probs.shape[-1], *target), device=mask_logits.device, dtype=class_probs.dtype)
            results.append((scores.argmax(0), scores) if return_scores else scores.argmax(0))
            continue
        # in place unless the logits are already at the window size (the resize is then a view of them)
        in_place = tuple(mask_logits.shape[-2:]) != tuple(window_hw)
        probs = [_resize(mask_logits[row][None], window_hw)[0] for row in rows]
        probs = [p.sigmoid_() if in_place else p.sigmoid() for p in probs]
        weights = [class_probs[row] for row in rows]
        scores = _semantic_scores(probs, weights, placement, axis, canvas_hw, target)
        segmentation = _argmax0(scores)
        results.append((segmentation, scores) if return_scores else segmentation)
    return results


# -------------------------------------------------------------------------------------- panoptic


def _assign_pixels(logits: torch.Tensor, scores: torch.Tensor, mask_threshold: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (N, H, W) mask logits of the kept queries: each pixel's query (argmax of score x sigmoid),
    whether that query's probability reaches `mask_threshold` there, and each query's area at or above it.

    Computed a band of rows at a time, so that the N x H x W probabilities never exist in full
    (the work is memory bound: a band stays in cache through all the steps).
    """
    count, height, width = logits.shape
    assigned = torch.empty((height, width), dtype=torch.long, device=logits.device)
    in_own = torch.empty((height, width), dtype=torch.bool, device=logits.device)
    above_area = torch.zeros(count, dtype=torch.long, device=logits.device)
    band = _band_rows(logits)
    weights = scores[:, None, None]
    for top in range(0, height, band):
        probs = logits[:, top:top + band].sigmoid()
        owner = _argmax0(weights * probs)
        above = probs >= mask_threshold
        assigned[top:top + band] = owner
        in_own[top:top + band] = above.gather(0, owner[None])[0]
        above_area += above.sum((1, 2))
    return assigned, in_own, above_area


@torch.no_grad()
def panoptic_segmentation(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    target_sizes: Sequence[Sequence[int]] | torch.Tensor,
    size: dict[str, int],
    threshold: float = 0.8,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    stuff_classes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Panoptic maps, as transformers' `post_process_panoptic_segmentation` (padded inference).

    Queries whose most probable class is not no-object and whose probability exceeds `threshold`
    are kept; their mask logits are resized to `size_pair(size)`, cropped to the resized image and
    resized to the target size. Each pixel goes to the kept query maximising score x sigmoid(mask).
    A query makes a segment when its assigned area, its area with sigmoid >= `mask_threshold` and
    their intersection are non-empty and assigned / thresholded area > `overlap_mask_area_threshold`;
    its pixels are the intersection. Queries of a label in `stuff_classes` merge into the first
    segment of that label. Segment ids count from 0 in query order.

    Returns per image {"segmentation": (H, W) int64, -1 = void, "segments_info": [{"id",
    "label_id", "score" (rounded to 6 decimals)}]}. Unlike transformers, an image with no kept
    query also gets an int64 map (transformers returns a float map of -1 there).
    """
    mask_logits, class_logits = _check_logits(mask_logits, class_logits)
    batch, num_labels = mask_logits.shape[0], class_logits.shape[-1] - 1
    sizes = _as_sizes(target_sizes, batch, "images in the batch")
    stuff = set(stuff_classes) if stuff_classes else set()
    device = mask_logits.device

    top_scores, top_labels = class_logits.softmax(-1).max(-1)
    keep = top_labels.ne(num_labels) & (top_scores > threshold)

    results = []
    for i, target in enumerate(sizes):
        kept = keep[i].nonzero().flatten()
        if kept.numel() == 0:
            results.append({"segmentation": torch.full(target, -1, dtype=torch.long, device=device),
                            "segments_info": []})
            continue
        scores, labels = top_scores[i, kept], top_labels[i, kept]
        count = kept.numel()
        logits = _masks_at_target(mask_logits[i, kept], size, target)
        assigned, in_own, above_area = _assign_pixels(logits, scores, mask_threshold)
        assigned_area = torch.bincount(assigned.flatten(), minlength=count)
        final_area = torch.bincount(assigned[in_own], minlength=count)
        # float32 division compared in float64, as transformers' `(a / b).item() > threshold`
        ratio_ok = (assigned_area / above_area).double() > overlap_mask_area_threshold
        valid = (assigned_area > 0) & (above_area > 0) & (final_area > 0) & ratio_ok

        segment_of, segments, first_of_stuff = [], [], {}
        for ok, label, score in zip(valid.tolist(), labels.tolist(), scores.tolist(), strict=True):
            if not ok:
                segment_of.append(-1)
            elif label in stuff and label in first_of_stuff:
                segment_of.append(first_of_stuff[label])
            else:
                if label in stuff:
                    first_of_stuff[label] = len(segments)
                segment_of.append(len(segments))
                segments.append({"id": len(segments), "label_id": label, "score": round(score, 6)})
        segment_ids = torch.tensor(segment_of, dtype=torch.long, device=device)[assigned]
        segmentation = torch.where(in_own, segment_ids, torch.full_like(segment_ids, -1))
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


# -------------------------------------------------------------------------------------- instance


def _mask_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) logits -> (masks logit > 0, mean sigmoid inside the mask), as transformers computes them."""
    masks = logits > 0
    inside = masks.flatten(1).to(logits.dtype)
    mean = (logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    return masks, mean


@torch.no_grad()
def instance_segmentation(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    target_sizes: Sequence[Sequence[int]] | torch.Tensor,
    size: dict[str, int],
    threshold: float = 0.8,
    mode: str = "threshold",
    top_k: int = 100,
    stuff_classes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Instance segmentations (padded inference).

    Mask logits are resized to `size_pair(size)`, cropped to the resized image and resized to the
    target size; a mask is logit > 0 and its mask score is the mean sigmoid inside it.

    - mode "threshold" (transformers' `post_process_instance_segmentation`): per query, score =
      largest non-no-object class probability x mask score; queries with a non-empty mask and
      score >= `threshold` are kept, in query order.
    - mode "topk" (the authors' evaluation, for AP): the `top_k` largest (query, class) probabilities
      over all Q x K pairs (no-object excluded), in decreasing order; score = class probability x
      mask score of the query; no threshold (`threshold` is ignored) and empty masks are kept.

    `stuff_classes` (a panoptic model's stuff: sky, road, ...) are never instances: their (query, class)
    pairs are left out before selecting, the other classes' probabilities stay as the softmax gave them.

    Returns per image {"segmentation": (H, W) int64 where each pixel holds the id of the last
    segment covering it (-1 = void), "segments_info": [{"id", "label_id", "score" (rounded to 6
    decimals)}], "masks": (N, H, W) bool, one per segment in id order}. transformers returns a
    float "segmentation" and no "masks".
    """
    if mode not in ("threshold", "topk"):
        raise ValueError(f"mode must be 'threshold' or 'topk', got {mode!r}")
    if mode == "topk" and top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    mask_logits, class_logits = _check_logits(mask_logits, class_logits)
    batch, num_queries, num_classes = mask_logits.shape[0], mask_logits.shape[1], class_logits.shape[-1] - 1
    sizes = _as_sizes(target_sizes, batch, "images in the batch")
    device = mask_logits.device
    class_probs = class_logits.softmax(-1)[..., :-1]
    things = None
    if stuff_classes:
        stuff = set(stuff_classes)
        things = torch.tensor([c for c in range(num_classes) if c not in stuff], dtype=torch.long, device=device)
        class_probs, num_classes = class_probs[..., things], len(things)
        if num_classes == 0:  # every class is stuff: no instance anywhere
            return [{"segmentation": torch.full(tuple(t), -1, dtype=torch.long, device=device), "segments_info": [],
                     "masks": torch.zeros((0, *t), dtype=torch.bool, device=device)} for t in sizes]

    results = []
    for i, target in enumerate(sizes):
        if mode == "threshold":
            top, labels = class_probs[i].max(-1)
            # exact pre-selection: a mask score is at most 1, so score <= class probability
            queries = (top.double() >= threshold).nonzero().flatten()
            if queries.numel():
                masks, mean = _mask_scores(_masks_at_target(mask_logits[i, queries], size, target))
                scores = top[queries] * mean
                keep = masks.flatten(1).any(1) & (scores.double() >= threshold)
                masks, scores, labels = masks[keep], scores[keep], labels[queries][keep]
            else:
                masks = torch.zeros((0, *target), dtype=torch.bool, device=device)
                scores, labels = top[:0], labels[:0]
        else:
            values, flat = class_probs[i].flatten().topk(min(top_k, num_queries * num_classes))
            queries, labels = flat // num_classes, flat % num_classes
            unique, inverse = torch.unique(queries, return_inverse=True)
            masks, mean = _mask_scores(_masks_at_target(mask_logits[i, unique], size, target))
            masks, scores = masks[inverse], values * mean[inverse]
        if things is not None:
            labels = things[labels]
        segments = [
            {"id": j, "label_id": label, "score": round(score, 6)}
            for j, (label, score) in enumerate(zip(labels.tolist(), scores.tolist(), strict=True))
        ]
        results.append({"segmentation": _last_covering(masks), "segments_info": segments, "masks": masks})
    return results
