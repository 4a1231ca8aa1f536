import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from eomt.outputs.coco_formats import (
    PANOPTIC_ID_OFFSET,
    encode_rle,
    encode_rles,
    instance_results,
    mask_to_bbox,
    masks_to_bboxes,
    panoptic_segments_info,
    panoptic_to_rgb,
    rgb_to_panoptic,
)
from eomt.outputs.instance_masks import InstanceMasks

# pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _random_masks(rng: np.random.Generator, n: int = 12, h: int = 37, w: int = 53) -> np.ndarray:
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            masks[i] = rng.random((h, w)) < rng.uniform(0.01, 0.9)
        elif kind == 1:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            masks[i, y0 : y0 + rng.integers(1, 10), x0 : x0 + rng.integers(1, 10)] = True
        elif kind == 2:
            masks[i, rng.integers(0, h), rng.integers(0, w)] = True  # a single pixel
        # kind 3: empty
    masks[-1] = True  # a full mask
    masks[-2] = False  # an empty one
    return masks


def _coco_encode(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def test_rle_round_trip_area_and_bbox_match_pycocotools():
    rng = np.random.default_rng(0)
    masks = _random_masks(rng)
    rles = encode_rles(torch.from_numpy(masks))
    assert len(rles) == len(masks)
    for mask, rle in zip(masks, rles, strict=True):
        single = encode_rle(mask)
        assert single == rle
        assert isinstance(rle["counts"], str)
        json.dumps(rle)  # serialisable as is
        assert rle["size"] == list(mask.shape)
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
        assert rle["counts"] == _coco_encode(mask)["counts"].decode("ascii")
        assert int(mask_utils.area(rle)) == int(mask.sum())
        reference = mask_utils.toBbox(_coco_encode(mask)).tolist()
        assert mask_to_bbox(mask) == reference
        assert mask_to_bbox(torch.from_numpy(mask)) == reference


def test_masks_to_bboxes_vectorised_matches_single_and_keeps_type():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, n=20)
    boxes = masks_to_bboxes(masks)
    assert isinstance(boxes, np.ndarray) and boxes.shape == (20, 4)
    for mask, box in zip(masks, boxes, strict=True):
        assert box.tolist() == mask_utils.toBbox(_coco_encode(mask)).tolist()
    tboxes = masks_to_bboxes(torch.from_numpy(masks))
    assert isinstance(tboxes, torch.Tensor)
    np.testing.assert_array_equal(tboxes.numpy(), boxes)
    assert masks_to_bboxes(np.zeros((0, 4, 5), dtype=bool)).shape == (0, 4)
    assert mask_to_bbox(np.zeros((4, 5), dtype=bool)) == [0.0, 0.0, 0.0, 0.0]
    assert mask_to_bbox(np.ones((4, 5), dtype=bool)) == [0.0, 0.0, 5.0, 4.0]


def test_encode_rles_empty_and_non_bool_input():
    assert encode_rles(np.zeros((0, 3, 3), dtype=bool)) == []
    mask = np.array([[0, 2], [1, 0]], dtype=np.int64)
    np.testing.assert_array_equal(mask_utils.decode(encode_rle(mask)), mask != 0)


