"""Post-processing of EoMT outputs into semantic, panoptic and instance segmentations.

Plain functions over the model's `masks_queries_logits` (B, Q, h, w) and `class_queries_logits`
(B, Q, K + 1; the last class is "no object"). Everything is computed on the logits' device, without
gradients; float16 and bfloat16 logits are upcast to float32 first (the logits are small; the large
tensors are made from them). The inputs are never modified.

The rules are those of transformers 5.x `EomtImageProcessor.post_process_*_segmentation`, and the
results are the same (segment maps equal, scores within float rounding), but the work is done
differently:

- full resolution is streamed: the upsampled masks (or class scores) exist for a chunk of queries (classes)
  at a time, sized from a memory budget (`eomt.processing.memory`), while the per-pixel decisions are kept
  as running maxima / first-argmax maps and the per-query statistics as counts, so that memory is
  O(pixels), not O(queries x pixels). Bilinear interpolation is per channel, so a chunk's values are those
  of the whole; the result does not depend on the budget;
- queries (classes) that cannot change the result are dropped before any full-resolution work: panoptic and
  instance segmentation select queries from the class probabilities first (exact: an instance score is at
  most its class probability); then a query (class) that provably wins no pixel is dropped, and an instance
  query whose mask is provably empty or whose score provably stays below the threshold. "Provably": a
  bilinear output lies between the smallest and the largest of the 2 x 2 inputs it reads, so 2 x 2 min / max
  pools of the low-resolution values bound every full-resolution value (with a margin far above float
  rounding);
- semantic segmentation sums windows as matrix products (classes x queries @ queries x pixels), one window
  at a time;
- bilinear resizes to the size a tensor already has are skipped (they are the identity);
- the panoptic validity checks are counts over the assignment map, not one pass per query;
- the resize to the padded input size computes only the crop the image occupied (bit-equal values);
- per-pixel work runs a cache-sized band of rows at a time, and argmax over queries or classes is an
  amax (vectorised on CPU) of ranks.

Differences in the returned values, by design: the panoptic and instance "segmentation" maps are
always int64 with -1 for void (transformers returns a float map for instance segmentation, and a
float map of -1 for panoptic images with no kept query); instance results also carry "masks" (dense, or
`eomt.outputs.instance_masks.InstanceMasks` crops with `compact=True`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from eomt.processing.memory import (
    BAND_BYTES,
    MemoryBudget,
    MemoryBudgetError,
    Scratch,
    cpu_cache_bytes,
    fit_hint,
    format_size,
)
from eomt.processing.sizes import resized_size, size_pair

if TYPE_CHECKING:
    from eomt.outputs.instance_masks import InstanceMasks

__all__ = ["instance_masks", "instance_segmentation", "panoptic_segmentation", "semantic_segmentation"]

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


def _resize(x: torch.Tensor, hw: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (N, C, h, w); a resize to the current size is the identity (a
    copy into `out` when given; `out`: the contiguous (N, C, *hw) tensor to write)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x if out is None else out.copy_(x)
    if out is None:
        return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
    return torch.ops.aten.upsample_bilinear2d.out(x, list(hw), False, None, None, out=out)


def _rows_needed(out_size: int, in_size: int, keep: int) -> int:
    """Input rows (a prefix) that a bilinear resize in_size -> out_size reads for its first `keep` outputs
    and that resize exactly like the whole: the prefix p must give the same scale (p / (p * out / in)) and
    its last row must not be clamped; in_size when no shorter prefix qualifies."""
    source = (keep - 0.5) * in_size / out_size - 0.5  # where the last kept output row samples
    for rows in range(max(1, int(source) + 2), in_size):
        if (rows * out_size) % in_size == 0 and rows * out_size // in_size >= keep:
            return rows
    return in_size


def _stage1(logits: torch.Tensor, size: dict[str, int], target: tuple[int, int]) -> torch.Tensor:
    """Mask logits (N, h, w) of a padded input -> (1, N, crop_h, crop_w): resized to the network input size
    and cropped to the region the resized image occupied. Only the rows and columns the crop keeps are
    computed (from an input prefix with the same scale, so the values are those of the full resize; padding is
    a third of a landscape photo's input)."""
    height, width = target
    (full_h, full_w), (h, w) = size_pair(size), logits.shape[-2:]
    crop_h, crop_w = resized_size(height, width, size["shortest_edge"], size.get("longest_edge"))
    rows, cols = _rows_needed(full_h, h, crop_h), _rows_needed(full_w, w, crop_w)
    out = _resize(logits[None, :, :rows, :cols], (rows * full_h // h, cols * full_w // w))
    return out[..., :crop_h, :crop_w]


def _masks_at_target(logits: torch.Tensor, size: dict[str, int], target: tuple[int, int],
                     scratch: Scratch | None = None) -> torch.Tensor:
    """Mask logits (N, h, w) of a padded input -> (N, H, W) at the original image size: up to the network
    input size, crop of the region the resized image occupied (`_stage1`), resize to the target. With
    `scratch`, the result is written into its "masks" buffer (the same memory for every chunk)."""
    crop = _stage1(logits, size, target)
    out = None if scratch is None else scratch.take("masks", (1, logits.shape[0], *target), crop.dtype)
    return _resize(crop, target, out)[0]


def _fresh(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """`x`, or a copy of it where it shares memory with `source` (a resize to the same size is a view)."""
    return x.clone() if x.untyped_storage().data_ptr() == source.untyped_storage().data_ptr() else x


def _bands(rows: int, row_bytes: int) -> int:
    """Rows per band of per-pixel work so that a band holds about `BAND_BYTES` (everything on non-CPU devices
    is one band only when it fits the same rule: bands bound the temporaries there too)."""
    return max(1, min(rows, BAND_BYTES // max(1, row_bytes)))


def _pooled_bound(values: torch.Tensor, op, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(N, h, w) -> (N, h, w) of `dtype`: `op` (torch.minimum or torch.maximum) over the 2 x 2 inputs
    {i, i+1} x {j, j+1} (clamped at the last row / column), the inputs a bilinear output sampling at
    (i + a, j + b), 0 <= a, b < 1, reads: its lower or upper bound. (Selection: exact in any dtype that holds the
    values; elementwise ops on shifted views are 3x faster than pooling on CPU.)"""
    values = values.to(dtype)
    rows = torch.empty_like(values)
    op(values[:, :-1], values[:, 1:], out=rows[:, :-1])
    rows[:, -1] = values[:, -1]
    out = torch.empty_like(values)
    op(rows[:, :, :-1], rows[:, :, 1:], out=out[:, :, :-1])
    out[:, :, -1] = rows[:, :, -1]
    return out


_RELATIVE_MARGIN = 1e-4  # on bounds of float32 values: float rounding is about 1e-7 relative


def _lowered(lower: torch.Tensor) -> torch.Tensor:
    """A lower bound moved down by a margin far above the rounding of float32 interpolation."""
    return lower - _RELATIVE_MARGIN * (1 + lower.abs())


def _raised(upper: torch.Tensor) -> torch.Tensor:
    """An upper bound moved up by a margin far above the rounding of float32 interpolation."""
    return upper + _RELATIVE_MARGIN * (1 + upper.abs())


def _widen(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds moved apart by a margin far above the rounding of float32 interpolation."""
    return _lowered(lower), _raised(upper)


def _check_fits(budget: MemoryBudget, fixed: int, per_item: int, task: str, target: tuple[int, int]) -> None:
    """MemoryBudgetError (one line, with what would fit) unless the output maps plus one item fit the budget."""
    limit = budget.limit()
    if fixed + per_item > limit:
        height, width = target
        raise MemoryBudgetError(
            f"{task} post-processing of a {width}x{height} image needs about {format_size(fixed + per_item)} "
            f"streamed, more than the {format_size(limit)} {'budget' if budget.explicit else 'available'}; "
            f"{fit_hint(task, height, width, limit)}")


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


_GRAIN = 32768  # elements below which a torch CPU elementwise op runs on one thread (at::internal::GRAIN_SIZE)


def _band_pixels() -> int:
    """Pixels per band of the per-channel elementwise passes on CPU: the largest power of two whose band arrays
    (about 8 of float32) fill half the last-level cache, at least 2^17, so each op's call overhead stays small,
    and at least two parallel grains per CPU thread, so each pass runs on every thread. (The 12 MP panoptic
    passes: 2 AMD EPYC cores with 8 MB L3 were fastest at 2^17 pixels, 0.70 s per 20 queries vs 0.92 s at 2^19;
    2 Zen 5 EPYC cores with 32 MB L3 at 2^19, 2.82 s vs 3.33 s at 2^17.)"""
    fits = 1 << max(17, (cpu_cache_bytes() // 64).bit_length() - 1)
    return max(fits, 2 * _GRAIN * torch.get_num_threads())


def _band_length(width: int, pixels: int, device: torch.device) -> int:
    """Pixels (whole rows of `width`) per band of the elementwise passes: `_band_pixels()` on CPU, at most 2^24
    elsewhere (float32 sums of 0 / 1 values stay exact)."""
    return min(pixels, max(1, (_band_pixels() if device.type == "cpu" else 1 << 24) // width) * width)


def _fold_first_max(values: torch.Tensor, best: torch.Tensor, winner: torch.Tensor, label: torch.Tensor,
                    better: torch.Tensor) -> None:
    """Fold one channel's `values` into a running first maximum, in place: where values > best (strictly, so an
    earlier channel keeps a tie, as argmax), `best` takes the value and `winner` (float32) the 0-d float32
    `label`; `better` (float32, the band's size) is left holding where that happened, as 0 / 1.

    On CPU torch's float comparisons, maxima and lerps are 3-5x faster than its comparisons into bool, masked
    fills and boolean `where`; lerp with a weight of exactly 0 or 1 returns an end point, so the map is exact."""
    torch.gt(values, best, out=better)
    torch.maximum(best, values, out=best)
    torch.lerp(winner, label, better, out=winner)


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


def _window_probs(mask_logits: torch.Tensor, window_hw: tuple[int, int]) -> torch.Tensor:
    """(Q, h, w) mask logits -> (Q, *window_hw) probabilities (a new tensor: the input is never modified)."""
    probs = _resize(mask_logits[None], window_hw)[0]
    return _fresh(probs, mask_logits).sigmoid_()


def _semantic_canvas(
    mask_logits: torch.Tensor,
    weights: torch.Tensor,
    rows: list[int],
    placement: list[tuple[int, int]] | None,
    axis: int,
    window_hw: tuple[int, int],
    canvas_hw: tuple[int, int],
) -> torch.Tensor:
    """Per-pixel scores (C, h, w) of the channels `weights` ((B, Q, C)) at the canvas (resized image) size.

    Each window's scores are weights^T @ mask probabilities; with a placement, windows are summed
    into a canvas along `axis` and divided by the per-pixel window count (as transformers does). One
    window's probabilities exist at a time.
    """
    channels = weights.shape[-1]
    if placement is None:
        (row,) = rows
        p = _window_probs(mask_logits[row], window_hw)
        return (weights[row].T @ p.flatten(1)).view(channels, *p.shape[1:])
    device, dtype = mask_logits.device, weights.dtype
    scores = torch.zeros((channels, *canvas_hw), device=device, dtype=dtype)
    count = torch.zeros(canvas_hw, device=device, dtype=dtype)
    band = _window_band(channels, window_hw, device)
    for row, (start, end) in zip(rows, placement, strict=True):
        _add_window(scores.narrow(axis + 1, start, end - start), weights[row].T,
                    _window_probs(mask_logits[row], window_hw), band)
        count.narrow(axis, start, end - start).add_(1)
    return scores.div_(count.clamp(min=1))


def _add_window(region: torch.Tensor, weights: torch.Tensor, probs: torch.Tensor, band: int) -> None:
    """region (C, h, w) += weights (C, Q) @ probs (Q, h, w), `band` rows of the product at a time (no (C, h, w)
    window beside the canvas)."""
    for top in range(0, probs.shape[1], band):
        part = probs[:, top:top + band]
        region[:, top:top + band].add_((weights @ part.flatten(1)).view(region.shape[0], *part.shape[1:]))


def _window_band(channels: int, window_hw: tuple[int, int], device: torch.device) -> int:
    """Window rows per product of a sliding-window canvas: about 16 MB of scores on CPU, where the rows of a
    product do not change with the columns given (the sum over queries runs in the same order); the whole window
    on other devices, whose libraries choose a kernel (and a summation order) by the product's shape."""
    if device.type != "cpu":
        return window_hw[0]
    return max(1, min(window_hw[0], (16 << 20) // (4 * channels * window_hw[1])))


def _semantic_candidates(scores: torch.Tensor, target: tuple[int, int], budget: MemoryBudget) -> torch.Tensor:
    """Indices (ascending) of the classes that may be the first maximum of some pixel of the bilinear resize of
    the (C, h, w) `scores` to `target`: a class whose upper bound is below another class's lower bound at every
    2 x 2 input window can never be the maximum (nor tie with it). Every class when the target is less than 4x
    the scores' size (the bounds would cost more than they save)."""
    count, height, width = scores.shape
    if count <= 1 or 4 * height * width >= target[0] * target[1]:  # the bounds would cost more than they save
        return torch.arange(count, device=scores.device)
    # float32 where the scores are: pooling selects values (exact), and the rounding of the margins (about 1e-7
    # relative) stays far below them; float32 pooling is several times faster than float64
    dtype = torch.promote_types(scores.dtype, torch.float32)
    chunk = budget.chunk(height * width * 20, count)
    best_lower = torch.full((height, width), -torch.inf, dtype=dtype, device=scores.device)
    for start in range(0, count, chunk):
        lower = _lowered(_pooled_bound(scores[start:start + chunk], torch.minimum, dtype))
        best_lower = torch.maximum(best_lower, lower.amax(0))
    keep = torch.zeros(count, dtype=torch.bool, device=scores.device)
    for start in range(0, count, chunk):
        upper = _raised(_pooled_bound(scores[start:start + chunk], torch.maximum, dtype))
        # upper >= best_lower somewhere, as a float maximum (x - y >= 0 exactly when x >= y; faster than bool any)
        keep[start:start + chunk] = upper.sub_(best_lower).flatten(1).amax(1) >= 0
    return keep.nonzero().flatten()


def _resized_argmax(scores: torch.Tensor, candidates: torch.Tensor, target: tuple[int, int],
                    budget: MemoryBudget, fixed: int) -> torch.Tensor:
    """(H, W) int64: `_argmax0(_resize(scores[None], target)[0])` for (C, h, w) `scores` whose first maximum is
    always one of `candidates` (ascending), streamed: a chunk of candidate channels is resized at a time and each
    channel folded into a running first maximum (`_fold_first_max`) over bands of `_band_pixels()` pixels; the
    class map is float32 meanwhile (class ids are small integers: exact)."""
    device = scores.device
    if candidates.numel() == 1:  # the only class that can win anywhere
        return torch.full(target, int(candidates[0]), dtype=torch.long, device=device)
    height, width = target
    pixels = height * width
    winner = torch.zeros(pixels, device=device)
    best = torch.full((pixels,), -torch.inf, dtype=scores.dtype, device=device)
    rows = _band_length(width, pixels, device)
    better = torch.empty(rows, device=device)
    chunk = budget.chunk(4 * pixels, candidates.numel(), fixed)
    scratch = Scratch(device)  # every chunk resized into the same memory (no fresh pages per chunk)
    for start in range(0, candidates.numel(), chunk):
        ids = candidates[start:start + chunk]
        resized = _resize(scores[ids][None], target,
                          scratch.take("resized", (1, ids.numel(), *target), scores.dtype))[0].view(ids.numel(), -1)
        labels = [torch.tensor(float(i), device=device) for i in ids.tolist()]
        for top in range(0, pixels, rows):
            n = min(rows, pixels - top)
            band_best, band_winner = best[top:top + n], winner[top:top + n]
            for j, label in enumerate(labels):
                _fold_first_max(resized[j, top:top + n], band_best, band_winner, label, better[:n])
    del best
    return winner.view(target).long()


@torch.no_grad()
def semantic_segmentation(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    target_sizes: Sequence[Sequence[int]] | torch.Tensor,
    size: dict[str, int],
    patch_offsets: Sequence[Sequence[int] | torch.Tensor] | None = None,
    return_scores: bool = False,
    max_memory: int | str | MemoryBudget | None = None,
) -> list[torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
    """Semantic maps (H, W) int64 of class ids, as transformers' `post_process_semantic_segmentation`.

    Mask logits are resized bilinearly to `size_pair(size)`; per-pixel class scores are
    einsum(softmax(class)[..., :-1], sigmoid(mask)). With `patch_offsets` (one (image_index, start,
    end) per batch row; the window runs along the height if the target is taller than wide, else
    along the width), window scores are summed into a canvas of the resized image size
    `resized_size(H, W, shortest_edge, longest_edge)`, divided by the per-pixel window count and
    resized to the target size; `target_sizes` then has one entry per image index. Without
    `patch_offsets`, each row's scores are resized straight to its target size.

    With `return_scores`, each item is (map, scores (K, H, W)) (the scores are then made in full, K x H x W).
    `max_memory` (bytes, "2GB", a `MemoryBudget`; default automatic) sizes the chunks of classes upsampled at
    once; the result does not depend on it.
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

    budget = MemoryBudget.of(max_memory, mask_logits.device)
    results: list = []
    for (rows, placement, axis, canvas_hw), target in zip(plans, sizes, strict=True):
        if not rows:  # an image with no window: all scores are 0, as in transformers
            scores = torch.zeros((class_probs.shape[-1], *target), device=mask_logits.device, dtype=class_probs.dtype)
            results.append((scores.argmax(0), scores) if return_scores else scores.argmax(0))
            continue
        scores = _semantic_canvas(mask_logits, class_probs, rows, placement, axis, window_hw, canvas_hw)
        if return_scores:  # the caller asked for every class's full-resolution scores
            scores = _resize(scores[None], target)[0]
            results.append((_argmax0(scores), scores))
        elif tuple(scores.shape[-2:]) == tuple(target):
            results.append(_argmax0(scores))
        else:
            fixed = 12 * target[0] * target[1]  # running maximum (float32) and the map (int64)
            _check_fits(budget, fixed, 4 * target[0] * target[1], "semantic", target)
            candidates = _semantic_candidates(scores, target, budget)
            results.append(_resized_argmax(scores, candidates, target, budget, fixed))
    return results


# -------------------------------------------------------------------------------------- panoptic


_PRUNE_BLOCK = 4  # 2 x 2 windows per side of a block of the panoptic prune


def _block_bounds(values: torch.Tensor, block: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, h, w) -> (lower, upper) (N, ceil(h / block), ceil(w / block)) of `dtype`: min / max over the inputs
    {k * block, ..., k * block + block} (clamped at the last row / column) of each block of block x block
    2 x 2 windows, the inputs every bilinear output sampling in that block reads (see `_pooled_bound`)."""
    height, width = values.shape[-2:]
    rows, cols = -(-height // block), -(-width // block)
    # edge values repeated: the same min / max as the clamped reads
    padded = values.new_empty((values.shape[0], rows * block + 1, cols * block + 1), dtype=dtype)
    padded[:, :height, :width] = values
    padded[:, height:, :width] = padded[:, height - 1:height, :width]
    padded[:, :, width:] = padded[:, :, width - 1:width]

    def reduce(op) -> torch.Tensor:  # over overlapping windows of block + 1 rows, then columns (views: no copy)
        return op(op(padded.unfold(1, block + 1, block), -1).unfold(2, block + 1, block), -1)

    # 2.2x faster than replicate padding and max pooling on CPU (180 x 480 x 640 logits: 0.43 s -> 0.19 s)
    return reduce(torch.amin), reduce(torch.amax)


def _panoptic_candidates(logits: torch.Tensor, scores: torch.Tensor, size: dict[str, int],
                         target: tuple[int, int], budget: MemoryBudget) -> torch.Tensor:
    """Indices (ascending) of the kept queries that may own a pixel: a pixel goes to the first maximum of
    score x sigmoid(logit), and each full-resolution logit is a bilinear output of the `_stage1` crop, so a
    query whose upper bound is below another query's lower bound in every block of `_PRUNE_BLOCK` x
    `_PRUNE_BLOCK` windows of 2 x 2 inputs wins nowhere. A query that wins nowhere has no assigned area, so it is
    never a segment, and the others' argmax is unchanged. (Blocks rather than single windows: the bounds then
    cost one pass over the crop, and they drop the same dominated duplicates.)"""
    count = logits.shape[0]
    crop = _stage1(logits[:1], size, target).shape[-2:]
    if count <= 1 or 4 * crop[0] * crop[1] >= target[0] * target[1]:  # the bounds would cost more than they save
        return torch.arange(count, device=logits.device)
    # float32 where the logits are: the few roundings of sigmoid and product (about 1e-7 relative each) stay far
    # below the 1e-4 margins
    dtype = torch.promote_types(logits.dtype, torch.float32)
    weights = scores.to(dtype)[:, None, None]
    chunk = budget.chunk(crop[0] * crop[1] * 16, count)
    best_lower, uppers = None, []
    for start in range(0, count, chunk):
        stage1 = _stage1(logits[start:start + chunk], size, target)[0]
        lower, upper = _widen(*_block_bounds(stage1, _PRUNE_BLOCK, dtype))
        w = weights[start:start + chunk]
        lower = (w * lower.sigmoid() * (1 - _RELATIVE_MARGIN)).amax(0)
        best_lower = lower if best_lower is None else torch.maximum(best_lower, lower)
        uppers.append(w * upper.sigmoid() * (1 + _RELATIVE_MARGIN))
    keep = (torch.cat(uppers) >= best_lower).flatten(1).any(1)
    return keep.nonzero().flatten()


def _product_thresholds(scores: torch.Tensor, mask_threshold: float, dtype: torch.dtype,
                        product: torch.dtype) -> torch.Tensor | None:
    """Per query, the value t of score x probability (computed as the per-pixel products are) such that
    probability >= `mask_threshold` exactly where score x probability >= t; None where one query has none.

    Products round monotonically, so t = score x (the smallest `dtype` probability the threshold admits) works
    when the largest probability it rejects gives a strictly smaller product. Then whether a pixel's query is
    above the threshold there follows from the pixel's maximum and its query alone, after the fold."""
    rounded = torch.tensor(mask_threshold, dtype=dtype, device=scores.device)
    lowest = rounded if bool(torch.ge(rounded, mask_threshold)) else torch.nextafter(rounded,
                                                                                     rounded.new_tensor(torch.inf))
    pair = torch.stack([torch.nextafter(lowest, lowest.new_tensor(-torch.inf)), lowest])
    if not bool(torch.ge(pair[1], mask_threshold)) or bool(torch.ge(pair[0], mask_threshold)):
        return None
    products = torch.empty((scores.numel(), 2), dtype=product, device=scores.device)
    for j in range(scores.numel()):
        torch.mul(pair, scores[j], out=products[j])
    rejected, admitted = products.unbind(1)
    return admitted if bool((rejected < admitted).all()) else None


def _assign_pixels(logits: torch.Tensor, scores: torch.Tensor, size: dict[str, int], target: tuple[int, int],
                   mask_threshold: float, budget: MemoryBudget) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the (N, h, w) low-resolution mask logits of the kept queries, at the target size: each pixel's query
    (first argmax of score x sigmoid(mask)), whether that query's probability reaches `mask_threshold` there,
    and each query's area at or above it.

    Streamed: the candidates (`_panoptic_candidates`) are upsampled a chunk at a time and folded into a running
    maximum (a later query wins only where strictly larger: the first maximum, as argmax). The query map is
    int16 (int32 beyond 32766 queries). The per-pixel work is elementwise, one query at a time over a band of
    `_band_pixels()` pixels, so no reduction over queries runs and the band's arrays stay small. Within a band the
    comparisons are float 0 / 1 tensors and the query map and in-own flags float32 (small integers, exact):
    on CPU torch's float-to-bool comparisons, boolean sums and masked fills cost 3-5x its float ones. In-own is
    decided once after the fold (`_product_thresholds`) where the threshold allows, else tracked per query.
    """
    count = logits.shape[0]
    height, width = target
    pixels = height * width
    device = logits.device
    index_dtype = torch.int16 if count < 32767 else torch.int32
    fixed = pixels * (4 + index_dtype.itemsize + 1 + 8)  # maximum, query map, in_own, the segment map after
    _check_fits(budget, fixed, 4 * pixels, "panoptic", target)
    candidates = _panoptic_candidates(logits, scores, size, target, budget)
    assigned = torch.zeros(target, dtype=index_dtype, device=device)
    in_own = torch.zeros(target, dtype=torch.bool, device=device)
    product = torch.promote_types(scores.dtype, logits.dtype)  # of score x probability, as the dense product
    best = torch.full(target, -torch.inf, dtype=product, device=device)
    chunk = budget.chunk(4 * pixels, candidates.numel(), fixed)
    rows = _band_length(width, pixels, device)
    exact = torch.float32 if rows <= 1 << 24 else torch.float64  # float sums of 0 / 1 are exact below 2^24
    probs = torch.empty(rows, dtype=logits.dtype, device=device)
    weighted = probs if product == logits.dtype else torch.empty(rows, dtype=product, device=device)
    # float32 0 / 1 and small integers: exact (lerp with a weight of exactly 0 or 1 returns an end point)
    above, better, band_query, band_own = (torch.empty(rows, device=device) for _ in range(4))
    flat_best, flat_assigned, flat_in_own = best.view(-1), assigned.view(-1), in_own.view(-1)
    # where the threshold is one on the products, in-own is decided after the fold from the maximum
    thresholds = _product_thresholds(scores, mask_threshold, logits.dtype, product)
    counts = []
    scratch = Scratch(device)
    for start in range(0, candidates.numel(), chunk):
        ids = candidates[start:start + chunk]
        chunk_logits = _masks_at_target(logits[ids], size, target, scratch).reshape(ids.numel(), -1)
        weights = scores[ids]
        queries = [(j, query, torch.tensor(float(query), device=device)) for j, query in enumerate(ids.tolist())]
        for top in range(0, pixels, rows):
            n = min(rows, pixels - top)
            p, a, b, q_map, own = probs[:n], above[:n], better[:n], band_query[:n], band_own[:n]
            q_map.copy_(flat_assigned[top:top + n])
            if thresholds is None:
                own.copy_(flat_in_own[top:top + n])
            band_best = flat_best[top:top + n]
            for j, query, as_float in queries:
                torch.sigmoid(chunk_logits[j, top:top + n], out=p)
                torch.ge(p, mask_threshold, out=a)
                counts.append((query, a.sum(dtype=exact)))
                _fold_first_max(torch.mul(p, weights[j], out=weighted[:n]), band_best, q_map, as_float, b)
                if thresholds is None:
                    torch.lerp(own, a, b, out=own)  # where(b, a, own)
            flat_assigned[top:top + n] = q_map
            if thresholds is None:
                flat_in_own[top:top + n] = own
        del chunk_logits
    if thresholds is not None:
        for top in range(0, pixels, rows):
            n = min(rows, pixels - top)
            query_thresholds = thresholds[flat_assigned[top:top + n].long()]
            torch.ge(flat_best[top:top + n], query_thresholds, out=flat_in_own[top:top + n])
    above_area = torch.zeros(count, dtype=torch.long, device=device)
    if counts:
        above_area.index_add_(0, torch.tensor([q for q, _ in counts], device=device),
                              torch.stack([c for _, c in counts]).long())
    return assigned, in_own, above_area


def _areas(assigned: torch.Tensor, in_own: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels assigned to each query, and those of them where it is above the mask threshold (band by band)."""
    assigned_area = torch.zeros(count, dtype=torch.long, device=assigned.device)
    final_area = torch.zeros(count, dtype=torch.long, device=assigned.device)
    band = _bands(assigned.shape[0], 16 * assigned.shape[1])
    for top in range(0, assigned.shape[0], band):
        rows = assigned[top:top + band].long()
        assigned_area += torch.bincount(rows.flatten(), minlength=count)
        final_area += torch.bincount(rows[in_own[top:top + band]], minlength=count)
    return assigned_area, final_area


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
    max_memory: int | str | MemoryBudget | None = None,
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
    query also gets an int64 map (transformers returns a float map of -1 there). `max_memory` (bytes, "2GB", a
    `MemoryBudget`; default automatic) sizes the chunks of queries upsampled at once; the result does not
    depend on it.
    """
    mask_logits, class_logits = _check_logits(mask_logits, class_logits)
    batch, num_labels = mask_logits.shape[0], class_logits.shape[-1] - 1
    sizes = _as_sizes(target_sizes, batch, "images in the batch")
    stuff = set(stuff_classes) if stuff_classes else set()
    device = mask_logits.device

    top_scores, top_labels = class_logits.softmax(-1).max(-1)
    keep = top_labels.ne(num_labels) & (top_scores > threshold)
    budget = MemoryBudget.of(max_memory, device)

    results = []
    for i, target in enumerate(sizes):
        kept = keep[i].nonzero().flatten()
        if kept.numel() == 0:
            results.append({"segmentation": torch.full(target, -1, dtype=torch.long, device=device),
                            "segments_info": []})
            continue
        scores, labels = top_scores[i, kept], top_labels[i, kept]
        count = kept.numel()
        assigned, in_own, above_area = _assign_pixels(mask_logits[i, kept], scores, size, target, mask_threshold,
                                                      budget)
        assigned_area, final_area = _areas(assigned, in_own, count)
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
        segment_ids = torch.tensor(segment_of, dtype=torch.long, device=device)
        segmentation = torch.empty(target, dtype=torch.long, device=device)
        band = _bands(target[0], 24 * target[1])
        for top in range(0, target[0], band):
            ids = segment_ids[assigned[top:top + band].long()]
            segmentation[top:top + band] = ids.masked_fill_(~in_own[top:top + band], -1)
        del assigned, in_own
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


# -------------------------------------------------------------------------------------- instance


def _row_sums(x: torch.Tensor, whole: bool) -> torch.Tensor:
    """Row sums of an (n, L) float tensor, each with the value torch gives it within any tensor of rows.

    On CPU torch sums each row alone (serially) when a tensor has at least as many rows as threads, and splits
    a row over the threads when it has fewer, which rounds differently; so a chunk of fewer rows sums each row
    as one of a tensor of `threads` rows (an expanded view: no copy). `whole`: the chunk is every row the
    dense computation sums at once, summed as it is."""
    threads = torch.get_num_threads()
    if whole or x.device.type != "cpu" or x.shape[0] >= threads or x.shape[0] == 0:
        return x.sum(1)
    return torch.stack([row.expand(threads, -1).sum(1)[0] for row in x])


def _instance_candidates(logits: torch.Tensor, top: torch.Tensor, size: dict[str, int], target: tuple[int, int],
                         threshold: float) -> torch.Tensor:
    """Indices (ascending) of the pre-selected queries that may be kept: a full-resolution logit is a bilinear
    output of a bilinear output of the low-resolution logits that `_stage1` reads, so it is at most their maximum;
    below 0 the mask is empty, and the mask score (a mean of sigmoids inside the mask) is at most the sigmoid of
    it."""
    full_h, full_w = size_pair(size)
    crop_h, crop_w = resized_size(*target, size["shortest_edge"], size.get("longest_edge"))
    rows, cols = _rows_needed(full_h, logits.shape[-2], crop_h), _rows_needed(full_w, logits.shape[-1], crop_w)
    peaks = logits[:, :rows, :cols].amax((1, 2)).double()
    upper = _raised(peaks)
    possible = (upper > 0) & (top.double() * upper.sigmoid() * (1 + 1e-3) >= threshold)
    return possible.nonzero().flatten()


def _instance_chunks(logits: torch.Tensor, candidates: torch.Tensor, size: dict[str, int],
                     target: tuple[int, int], chunk: int, whole: bool):
    """Yield (query indices, masks (n, H, W) as float 0 / 1, mask scores (n,), non-empty (n,) bool) `chunk` of
    `candidates` at a time; a mask is logit > 0 and its score the mean sigmoid inside it, as transformers computes
    them. `whole`: the one chunk is all the rows the dense computation sums at once (see `_row_sums`). The masks
    live in a reused buffer: they hold until the next chunk is asked for (`_bool_masks` makes the kept ones bool)."""
    scratch = Scratch(logits.device)
    for start in range(0, candidates.numel(), chunk):
        ids = candidates[start:start + chunk]
        values = _masks_at_target(logits[ids], size, target, scratch)
        inside = torch.gt(values, 0, out=scratch.take("inside", values.shape, values.dtype))
        weighted = values.sigmoid_().flatten(1).mul_(inside.flatten(1))
        area = _row_sums(inside.flatten(1), whole)
        mean = _row_sums(weighted, whole) / (area + 1e-6)
        del values, weighted
        yield ids, inside, mean, area > 0  # a sum of zeros and ones is positive exactly when one is one
        del inside


def _bool_masks(inside: torch.Tensor, rows: list[int], scratch: Scratch) -> torch.Tensor:
    """The (len(rows), H, W) bool masks of the chosen rows of an (n, H, W) float 0 / 1 stack, in `scratch`'s
    "masks" buffer (a float-to-bool copy per row: faster on CPU than a comparison into bool, and no gathered
    float copy)."""
    out = scratch.take("masks", (len(rows), *inside.shape[1:]), torch.bool)
    for k, row in enumerate(rows):
        out[k].copy_(inside[row])
    return out


def _tight_crops(masks: torch.Tensor) -> list[tuple[int, int, np.ndarray]]:
    """`tight_crop` of each of the (n, H, W) bool masks, as numpy views into them (numpy: one thread, torch would
    wake its pool for each crop), with the row and column occupancy of the whole chunk found in two reductions
    rather than two per mask (as uint8 maxima: 10-18x faster than torch's boolean any on CPU)."""
    as_bytes = masks.view(torch.uint8)
    rows_any, cols_any = as_bytes.amax(2).bool().cpu(), as_bytes.amax(1).bool().cpu()
    array = masks.cpu().numpy()
    out = []
    for mask, row_any, col_any in zip(array, rows_any, cols_any, strict=True):
        rows, cols = row_any.nonzero().flatten(), col_any.nonzero().flatten()
        if rows.numel() == 0:
            out.append((0, 0, np.zeros((0, 0), dtype=np.bool_)))
            continue
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        out.append((y0, x0, mask[y0:y1, x0:x1]))
    return out


def _instance_image(logits: torch.Tensor, probs: torch.Tensor, size: dict[str, int], target: tuple[int, int],
                    budget: MemoryBudget, threshold: float, mode: str, top_k: int):
    """One image's instances: (InstanceMasks, labels (N,), scores (N,)), as in `instance_segmentation`."""
    from ..outputs.instance_masks import InstanceMasks

    num_queries, num_classes = probs.shape
    pixels = target[0] * target[1]
    out = InstanceMasks(*target)
    bools = Scratch(logits.device)  # the kept masks of a chunk, as bool
    if mode == "threshold":
        top, labels = probs.max(-1)
        # exact pre-selection: a mask score is at most 1, so score <= class probability
        queries = (top.double() >= threshold).nonzero().flatten()
        if queries.numel() == 0:
            return out, labels[:0], top[:0]
        _check_fits(budget, 8 * pixels, 9 * pixels, "instance", target)
        count = queries.numel()
        # dropping rows changes how a CPU tensor of fewer rows than threads is summed: only with enough rows
        droppable = logits.device.type == "cpu" and count >= torch.get_num_threads()
        local = (_instance_candidates(logits[queries], top[queries], size, target, threshold) if droppable
                 else torch.arange(count, device=logits.device))
        chunk = budget.chunk(9 * pixels, local.numel(), 8 * pixels)
        whole = chunk == count  # nothing dropped, one chunk: summed exactly as the dense computation
        kept_labels, kept_scores = [labels[:0]], [top[:0]]
        for ids, inside, mean, nonempty in _instance_chunks(logits[queries], local, size, target, chunk, whole):
            chosen = queries[ids]
            scores = top[chosen] * mean
            keep = nonempty & (scores.double() >= threshold)
            chosen_ids = keep.nonzero().flatten()
            for top_row, left, crop in _tight_crops(_bool_masks(inside, chosen_ids.tolist(), bools)):
                out.add_crop(crop, top_row, left)
            kept_labels.append(labels[chosen][keep])
            kept_scores.append(scores[keep])
        return out, torch.cat(kept_labels), torch.cat(kept_scores)
    values, flat = probs.flatten().topk(min(top_k, num_queries * num_classes))
    queries, labels = flat // num_classes, flat % num_classes
    unique, inverse = torch.unique(queries, return_inverse=True)
    _check_fits(budget, 8 * pixels, 9 * pixels, "instance", target)
    count = unique.numel()
    chunk = budget.chunk(9 * pixels, count, 8 * pixels)
    mean = torch.empty(count, dtype=probs.dtype, device=probs.device)
    everything = torch.arange(count, device=probs.device)
    for ids, inside, chunk_mean, _ in _instance_chunks(logits[unique], everything, size, target, chunk, chunk == count):
        mean[ids] = chunk_mean
        # chunks come in order: crop j is unique query j
        for top, left, crop in _tight_crops(_bool_masks(inside, list(range(ids.numel())), bools)):
            out.add_crop(crop, top, left)
    # duplicates (one query, several classes) share one packed crop
    return out.take(inverse.tolist()), labels, values * mean[inverse]


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
    max_memory: int | str | MemoryBudget | None = None,
    compact: bool = False,
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
    float "segmentation" and no "masks". With `compact`, "masks" is an `InstanceMasks` (tight crops: no
    N x H x W stack is ever made). `max_memory` (bytes, "2GB", a `MemoryBudget`; default automatic) sizes the
    chunks of queries upsampled at once; the result does not depend on it.
    """
    results = []
    for masks, segments in instance_masks(mask_logits, class_logits, target_sizes, size, threshold, mode, top_k,
                                          stuff_classes, max_memory):
        segmentation = masks.last_covering().to(mask_logits.device)
        results.append({"segmentation": segmentation, "segments_info": segments,
                        "masks": masks if compact else masks.dense().to(mask_logits.device)})
    return results


@torch.no_grad()
def instance_masks(
    mask_logits: torch.Tensor,
    class_logits: torch.Tensor,
    target_sizes: Sequence[Sequence[int]] | torch.Tensor,
    size: dict[str, int],
    threshold: float = 0.8,
    mode: str = "threshold",
    top_k: int = 100,
    stuff_classes: Sequence[int] | None = None,
    max_memory: int | str | MemoryBudget | None = None,
) -> list[tuple[InstanceMasks, list[dict[str, Any]]]]:
    """Per image (masks as `InstanceMasks`, segments_info) of `instance_segmentation`, without the
    last-covering map (tiling merges windows' masks and makes one map for the whole image)."""
    from ..outputs.instance_masks import InstanceMasks

    if mode not in ("threshold", "topk"):
        raise ValueError(f"mode must be 'threshold' or 'topk', got {mode!r}")
    if mode == "topk" and top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    mask_logits, class_logits = _check_logits(mask_logits, class_logits)
    batch, num_classes = mask_logits.shape[0], class_logits.shape[-1] - 1
    sizes = _as_sizes(target_sizes, batch, "images in the batch")
    device = mask_logits.device
    class_probs = class_logits.softmax(-1)[..., :-1]
    things = None
    if stuff_classes:
        stuff = set(stuff_classes)
        things = torch.tensor([c for c in range(num_classes) if c not in stuff], dtype=torch.long, device=device)
        class_probs, num_classes = class_probs[..., things], len(things)
        if num_classes == 0:  # every class is stuff: no instance anywhere
            return [(InstanceMasks(*t), []) for t in sizes]

    budget = MemoryBudget.of(max_memory, device)
    results = []
    for i, target in enumerate(sizes):
        masks, labels, scores = _instance_image(mask_logits[i], class_probs[i], size, target, budget, threshold,
                                                mode, top_k)
        if things is not None:
            labels = things[labels]
        segments = [
            {"id": j, "label_id": label, "score": round(score, 6)}
            for j, (label, score) in enumerate(zip(labels.tolist(), scores.tolist(), strict=True))
        ]
        results.append((masks, segments))
    return results
