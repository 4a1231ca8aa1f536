"""Post-processing (semantic, panoptic, instance) against transformers' EomtImageProcessor.post_process_*.

Logits are random but confident: object queries have one class logit far above the others and mask
logits of about +/-8 on smoothed random rectangles, so that thresholds pass for some queries and
not for others, and argmax ties do not occur. transformers is only the reference here.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers.image_transforms import get_size_with_aspect_ratio

from eomt.processing.postprocess import instance_segmentation, panoptic_segmentation, semantic_segmentation

PADDED = {"shortest_edge": 128, "longest_edge": 128}
STUFF = [0, 1]


def _rect_masks(g: torch.Generator, count: int, h: int, w: int) -> torch.Tensor:
    masks = torch.full((count, h, w), -8.0)
    for j in range(count):
        y0 = torch.randint(0, h - 4, (1,), generator=g).item()
        x0 = torch.randint(0, w - 4, (1,), generator=g).item()
        dy = torch.randint(4, max(5, h // 2), (1,), generator=g).item()
        dx = torch.randint(4, max(5, w // 2), (1,), generator=g).item()
        masks[j, y0:y0 + dy, x0:x0 + dx] = 8.0
    masks = F.avg_pool2d(masks[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    return masks + 0.3 * torch.randn(masks.shape, generator=g)


def make_logits(batch: int, queries: int, classes: int, h: int, w: int, seed: int = 0):
    """Confident logits. Per image: 40% object queries (one class at +10..+12), a few weak queries
    (below 0.8), the rest no-object winners; two object queries share each stuff label (merging), and
    one query sits inside another with a lower score (fails the overlap ratio)."""
    assert queries >= 16 and classes >= 7, "needs 6 object queries and labels 0, 1, 5, 6"
    g = torch.Generator().manual_seed(seed)
    mask_logits = torch.stack([_rect_masks(g, queries, h, w) for _ in range(batch)])
    class_logits = torch.randn((batch, queries, classes + 1), generator=g)
    for b in range(batch):
        kinds = torch.randperm(queries, generator=g).tolist()
        n_objects, n_weak = int(0.4 * queries), int(0.1 * queries)
        objects, weak, rest = kinds[:n_objects], kinds[n_objects:n_objects + n_weak], kinds[n_objects + n_weak:]
        for q in objects:
            label = torch.randint(0, classes, (1,), generator=g).item()
            class_logits[b, q, label] = 10.0 + 2.0 * torch.rand((1,), generator=g).item()
        for q in weak:
            class_logits[b, q, torch.randint(0, classes, (1,), generator=g).item()] = 3.0
        for q in rest:
            class_logits[b, q, -1] = 12.0
        # stuff duplicates: two pairs of object queries with labels 0 and 1
        for label, pair in zip(STUFF, (objects[0:2], objects[2:4]), strict=True):
            for q in pair:
                class_logits[b, q, :-1] = torch.randn((classes,), generator=g)
                class_logits[b, q, label] = 10.0 + 2.0 * torch.rand((1,), generator=g).item()
        # a big confident mask containing a smaller, less confident one
        big, small = objects[4], objects[5]
        class_logits[b, big, :-1] = torch.randn((classes,), generator=g)
        class_logits[b, big, 5] = 13.0
        class_logits[b, small, :-1] = torch.randn((classes,), generator=g)
        class_logits[b, small, 6] = 9.0
        mask_logits[b, big] = -8.0 + 0.3 * torch.randn((h, w), generator=g)
        mask_logits[b, big, h // 8: h // 2, w // 8: w // 2] = 8.0
        mask_logits[b, small] = -8.0 + 0.3 * torch.randn((h, w), generator=g)
        mask_logits[b, small, h // 4: h // 3, w // 4: w // 3] = 8.0
    return mask_logits, class_logits


def _outputs(mask_logits, class_logits, patch_offsets=None):
    return SimpleNamespace(masks_queries_logits=mask_logits, class_queries_logits=class_logits,
                           patch_offsets=patch_offsets)


def _assert_semantic_equal(ours, theirs_scores):
    """Maps equal, except at pixels where transformers' scores of the two labels are a float tie."""
    theirs = theirs_scores.argmax(0)
    assert ours.dtype == torch.long and ours.shape == theirs.shape
    differ = ours != theirs
    if differ.any():
        a = theirs_scores.gather(0, ours[None])[0][differ]
        b = theirs_scores.gather(0, theirs[None])[0][differ]
        assert differ.sum() <= 5 and torch.allclose(a, b, rtol=1e-5, atol=0), "non-tie semantic mismatch"