def test_panoptic_rgb_round_trip_and_channels():
    rng = np.random.default_rng(2)
    seg = rng.integers(-1, 40, size=(23, 31))
    seg[0, 0], seg[0, 1], seg[0, 2] = 300, 70_000, -1
    rgb = panoptic_to_rgb(torch.from_numpy(seg))
    assert rgb.dtype == np.uint8 and rgb.shape == (23, 31, 3)
    np.testing.assert_array_equal(rgb_to_panoptic(rgb), seg)
    np.testing.assert_array_equal(rgb_to_panoptic(rgb, raw=True), np.where(seg >= 0, seg + 1, 0))
    assert (rgb[seg == -1] == 0).all()  # void -> 0
    assert rgb[0, 0].tolist() == [301 % 256, 301 // 256, 0]  # > 255 spills into G
    assert rgb[0, 1].tolist() == [70_001 % 256, (70_001 // 256) % 256, 70_001 // 65536]  # > 65535 into B
    assert rgb[0, 1, 2] == 1


def test_panoptic_rgb_with_ids_map_and_limits():
    seg = np.array([[0, 1], [2, -1]])
    rgb = panoptic_to_rgb(seg, ids_map={0: 5, 1: 1000})
    np.testing.assert_array_equal(rgb_to_panoptic(rgb, raw=True), [[5, 1000], [0, 0]])  # unmapped 2 -> void
    with pytest.raises(ValueError):
        panoptic_to_rgb(np.array([[256**3]]))
    from PIL import Image

    np.testing.assert_array_equal(rgb_to_panoptic(Image.fromarray(panoptic_to_rgb(seg))), seg)


def _reference_stats(seg: np.ndarray, sid: int) -> tuple[int, list[float]]:
    ys, xs = np.nonzero(seg == sid)
    if len(ys) == 0:
        return 0, [0.0, 0.0, 0.0, 0.0]
    return len(ys), [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def test_panoptic_segments_info_matches_per_segment_numpy():
    rng = np.random.default_rng(3)
    seg = rng.integers(-1, 15, size=(8, 12)).repeat(5, 0).repeat(5, 1)
    seg[:, -7:] = rng.integers(-1, 15, size=(40, 7))
    infos = [{"id": i, "label_id": 100 + i, "score": 0.5 + i / 100} for i in range(20)]  # 15..19 absent
    out = panoptic_segments_info(torch.from_numpy(seg), infos, drop_empty=False)
    assert len(out) == 20
    for info, entry in zip(infos, out, strict=True):
        area, bbox = _reference_stats(seg, info["id"])
        assert entry == {
            "id": info["id"] + PANOPTIC_ID_OFFSET,
            "category_id": info["label_id"],
            "iscrowd": 0,
            "area": area,
            "bbox": bbox,
            "score": info["score"],
        }
    dropped = panoptic_segments_info(seg, infos)
    assert [e["id"] for e in dropped] == [i + 1 for i in range(15) if (seg == i).any()]
    json.dumps(dropped)


def test_panoptic_segments_info_category_mapping_and_things():
    seg = np.array([[0, 0, 1], [2, 2, -1]])
    infos = [{"id": 0, "label_id": 3, "score": 0.9}, {"id": 1, "label_id": 4, "score": 0.8}, {"id": 2, "label_id": 3}]
    out = panoptic_segments_info(seg, infos, label_to_category={3: 30, 4: 40}, is_thing={3})
    assert [e["category_id"] for e in out] == [30, 40, 30]
    assert [e["isthing"] for e in out] == [True, False, True]
    assert "score" not in out[2]
    out = panoptic_segments_info(seg, infos, is_thing=lambda label: label == 4)
    assert [e["isthing"] for e in out] == [False, True, False]
    # sparse, large segment ids go through the fallback path
    big = np.where(seg >= 0, seg * 10**9, -1)
    out = panoptic_segments_info(big, [dict(i, id=i["id"] * 10**9) for i in infos])
    assert [e["area"] for e in out] == [2, 1, 2]
    assert out[2]["bbox"] == [0.0, 1.0, 2.0, 1.0]


def test_instance_results_coco_format():
    rng = np.random.default_rng(4)
    masks = _random_masks(rng, n=6, h=20, w=30)
    infos = [{"id": i, "label_id": i % 3, "score": 0.1 * i} for i in range(6)]
    out = instance_results(torch.from_numpy(masks), infos, image_id=7, label_to_category={0: 1, 1: 2, 2: 5})
    assert len(out) == 6
    for mask, info, entry in zip(masks, infos, out, strict=True):
        assert set(entry) == {"image_id", "category_id", "segmentation", "bbox", "score", "area"}
        assert entry["image_id"] == 7
        assert entry["category_id"] == {0: 1, 1: 2, 2: 5}[info["label_id"]]
        assert entry["score"] == pytest.approx(info["score"])
        np.testing.assert_array_equal(mask_utils.decode(entry["segmentation"]).astype(bool), mask)
        assert entry["area"] == int(mask.sum())
        assert entry["bbox"] == mask_to_bbox(mask)
    json.dumps(out)
    assert instance_results(np.zeros((0, 4, 4), dtype=bool), [], image_id=1) == []
    with pytest.raises(ValueError):
        instance_results(masks, infos[:2], image_id=1)


@pytest.mark.parametrize("compact", [False, True])
def test_instance_results_of_more_than_255_instances(compact):
    """pycocotools' area() of more than 255 RLEs at once fails under numpy 2; a tiled image can have thousands."""
    masks = torch.zeros(600, 30, 40, dtype=torch.bool)
    for i in range(600):
        masks[i, i % 30, : 1 + i % 40] = True
    info = [{"id": i, "label_id": 0, "score": 0.9} for i in range(600)]
    results = instance_results(InstanceMasks.from_dense(masks) if compact else masks, info, "img")
    assert [r["area"] for r in results] == [1 + i % 40 for i in range(600)]
    assert results[599]["segmentation"] == encode_rle(masks[599])
