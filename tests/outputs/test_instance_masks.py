"""InstanceMasks (tight crops) give what the dense (N, H, W) stack gives: RLE strings, boxes, areas, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.outputs.coco_formats import encode_rles, instance_results, masks_to_bboxes
from eomt.outputs.instance_masks import InstanceMasks
from eomt.outputs.overlay import overlay, overlay_instances


def awkward_masks(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random blobs plus the cases RLE edges get wrong: empty, full, single corner pixels, whole first / last
    column, whole columns with a gap at a column's top and bottom, a mask touching the bottom row only."""
    g = torch.Generator().manual_seed(seed)
    masks = [torch.rand((height, width), generator=g) > 0.7]
    blob = torch.zeros((height, width), dtype=torch.bool)
    blob[height // 4: height // 2, width // 3: width - 2] = True
    masks.append(blob)
    masks.append(torch.zeros((height, width), dtype=torch.bool))
    masks.append(torch.ones((height, width), dtype=torch.bool))
    for y, x in ((0, 0), (height - 1, width - 1), (0, width - 1), (height - 1, 0)):
        one = torch.zeros((height, width), dtype=torch.bool)
        one[y, x] = True
        masks.append(one)
    column = torch.zeros((height, width), dtype=torch.bool)
    column[:, 0] = True
    masks.append(column)
    column = torch.zeros((height, width), dtype=torch.bool)
    column[:, -1] = True
    masks.append(column)
    band = torch.zeros((height, width), dtype=torch.bool)  # full-height columns: runs go on across columns
    band[:, width // 3:] = True
    band[0, -1] = band[-1, width // 3] = False
    masks.append(band)
    bottom = torch.zeros((height, width), dtype=torch.bool)
    bottom[-1, 2:5] = True
    masks.append(bottom)
    return torch.stack(masks)


@pytest.mark.parametrize("hw", [(13, 17), (40, 9), (1, 12), (12, 1)])
def test_rles_boxes_and_areas_equal_those_of_the_dense_stack(hw):
    dense = awkward_masks(*hw)
    compact = InstanceMasks.from_dense(dense)
    assert torch.equal(compact.dense(), dense) and compact.shape == tuple(dense.shape)
    expected = mask_utils.encode(np.asfortranarray(dense.numpy().transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"] for r in compact.raw_rles()] == [r["counts"] for r in expected]
    assert encode_rles(compact) == encode_rles(dense)
    assert compact.areas() == dense.flatten(1).sum(1).tolist()
    np.testing.assert_array_equal(masks_to_bboxes(compact), masks_to_bboxes(dense.numpy()))
    info = [{"id": i, "label_id": i % 3, "score": 0.5} for i in range(len(dense))]
    assert instance_results(compact, info, "img") == instance_results(dense, info, "img")
    last = torch.full(hw, -1, dtype=torch.long)
    for i, mask in enumerate(dense):
        last[mask] = i
    assert torch.equal(compact.last_covering(), last)


def test_rles_encoded_on_several_threads_equal_pycocotools(monkeypatch):
    """Large crops are encoded on a thread pool; the strings and their order are those of the serial path."""
    import eomt.outputs.instance_masks as instance_masks

    dense = awkward_masks(37, 23, seed=3)
    expected = mask_utils.encode(np.asfortranarray(dense.numpy().transpose(1, 2, 0).astype(np.uint8)))
    monkeypatch.setattr(instance_masks, "_PARALLEL_PIXELS", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert [r["counts"] for r in InstanceMasks.from_dense(dense).raw_rles()] == [r["counts"] for r in expected]

@pytest.mark.parametrize("threads", [1, 3])  # one pass, then bands of rows painted on a thread pool
@pytest.mark.parametrize("count", [12, 300])  # ranks held in uint8, then in uint16
def test_last_covering_and_paint_order_keep_the_last_instance_of_each_pixel(count, threads, monkeypatch):
    import eomt.outputs.instance_masks as instance_masks

    monkeypatch.setattr(instance_masks, "_PARALLEL_PIXELS", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(count)
    dense = torch.zeros((count, 30, 40), dtype=torch.bool)
    for i in range(count):  # overlapping boxes of random size and place, a few of them empty
        y, x = torch.randint(0, 30, (2,), generator=g).tolist(), torch.randint(0, 40, (2,), generator=g).tolist()
        dense[i, min(y):max(y), min(x):max(x)] = torch.rand((max(y) - min(y), max(x) - min(x)), generator=g) > 0.3
    compact = InstanceMasks.from_dense(dense)
    last = torch.full((30, 40), -1, dtype=torch.long)
    for i, mask in enumerate(dense):
        last[mask] = i
    assert torch.equal(compact.last_covering(), last)
    order = torch.randperm(count, generator=g).tolist()
    ranks = np.zeros((30, 40), dtype=np.int64)
    for rank, i in enumerate(order, 1):
        ranks[dense[i].numpy()] = rank
    assert np.array_equal(compact.paint_order(order), ranks)

def test_crops_are_tight_and_indexing_reads_as_the_stack():
    dense = awkward_masks(30, 20, seed=3)
    compact = InstanceMasks.from_dense(dense)
    assert compact.crops[1].shape == (30 // 2 - 30 // 4, 20 - 2 - 20 // 3) and compact.offsets[1] == (7, 6)
    assert compact.crops[2].shape == (0, 0)
    assert torch.equal(compact[1], dense[1]) and torch.equal(compact[-1], dense[-1])
    assert torch.equal(torch.stack(list(compact)), dense)
    assert torch.equal(compact[2:5].dense(), dense[2:5])
    with pytest.raises(ValueError, match="does not fit"):
        InstanceMasks(10, 10, [torch.ones((4, 4), dtype=torch.bool)], [(8, 0)])


def test_loose_crops_are_trimmed_so_boxes_are_those_of_the_rles():
    dense = awkward_masks(30, 20, seed=4)
    loose = InstanceMasks(30, 20)
    for mask in dense:  # whole masks, and crops with empty margins, given as they are
        loose.add_crop(mask, 0, 0)
    assert loose.crops[1].shape == (30 // 2 - 30 // 4, 20 - 2 - 20 // 3) and loose.offsets[1] == (7, 6)
    assert loose.shapes[2] == (0, 0) and loose.offsets[2] == (0, 0)
    assert torch.equal(loose.dense(), dense)
    info = [{"id": i, "label_id": 0, "score": 0.5} for i in range(len(dense))]
    assert instance_results(loose, info, "img") == instance_results(dense, info, "img")


def test_masks_are_kept_packed_and_do_not_follow_their_source():
    dense = awkward_masks(64, 48, seed=5)
    compact = InstanceMasks.from_dense(dense.clone())
    source = dense[0].clone()
    compact.add_crop(source, 0, 0)
    source.zero_()  # the caller reuses its buffer: the stored mask keeps what it was given
    assert torch.equal(compact[-1], dense[0]) and compact.areas()[-1] == int(dense[0].sum())
    stored = sum(p.nbytes for p in compact._packed)
    assert stored <= sum(c.numel() for c in compact.crops) // 8 + len(compact)  # 1 bit a pixel
    repeated = compact.take([1, 1, 0])
    assert torch.equal(repeated.dense(), dense[[1, 1, 0]])
    assert repeated.areas() == dense[[1, 1, 0]].flatten(1).sum(1).tolist()


def test_overlay_from_crops_equals_the_overlay_from_the_stack():
    dense = awkward_masks(60, 80, seed=1)[:6]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    labels, scores = [f"c{i}" for i in range(6)], [0.9 - 0.1 * i for i in range(6)]
    seg = np.full((60, 80), -1, dtype=np.int64)  # the stack's rule: largest first, smaller ones on top
    areas = dense.flatten(1).sum(1).numpy()
    for i in np.argsort(-areas, kind="stable"):
        seg[dense[i].numpy()] = i
    expected = overlay(image, seg, [(i, labels[i], scores[i]) for i in range(6)])
    for masks in (dense, InstanceMasks.from_dense(dense)):
        assert overlay_instances(image, masks, labels, scores).tobytes() == expected.tobytes()