def _assert_segments_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["id"] == b["id"] and a["label_id"] == b["label_id"]
        assert abs(a["score"] - b["score"]) <= 1e-5


# -------------------------------------------------------------------------------------- semantic


def _windows_from_transformers(image_sizes, shortest):
    """patch offsets exactly as transformers' preprocessing makes them for these image sizes."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in image_sizes]
    processor = transformers.EomtImageProcessor(size={"shortest_edge": shortest}, do_split_image=True)
    return processor(images, return_tensors="pt")["patch_offsets"]


@pytest.mark.parametrize("image_sizes", [[(480, 1000)], [(1000, 480), (37, 53)], [(200, 120), (128, 128)],
                                         [(300, 301)]])
def test_semantic_sliding_windows_match_transformers(image_sizes):
    offsets = _windows_from_transformers(image_sizes, 128)
    if image_sizes == [(480, 1000)]:
        assert [o.tolist() for o in offsets] == [[0, 0, 128], [0, 69, 197], [0, 138, 266]]  # 128x266, 3 windows
    mask_logits, class_logits = make_logits(len(offsets), 24, 19, 32, 32, seed=len(offsets))
    theirs = transformers.EomtImageProcessor().post_process_semantic_segmentation(
        _outputs(mask_logits, class_logits, offsets), target_sizes=image_sizes,
        size={"shortest_edge": 128, "longest_edge": None}, return_segmentation_scores=True)
    ours = semantic_segmentation(mask_logits, class_logits, image_sizes, {"shortest_edge": 128},
                                 patch_offsets=[o.tolist() for o in offsets])
    ours_scored = semantic_segmentation(mask_logits, class_logits, image_sizes, {"shortest_edge": 128},
                                        patch_offsets=offsets, return_scores=True)
    assert len(ours) == len(theirs) == len(image_sizes)
    for a, (a_map, a_scores), b in zip(ours, ours_scored, theirs, strict=True):
        _assert_semantic_equal(a, b.segmentation_scores)
        assert torch.equal(a_map, b.segmentation)
        torch.testing.assert_close(a_scores, b.segmentation_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target_sizes", [[(37, 53), (128, 128)], [(300, 200), (90, 400)]])
@pytest.mark.parametrize("size", [PADDED, {"shortest_edge": 96, "longest_edge": 128}])
def test_semantic_without_windows_matches_transformers(target_sizes, size):
    h, w = size["shortest_edge"] // 4, size["longest_edge"] // 4
    mask_logits, class_logits = make_logits(2, 24, 19, h, w, seed=3)
    theirs = transformers.EomtImageProcessor().post_process_semantic_segmentation(
        _outputs(mask_logits, class_logits), target_sizes=target_sizes, size=size, return_segmentation_scores=True)
    ours = semantic_segmentation(mask_logits, class_logits, torch.tensor(target_sizes), size)
    for a, b in zip(ours, theirs, strict=True):
        _assert_semantic_equal(a, b.segmentation_scores)


def test_semantic_matches_transformers_on_uncertain_logits():
    """Gaussian class logits: many classes compete at every pixel."""
    mask_logits, class_logits = make_logits(1, 40, 60, 32, 32, seed=5)
    logits = torch.randn(class_logits.shape) * 0.5
    ours = semantic_segmentation(mask_logits, logits, [(150, 100)], PADDED)
    theirs = transformers.EomtImageProcessor().post_process_semantic_segmentation(
        _outputs(mask_logits, logits), target_sizes=[(150, 100)], size=PADDED, return_segmentation_scores=True)
    _assert_semantic_equal(ours[0], theirs[0].segmentation_scores)


# -------------------------------------------------------------------------------------- panoptic


@pytest.mark.parametrize("target_sizes", [[(37, 53), (128, 128)], [(480, 300), (200, 640)], [(64, 64), (1000, 700)]])
@pytest.mark.parametrize("stuff_classes", [None, STUFF])
def test_panoptic_matches_transformers(target_sizes, stuff_classes):
    mask_logits, class_logits = make_logits(2, 30, 20, 32, 32, seed=sum(map(sum, target_sizes)))
    theirs = transformers.EomtImageProcessor().post_process_panoptic_segmentation(
        _outputs(mask_logits, class_logits), target_sizes=target_sizes, stuff_classes=stuff_classes, size=PADDED)
    ours = panoptic_segmentation(mask_logits, class_logits, target_sizes, PADDED, stuff_classes=stuff_classes)
    for a, b in zip(ours, theirs, strict=True):
        assert a["segmentation"].dtype == torch.long
        assert torch.equal(a["segmentation"], b["segmentation"])
        _assert_segments_equal(a["segments_info"], b["segments_info"])
        assert len(a["segments_info"]) >= 3
        if stuff_classes:  # the duplicate stuff queries merged into one segment per label
            assert sum(s["label_id"] in STUFF for s in a["segments_info"]) <= 2


def test_panoptic_rejects_overlapped_query_and_handles_no_kept_query():
    mask_logits, class_logits = make_logits(2, 30, 20, 32, 32, seed=11)
    class_logits[1, :, -1] = 20.0  # image 1: no-object wins everywhere
    kwargs = dict(target_sizes=[(128, 128), (70, 90)], size=PADDED)
    theirs = transformers.EomtImageProcessor().post_process_panoptic_segmentation(
        _outputs(mask_logits, class_logits), **kwargs)
    ours = panoptic_segmentation(mask_logits, class_logits, **kwargs)
    assert torch.equal(ours[0]["segmentation"], theirs[0]["segmentation"])
    _assert_segments_equal(ours[0]["segments_info"], theirs[0]["segments_info"])
    assert 6 not in [s["label_id"] for s in ours[0]["segments_info"]]  # the small query inside the big one
    assert 5 in [s["label_id"] for s in ours[0]["segments_info"]]
    assert ours[1]["segments_info"] == theirs[1]["segments_info"] == []
    assert ours[1]["segmentation"].dtype == torch.long
    assert torch.equal(ours[1]["segmentation"], theirs[1]["segmentation"].long())
    assert (ours[1]["segmentation"] == -1).all()


def test_panoptic_thresholds_match_transformers():
    mask_logits, class_logits = make_logits(2, 30, 20, 32, 32, seed=2)
    kwargs = dict(target_sizes=[(100, 77), (77, 100)], threshold=0.5, mask_threshold=0.3,
                  overlap_mask_area_threshold=0.5, stuff_classes=[0, 1, 2, 3], size=PADDED)
    theirs = transformers.EomtImageProcessor().post_process_panoptic_segmentation(
        _outputs(mask_logits, class_logits), **kwargs)
    ours = panoptic_segmentation(mask_logits, class_logits, **kwargs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a["segmentation"], b["segmentation"])
        _assert_segments_equal(a["segments_info"], b["segments_info"])


# -------------------------------------------------------------------------------------- instance


def _reference_logits(mask_logits, image, size, target):
    """Plain resize/crop/resize of all queries of one image (transformers' helper for the crop size)."""
    full = F.interpolate(mask_logits[image: image + 1], size=(size["shortest_edge"], size["longest_edge"]),
                         mode="bilinear", align_corners=False)
    crop_h, crop_w = get_size_with_aspect_ratio(target, size["shortest_edge"], size["longest_edge"])
    return F.interpolate(full[:, :, :crop_h, :crop_w], size=target, mode="bilinear", align_corners=False)[0]


def _topk_reference(mask_logits, class_logits, target_sizes, size, top_k):
    results = []
    for i, target in enumerate(target_sizes):
        logits = _reference_logits(mask_logits, i, size, target)
        probs = class_logits[i].softmax(-1)[:, :-1]
        pairs = [(probs[q, c].item(), q, c) for q in range(probs.shape[0]) for c in range(probs.shape[1])]
        pairs = sorted(pairs, key=lambda t: -t[0])[:top_k]
        segmentation = torch.full(target, -1, dtype=torch.long)
        masks, segments = [], []
        for j, (prob, q, c) in enumerate(pairs):
            mask = logits[q] > 0
            mask_score = logits[q].sigmoid()[mask].sum().item() / (mask.sum().item() + 1e-6)
            segmentation[mask] = j
            masks.append(mask)
            segments.append({"id": j, "label_id": c, "score": prob * mask_score})
        results.append({"segmentation": segmentation, "segments_info": segments, "masks": torch.stack(masks)})
    return results


@pytest.mark.parametrize("target_sizes", [[(37, 53), (128, 128)], [(480, 300), (200, 640)]])
@pytest.mark.parametrize("threshold", [0.8, 0.5])
def test_instance_threshold_matches_transformers(target_sizes, threshold):
    mask_logits, class_logits = make_logits(2, 30, 20, 32, 32, seed=7 + len(target_sizes[1]))
    theirs = transformers.EomtImageProcessor().post_process_instance_segmentation(
        _outputs(mask_logits, class_logits), target_sizes=target_sizes, threshold=threshold, size=PADDED)
    ours = instance_segmentation(mask_logits, class_logits, target_sizes, PADDED, threshold=threshold)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a["segmentation"].dtype == torch.long
        assert torch.equal(a["segmentation"], b["segmentation"].long())
        _assert_segments_equal(a["segments_info"], b["segments_info"])
        assert len(a["segments_info"]) >= 3
        # masks: the kept queries' (logit > 0) masks, in segment order
        reference = _reference_logits(mask_logits, i, PADDED, target_sizes[i]) > 0
        assert a["masks"].dtype == torch.bool and a["masks"].shape == (len(a["segments_info"]), *target_sizes[i])
        for mask in a["masks"]:
            assert any(torch.equal(mask, r) for r in reference)
        overlay = torch.full(target_sizes[i], -1, dtype=torch.long)
        for j, mask in enumerate(a["masks"]):
            overlay[mask] = j
        assert torch.equal(overlay, a["segmentation"])


@pytest.mark.parametrize("top_k", [10, 100, 10_000])
def test_instance_topk_matches_plain_reference(top_k):
    target_sizes = [(90, 61), (128, 128)]
    mask_logits, class_logits = make_logits(2, 16, 8, 32, 32, seed=top_k)
    ours = instance_segmentation(mask_logits, class_logits, target_sizes, PADDED, mode="topk", top_k=top_k)
    reference = _topk_reference(mask_logits, class_logits, target_sizes, PADDED, top_k)
    for a, b in zip(ours, reference, strict=True):
        assert len(a["segments_info"]) == min(top_k, 16 * 8)
        assert torch.equal(a["masks"], b["masks"])
        assert torch.equal(a["segmentation"], b["segmentation"])
        _assert_segments_equal(a["segments_info"], b["segments_info"])


def test_instance_no_kept_query():
    mask_logits, class_logits = make_logits(1, 16, 8, 32, 32)
    class_logits[..., -1] = 30.0
    (out,) = instance_segmentation(mask_logits, class_logits, [(40, 50)], PADDED)
    assert out["segments_info"] == [] and out["masks"].shape == (0, 40, 50)
    assert out["segmentation"].dtype == torch.long and (out["segmentation"] == -1).all()


def test_half_precision_logits_are_accepted():
    mask_logits, class_logits = make_logits(1, 16, 8, 32, 32)
    ours = panoptic_segmentation(mask_logits.half(), class_logits.half(), [(40, 50)], PADDED)
    assert ours[0]["segmentation"].shape == (40, 50)


def test_inputs_are_not_modified_even_at_network_resolution():
    mask_logits, class_logits = make_logits(2, 16, 8, 32, 32)
    before = mask_logits.clone(), class_logits.clone()
    size, targets = {"shortest_edge": 32, "longest_edge": 32}, [(32, 32), (32, 32)]
    semantic_segmentation(mask_logits, class_logits, targets, size)
    panoptic_segmentation(mask_logits, class_logits, targets, size, threshold=0.0)
    instance_segmentation(mask_logits, class_logits, targets, size, threshold=0.0)
    instance_segmentation(mask_logits, class_logits, targets, size, mode="topk")
    assert torch.equal(mask_logits, before[0]) and torch.equal(class_logits, before[1])


# ------------------------------------------------------------------------------------ validation


def test_input_validation():
    mask_logits, class_logits = make_logits(2, 16, 8, 32, 32)
    for fn in (semantic_segmentation, panoptic_segmentation, instance_segmentation):
        with pytest.raises(ValueError, match="target sizes"):
            fn(mask_logits, class_logits, [(10, 10)], PADDED)
        with pytest.raises(ValueError, match="disagree"):
            fn(mask_logits, class_logits[:1], [(10, 10)], PADDED)
    with pytest.raises(ValueError, match="images referenced by patch_offsets"):
        semantic_segmentation(mask_logits, class_logits, [(100, 200), (100, 200)], {"shortest_edge": 128},
                              patch_offsets=[(0, 0, 128), (0, 72, 200)])
    with pytest.raises(ValueError, match="patch offsets for a batch"):
        semantic_segmentation(mask_logits, class_logits, [(100, 200)], {"shortest_edge": 128},
                              patch_offsets=[(0, 0, 128)])
    with pytest.raises(ValueError, match="does not fit"):
        semantic_segmentation(mask_logits, class_logits, [(128, 200)], {"shortest_edge": 128},
                              patch_offsets=[(0, 0, 128), (0, 100, 228)])
    with pytest.raises(ValueError, match="mode"):
        instance_segmentation(mask_logits, class_logits, [(10, 10)] * 2, PADDED, mode="best")


@pytest.mark.parametrize("size, mask_hw", [({"shortest_edge": 640, "longest_edge": 640}, 160),
                                           ({"shortest_edge": 644, "longest_edge": 644}, 184),
                                           ({"shortest_edge": 128, "longest_edge": 128}, 32)])
def test_masks_at_target_computes_only_the_crop_with_the_full_resize_values(size, mask_hw):
    """The first resize reads an input prefix with the same scale: bit-equal to resize-all-then-crop."""
    from eomt.processing.postprocess import _masks_at_target
    from eomt.processing.sizes import resized_size, size_pair

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, mask_hw, mask_hw, generator=g) * 5
    for target in [(480, 640), (640, 480), (300, 301), (1000, 17), (17, 1000), (683, 1024), (1, 1), (640, 640)]:
        full = F.interpolate(logits[None], size=size_pair(size), mode="bilinear", align_corners=False)
        crop_h, crop_w = resized_size(*target, size["shortest_edge"], size["longest_edge"])
        expected = F.interpolate(full[..., :crop_h, :crop_w], size=target, mode="bilinear", align_corners=False)[0]
        assert torch.equal(_masks_at_target(logits, size, target), expected), target


