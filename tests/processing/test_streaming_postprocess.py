"""Streamed post-processing equals the dense computation bit for bit, at any memory budget.

The dense reference below is the post-processing as it was before streaming (every kept query's mask
upsampled at once, one argmax over all of them), written out here. Logits are confident random ones
(object queries with one class far above the others, masks of about +/-8 on random rectangles), plus
exact ties (duplicated queries, quantised class scores) so that the first-index rule is exercised.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from eomt.outputs.instance_masks import InstanceMasks
from eomt.processing import postprocess
from eomt.processing.memory import MemoryBudget
from eomt.processing.postprocess import (
    _argmax0,
    _masks_at_target,
    _product_thresholds,
    instance_segmentation,
    panoptic_segmentation,
    semantic_segmentation,
)
from eomt.processing.sizes import resized_size, size_pair

PADDED = {"shortest_edge": 64, "longest_edge": 64}
SLIDING = {"shortest_edge": 64}
TARGETS = [(37, 53), (200, 120), (90, 333), (257, 256)]


def confident_logits(queries: int, classes: int, hw: int = 32, seed: int = 0, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    masks = torch.full((batch, queries, hw, hw), -8.0)
    for b in range(batch):
        for q in range(queries):
            y, x = torch.randint(0, hw - 3, (2,), generator=g).tolist()
            dy, dx = torch.randint(3, hw // 4 + 2, (2,), generator=g).tolist()
            masks[b, q, y:y + dy, x:x + dx] = 8.0
    masks = masks + 0.5 * torch.randn(masks.shape, generator=g)
    classes_logits = torch.randn((batch, queries, classes + 1), generator=g)
    for b in range(batch):
        for q in range(queries):
            if q % 4 == 3:
                classes_logits[b, q, -1] = 12.0  # no-object
            else:
                classes_logits[b, q, q % classes] = 9.0 + 3.0 * torch.rand((), generator=g).item()
    # exact ties: query 1 a copy of query 0 (same mask, same class scores)
    masks[:, 1] = masks[:, 0]
    classes_logits[:, 1] = classes_logits[:, 0]
    return masks, classes_logits


# ------------------------------------------------------------------------------------ dense reference


def dense_semantic(mask_logits, class_logits, target, size):
    """One unwindowed image (padded size) or sliding windows of one image: the canvas, then all classes at once."""
    probs = class_logits.softmax(-1)[..., :-1]
    window = size_pair(size)
    if "longest_edge" in size:
        p = F.interpolate(mask_logits, size=window, mode="bilinear", align_corners=False)[0].sigmoid()
        scores = (probs[0].T @ p.flatten(1)).view(probs.shape[-1], *window)
    else:
        canvas = resized_size(*target, size["shortest_edge"])
        axis = 0 if target[0] > target[1] else 1
        from eomt.processing.sizes import window_starts

        starts = window_starts(canvas[axis], size["shortest_edge"])
        scores = torch.zeros((probs.shape[-1], *canvas))
        count = torch.zeros(canvas)
        for row, start in enumerate(starts):
            p = F.interpolate(mask_logits[row:row + 1], size=window, mode="bilinear", align_corners=False)[0].sigmoid()
            w = (probs[row].T @ p.flatten(1)).view(probs.shape[-1], *window)
            scores.narrow(axis + 1, start, window[axis]).add_(w)
            count.narrow(axis, start, window[axis]).add_(1)
        scores = scores / count.clamp(min=1)
    if tuple(scores.shape[-2:]) != tuple(target):
        scores = F.interpolate(scores[None], size=target, mode="bilinear", align_corners=False)[0]
    return _argmax0(scores)


def dense_panoptic(mask_logits, class_logits, target, size, threshold=0.8, mask_threshold=0.5, overlap=0.8,
                   stuff=()):
    top_scores, top_labels = class_logits[0].softmax(-1).max(-1)
    kept = (top_labels.ne(class_logits.shape[-1] - 1) & (top_scores > threshold)).nonzero().flatten()
    if kept.numel() == 0:
        return torch.full(target, -1, dtype=torch.long), []
    scores, labels = top_scores[kept], top_labels[kept]
    logits = _masks_at_target(mask_logits[0, kept], size, target)
    probs = logits.sigmoid()
    assigned = _argmax0(scores[:, None, None] * probs)
    above = probs >= mask_threshold
    in_own = above.gather(0, assigned[None])[0]
    count = kept.numel()
    assigned_area = torch.bincount(assigned.flatten(), minlength=count)
    final_area = torch.bincount(assigned[in_own], minlength=count)
    above_area = above.sum((1, 2))
    valid = (assigned_area > 0) & (above_area > 0) & (final_area > 0) & (
        (assigned_area / above_area).double() > overlap)
    segment_of, segments, first = [], [], {}
    for ok, label, score in zip(valid.tolist(), labels.tolist(), scores.tolist(), strict=True):
        if not ok:
            segment_of.append(-1)
        elif label in stuff and label in first:
            segment_of.append(first[label])
        else:
            if label in stuff:
                first[label] = len(segments)
            segment_of.append(len(segments))
            segments.append({"id": len(segments), "label_id": label, "score": round(score, 6)})
    ids = torch.tensor(segment_of)[assigned]
    return torch.where(in_own, ids, torch.full_like(ids, -1)), segments


def dense_instance(mask_logits, class_logits, target, size, threshold=0.8, mode="threshold", top_k=100):
    probs = class_logits[0].softmax(-1)[..., :-1]

    def mask_scores(logits):
        masks = logits > 0
        inside = masks.flatten(1).float()
        return masks, (logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)

    if mode == "threshold":
        top, labels = probs.max(-1)
        queries = (top.double() >= threshold).nonzero().flatten()
        if queries.numel() == 0:
            return torch.full(target, -1, dtype=torch.long), [], torch.zeros((0, *target), dtype=torch.bool)
        masks, mean = mask_scores(_masks_at_target(mask_logits[0, queries], size, target))
        scores = top[queries] * mean
        keep = masks.flatten(1).any(1) & (scores.double() >= threshold)
        masks, scores, labels = masks[keep], scores[keep], labels[queries][keep]
    else:
        values, flat = probs.flatten().topk(min(top_k, probs.numel()))
        queries, labels = flat // probs.shape[1], flat % probs.shape[1]
        unique, inverse = torch.unique(queries, return_inverse=True)
        masks, mean = mask_scores(_masks_at_target(mask_logits[0, unique], size, target))
        masks, scores = masks[inverse], values * mean[inverse]
    segmentation = torch.full(target, -1, dtype=torch.long)
    for j, mask in enumerate(masks):
        segmentation[mask] = j
    segments = [{"id": j, "label_id": label, "score": round(score, 6)}
                for j, (label, score) in enumerate(zip(labels.tolist(), scores.tolist(), strict=True))]
    return segmentation, segments, masks


# ------------------------------------------------------------------------------------------ helpers


def budgets(target, per_pixel_fixed, per_pixel_item):
    """A budget that holds the output maps and 2 upsampled queries (classes), and a large one."""
    pixels = target[0] * target[1]
    return [MemoryBudget(per_pixel_fixed * pixels + per_pixel_item * pixels * 2), MemoryBudget(1 << 32)]


@pytest.fixture
def chunk_sizes(monkeypatch):
    """The numbers of queries (classes) upsampled at full resolution at once, in call order."""
    seen = []
    real = postprocess._resize

    def resize(x, hw, out=None):
        if tuple(hw) in [tuple(t) for t in TARGETS]:
            seen.append(x.shape[1])
        return real(x, hw, out)

    monkeypatch.setattr(postprocess, "_resize", resize)
    return seen


# ------------------------------------------------------------------------------------------ semantic


@pytest.mark.parametrize("target", TARGETS)
def test_semantic_streamed_equals_dense_at_two_budgets(target, chunk_sizes):
    mask_logits, class_logits = confident_logits(24, 11, seed=sum(target))
    expected = dense_semantic(mask_logits, class_logits, target, PADDED)
    small, large = budgets(target, 12, 4)
    (streamed,) = semantic_segmentation(mask_logits, class_logits, [target], PADDED, max_memory=small)
    small_chunks = list(chunk_sizes)
    (whole,) = semantic_segmentation(mask_logits, class_logits, [target], PADDED, max_memory=large)
    assert torch.equal(streamed, expected) and torch.equal(whole, expected)
    assert len(torch.unique(expected)) >= 3
    assert len(small_chunks) >= 2 and max(small_chunks) <= 2  # really streamed


@pytest.mark.parametrize("target", [(64, 300), (300, 64), (100, 170)])
def test_semantic_sliding_windows_streamed_equals_dense(target):
    from eomt.processing.sizes import window_starts

    canvas = resized_size(*target, SLIDING["shortest_edge"])
    windows = len(window_starts(max(canvas), SLIDING["shortest_edge"]))
    mask_logits, class_logits = confident_logits(24, 11, seed=5, batch=windows)
    starts = window_starts(max(canvas), 64)
    offsets = [(0, s, s + 64) for s in starts]
    expected = dense_semantic(mask_logits, class_logits, target, SLIDING)
    for budget in budgets(target, 12, 4):
        (ours,) = semantic_segmentation(mask_logits, class_logits, [target], SLIDING, patch_offsets=offsets,
                                        max_memory=budget)
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("band", [1, 5, 64])
@pytest.mark.parametrize("target", [(64, 300), (300, 64)])
def test_semantic_window_products_by_bands_of_rows_equal_the_whole_product(target, band, monkeypatch):
    """The canvas is summed from each window's product a band of rows at a time: the scores (not only the
    argmax) are those of one product per window."""
    from eomt.processing.sizes import window_starts

    canvas = resized_size(*target, SLIDING["shortest_edge"])
    starts = window_starts(max(canvas), SLIDING["shortest_edge"])
    mask_logits, class_logits = confident_logits(24, 11, seed=9, batch=len(starts))
    offsets = [(0, s, s + 64) for s in starts]
    expected = dense_semantic(mask_logits, class_logits, target, SLIDING)
    _, whole = semantic_segmentation(mask_logits, class_logits, [target], SLIDING, patch_offsets=offsets,
                                     return_scores=True)[0]
    monkeypatch.setattr(postprocess, "_window_band", lambda *args: band)
    ours, scores = semantic_segmentation(mask_logits, class_logits, [target], SLIDING, patch_offsets=offsets,
                                         return_scores=True)[0]
    assert torch.equal(ours, expected) and torch.equal(scores, whole)


def test_semantic_ties_go_to_the_first_class():
    """Quantised scores make many exact ties between classes: the first one wins, streamed or not."""
    mask_logits, class_logits = confident_logits(16, 9, seed=3)
    class_logits = torch.zeros_like(class_logits)
    class_logits[0, :, :4] = 5.0  # classes 0-3 equal everywhere
    target = (200, 120)
    expected = dense_semantic(mask_logits, class_logits, target, PADDED)
    (ours,) = semantic_segmentation(mask_logits, class_logits, [target], PADDED, max_memory=budgets(target, 12, 4)[0])
    assert torch.equal(ours, expected) and set(torch.unique(ours).tolist()) == {0}


@pytest.mark.parametrize("band_pixels", [1, 301, 5000])
def test_semantic_per_class_bands_do_not_change_the_result(band_pixels, monkeypatch):
    """The running first maximum over classes is taken over bands of pixels: bands of one row, of rows that do
    not divide the image, and of more than the image give the dense map (ties to the first class included)."""
    mask_logits, class_logits = confident_logits(16, 9, seed=4)
    class_logits[0, :, 1] = class_logits[0, :, 2]  # classes 1 and 2 tie everywhere
    target = (90, 333)
    expected = dense_semantic(mask_logits, class_logits, target, PADDED)
    monkeypatch.setattr(postprocess, "_band_pixels", lambda: band_pixels)
    (ours,) = semantic_segmentation(mask_logits, class_logits, [target], PADDED, max_memory=budgets(target, 12, 4)[0])
    assert torch.equal(ours, expected) and 1 in ours and 2 not in ours

def test_semantic_drops_classes_that_win_nowhere(chunk_sizes):
    mask_logits, class_logits = confident_logits(24, 40, seed=8)
    target = (257, 256)
    (ours,) = semantic_segmentation(mask_logits, class_logits, [target], PADDED)
    assert torch.equal(ours, dense_semantic(mask_logits, class_logits, target, PADDED))
    assert sum(chunk_sizes) < 40  # fewer classes upsampled than the model has


# ------------------------------------------------------------------------------------------ panoptic


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("stuff", [(), (0, 1)])
def test_panoptic_streamed_equals_dense_at_two_budgets(target, stuff, chunk_sizes):
    mask_logits, class_logits = confident_logits(40, 9, seed=sum(target) + len(stuff))
    expected_map, expected_segments = dense_panoptic(mask_logits, class_logits, target, PADDED, stuff=stuff)
    small, large = budgets(target, 15, 4)
    for budget in (small, large):
        chunk_sizes.clear()
        (ours,) = panoptic_segmentation(mask_logits, class_logits, [target], PADDED, stuff_classes=list(stuff),
                                        max_memory=budget)
        assert torch.equal(ours["segmentation"], expected_map)
        assert ours["segments_info"] == expected_segments
        if budget is small:
            assert len(chunk_sizes) >= 2 and max(chunk_sizes) <= 2
    assert len(expected_segments) >= 3


def test_panoptic_thresholds_and_ties_streamed():
    mask_logits, class_logits = confident_logits(40, 9, seed=4)
    target = (90, 333)
    kwargs = dict(threshold=0.5, mask_threshold=0.3, overlap=0.5)
    expected = dense_panoptic(mask_logits, class_logits, target, PADDED, stuff=(2, 3), **kwargs)
    (ours,) = panoptic_segmentation(mask_logits, class_logits, [target], PADDED, threshold=0.5, mask_threshold=0.3,
                                    overlap_mask_area_threshold=0.5, stuff_classes=[2, 3],
                                    max_memory=budgets(target, 15, 4)[0])
    assert torch.equal(ours["segmentation"], expected[0]) and ours["segments_info"] == expected[1]


def test_panoptic_drops_queries_that_win_nowhere(chunk_sizes):
    """Confident queries whose masks are far below the others everywhere are never upsampled."""
    mask_logits, class_logits = confident_logits(60, 9, seed=9)
    mask_logits[0, 40:] = -20.0
    target = (257, 256)
    (ours,) = panoptic_segmentation(mask_logits, class_logits, [target], PADDED)
    upsampled = sum(chunk_sizes)
    expected_map, expected_segments = dense_panoptic(mask_logits, class_logits, target, PADDED)
    assert torch.equal(ours["segmentation"], expected_map) and ours["segments_info"] == expected_segments
    probs = class_logits[0].softmax(-1)
    kept = (probs[:, :-1].max(-1).values > 0.8) & (probs.argmax(-1) != 9)
    assert upsampled <= int(kept[:40].sum()) < int(kept.sum())


@pytest.mark.parametrize("band_pixels", [1, 301, 5000])
def test_panoptic_per_query_bands_do_not_change_the_result(band_pixels, monkeypatch):
    """The running first maximum is taken one query at a time over bands of pixels: bands of one row, of rows
    that do not divide the image, and of more than the image give the dense result (ties included)."""
    mask_logits, class_logits = confident_logits(40, 9, seed=11)
    target = (90, 333)
    expected_map, expected_segments = dense_panoptic(mask_logits, class_logits, target, PADDED, stuff=(0,))
    monkeypatch.setattr(postprocess, "_band_pixels", lambda: band_pixels)
    (ours,) = panoptic_segmentation(mask_logits, class_logits, [target], PADDED, stuff_classes=[0])
    assert torch.equal(ours["segmentation"], expected_map) and ours["segments_info"] == expected_segments


@pytest.mark.parametrize("mask_threshold", [0.5, 0.3, 0.123456, 0.9])
def test_product_thresholds_admit_exactly_the_probabilities_at_or_above_the_threshold(mask_threshold):
    """After the fold, in-own is `maximum >= threshold of the pixel's query`: that must hold for every float32
    probability near the threshold and elsewhere, and the threshold may be refused only when some query has
    none (its largest rejected and smallest admitted probabilities give the same product)."""
    g = torch.Generator().manual_seed(int(mask_threshold * 1000))
    scores = torch.cat([torch.tensor([1.0, 0.8000001]), 0.8 + 0.2 * torch.rand(200, generator=g)])
    thresholds = _product_thresholds(scores, mask_threshold, torch.float32, torch.float32)
    bits = torch.tensor([mask_threshold], dtype=torch.float32).view(torch.int32)
    near = (bits + torch.arange(-300, 301, dtype=torch.int32)).view(torch.float32)  # adjacent floats
    probs = torch.cat([near, torch.rand(2000, generator=g), torch.tensor([0.0, 1.0])])
    admitted = probs >= mask_threshold
    if thresholds is None:
        lowest = probs[admitted].min()
        rejected = probs[~admitted].max()
        assert any(bool(rejected * s == lowest * s) for s in scores), "refused without a reason"
        assert mask_threshold != 0.5, "the default threshold must be decided after the fold"
        return
    for score, threshold in zip(scores, thresholds, strict=True):
        assert torch.equal(probs * score >= threshold, admitted)


@pytest.mark.parametrize("decided_after_fold", [True, False])
def test_panoptic_pixels_exactly_at_the_mask_threshold(decided_after_fold, monkeypatch):
    """Masks with areas of logit 0 (probability exactly 0.5) and of -2.2e-7 (just below): a pixel's
    query is in-own at exactly 0.5 and not just below, whether decided after the fold or tracked per query."""
    mask_logits, class_logits = confident_logits(40, 9, seed=21)
    mask_logits[0, ::3, 0:8, 2:14] = 0.0  # the crop of a 90 x 333 image: rows 0-8 of 32
    mask_logits[0, 1::3, 0:8, 16:30] = -2.2e-7  # sigmoid: 0.5 - 2^-24, the largest below 0.5 it gives
    target = (90, 333)
    probs = _masks_at_target(mask_logits[0], PADDED, target).sigmoid()
    assert (probs == 0.5).any() and ((probs < 0.5) & (probs > 0.5 - 1e-7)).any()
    if not decided_after_fold:
        monkeypatch.setattr(postprocess, "_product_thresholds", lambda *args: None)
    expected_map, expected_segments = dense_panoptic(mask_logits, class_logits, target, PADDED, overlap=0.3)
    (ours,) = panoptic_segmentation(mask_logits, class_logits, [target], PADDED, overlap_mask_area_threshold=0.3)
    assert torch.equal(ours["segmentation"], expected_map) and ours["segments_info"] == expected_segments
    assert len(expected_segments) >= 3


def test_chunk_crops_equal_one_crop_per_mask():
    from eomt.outputs.instance_masks import tight_crop

    masks = torch.zeros((3, 20, 30), dtype=torch.bool)
    masks[0, 2:5, 7:9] = True
    masks[0, 11, 29] = True
    masks[2, 19, 0] = True  # mask 1 stays empty
    for (top, left, crop), mask in zip(postprocess._tight_crops(masks), masks, strict=True):
        expected_top, expected_left, expected_crop = tight_crop(mask)
        assert (top, left) == (expected_top, expected_left)
        assert torch.equal(torch.from_numpy(crop.copy()), expected_crop)


# ------------------------------------------------------------------------------------------ instance


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", ["threshold", "topk"])
def test_instance_streamed_equals_dense_at_two_budgets(target, mode, chunk_sizes):
    mask_logits, class_logits = confident_logits(40, 9, seed=sum(target))
    expected_map, expected_segments, expected_masks = dense_instance(mask_logits, class_logits, target, PADDED,
                                                                     mode=mode, top_k=30)
    small, large = budgets(target, 8, 9)
    for budget in (small, large):
        chunk_sizes.clear()
        (dense,) = instance_segmentation(mask_logits, class_logits, [target], PADDED, mode=mode, top_k=30,
                                         max_memory=budget)
        (compact,) = instance_segmentation(mask_logits, class_logits, [target], PADDED, mode=mode, top_k=30,
                                           max_memory=budget, compact=True)
        for ours in (dense, compact):
            assert torch.equal(ours["segmentation"], expected_map)
            assert ours["segments_info"] == expected_segments
        assert torch.equal(dense["masks"], expected_masks)
        assert isinstance(compact["masks"], InstanceMasks) and torch.equal(compact["masks"].dense(), expected_masks)
        if budget is small:
            assert max(chunk_sizes) <= 2
    assert len(expected_segments) >= 3


def test_instance_with_fewer_queries_than_threads_is_summed_as_the_dense_one():
    """One pre-selected query: the dense code sums its row split over the threads; so does the one chunk."""
    mask_logits, class_logits = confident_logits(8, 5, seed=2)
    class_logits[0, 1:, -1] = 30.0  # only query 0 is an object
    target = (257, 256)
    expected = dense_instance(mask_logits, class_logits, target, PADDED, threshold=0.5)
    (ours,) = instance_segmentation(mask_logits, class_logits, [target], PADDED, threshold=0.5)
    assert ours["segments_info"] == expected[1] and torch.equal(ours["masks"], expected[2])


def test_streamed_results_match_transformers_at_a_small_budget():
    transformers = pytest.importorskip("transformers")
    mask_logits, class_logits = confident_logits(40, 9, seed=12, batch=2)
    targets = [(200, 120), (90, 333)]
    reference = transformers.EomtImageProcessor()
    outputs = SimpleNamespace(masks_queries_logits=mask_logits, class_queries_logits=class_logits, patch_offsets=None)
    small = MemoryBudget(20 * 200 * 333)
    theirs = reference.post_process_panoptic_segmentation(outputs, target_sizes=targets, size=PADDED)
    ours = panoptic_segmentation(mask_logits, class_logits, targets, PADDED, max_memory=small)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a["segmentation"], b["segmentation"].long())
        assert [(s["id"], s["label_id"]) for s in a["segments_info"]] == [
            (s["id"], s["label_id"]) for s in b["segments_info"]]
    theirs = reference.post_process_instance_segmentation(outputs, target_sizes=targets, size=PADDED)
    ours = instance_segmentation(mask_logits, class_logits, targets, PADDED, max_memory=small)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a["segmentation"], b["segmentation"].long())
        assert all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a["segments_info"], b["segments_info"],
                                                                          strict=True))
    theirs = reference.post_process_semantic_segmentation(outputs, target_sizes=targets, size=PADDED)
    ours = semantic_segmentation(mask_logits, class_logits, targets, PADDED, max_memory=small)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_a_budget_too_small_for_the_output_maps_is_one_line_with_a_size_that_fits():
    from eomt.processing.memory import MemoryBudgetError

    mask_logits, class_logits = confident_logits(40, 9, seed=1)
    with pytest.raises(MemoryBudgetError) as caught:
        panoptic_segmentation(mask_logits, class_logits, [(3000, 4000)], PADDED, max_memory=MemoryBudget(64 << 20))
    message = str(caught.value)
    assert "\n" not in message and "4000x3000 image" in message and "downscale it to at most" in message


@pytest.mark.parametrize("hw", [(1, 1), (1, 9), (7, 4), (13, 17)])
def test_block_bounds_are_the_min_and_max_over_each_blocks_clamped_inputs(hw):
    """The panoptic prune's bounds: block (r, c) covers inputs r*4 .. r*4+4 x c*4 .. c*4+4, clamped at the edges."""
    values = torch.randn(3, *hw, generator=torch.Generator().manual_seed(hw[0] * 31 + hw[1]))
    lower, upper = postprocess._block_bounds(values, 4, torch.float64)
    height, width = hw
    assert lower.shape == upper.shape == (3, -(-height // 4), -(-width // 4)) and lower.dtype == torch.float64
    for r in range(lower.shape[1]):
        for c in range(lower.shape[2]):
            ys = [min(y, height - 1) for y in range(4 * r, 4 * r + 5)]
            xs = [min(x, width - 1) for x in range(4 * c, 4 * c + 5)]
            window = values[:, ys][:, :, xs].double().flatten(1)
            assert torch.equal(lower[:, r, c], window.amin(1)) and torch.equal(upper[:, r, c], window.amax(1))


@pytest.mark.parametrize("hw", [(1, 1), (1, 6), (5, 1), (4, 7)])
def test_pooled_bounds_are_the_min_and_max_over_each_clamped_2x2_window(hw):
    """The semantic prune's bounds: entry (i, j) covers inputs {i, i+1} x {j, j+1}, clamped at the edges."""
    values = torch.randn(2, *hw, generator=torch.Generator().manual_seed(hw[0] * 7 + hw[1]))
    lower = postprocess._pooled_bound(values, torch.minimum)
    upper = postprocess._pooled_bound(values, torch.maximum, torch.float32)
    height, width = hw
    assert lower.dtype == torch.float64 and upper.dtype == torch.float32 and lower.shape == upper.shape == (2, *hw)
    for i in range(height):
        for j in range(width):
            ys, xs = [i, min(i + 1, height - 1)], [j, min(j + 1, width - 1)]
            window = values[:, ys][:, :, xs].flatten(1)
            assert torch.equal(lower[:, i, j], window.amin(1).double()) and torch.equal(upper[:, i, j], window.amax(1))