def test_fast_argmax_over_the_leading_dimension_is_argmax():
    from eomt.processing.postprocess import _argmax0

    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 4, (7, 301, 257), generator=g).float()  # many ties: the first maximum wins
    assert torch.equal(_argmax0(x), x.argmax(0))
    y = torch.randn(200, 65, 1100, generator=g)  # several bands
    assert torch.equal(_argmax0(y), y.argmax(0))
    assert torch.equal(_argmax0(torch.ones(1, 3, 4)), torch.zeros(3, 4, dtype=torch.long))


# -------------------------------------------------------------------------------------- on CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_post_processing_on_cuda_matches_transformers(task):
    """The GPU path (whole masks at once, torch.argmax) gives transformers' results, and stays on the device."""
    target_sizes = [(480, 300), (200, 640)]
    mask_logits, class_logits = make_logits(2, 30, 20, 32, 32, seed=11)
    reference = transformers.EomtImageProcessor()
    gpu = mask_logits.cuda(), class_logits.cuda()
    if task == "semantic":  # sliding windows, merged on the device
        image_sizes = [(480, 1000), (37, 53)]
        offsets = _windows_from_transformers(image_sizes, 128)
        mask_logits, class_logits = make_logits(len(offsets), 24, 19, 32, 32, seed=12)
        theirs = reference.post_process_semantic_segmentation(
            _outputs(mask_logits, class_logits, offsets), target_sizes=image_sizes,
            size={"shortest_edge": 128, "longest_edge": None}, return_segmentation_scores=True)
        ours = semantic_segmentation(mask_logits.cuda(), class_logits.cuda(), image_sizes, {"shortest_edge": 128},
                                     patch_offsets=[o.tolist() for o in offsets])
        for a, b in zip(ours, theirs, strict=True):
            assert a.device.type == "cuda"
            _assert_semantic_equal(a.cpu(), b.segmentation_scores)
        return
    run = panoptic_segmentation if task == "panoptic" else instance_segmentation
    post = getattr(reference, f"post_process_{task}_segmentation")
    ours = run(*gpu, target_sizes, PADDED)
    theirs = post(_outputs(mask_logits, class_logits), target_sizes=target_sizes, size=PADDED)
    for a, b in zip(ours, theirs, strict=True):
        assert a["segmentation"].device.type == "cuda"
        assert torch.equal(a["segmentation"].cpu(), b["segmentation"].long())
        _assert_segments_equal(a["segments_info"], b["segments_info"])
        assert len(a["segments_info"]) >= 3
