"""InstanceMetric: every number equal to pycocotools' COCOeval run directly, plus simple cases."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eomt.evaluation.metrics import InstanceMetric

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def random_image(rng, num_classes, height=160, width=160):
    """GT rectangles/ellipses of all sizes (some crowd) and predictions: perturbed copies with some
    wrong labels, plus false detections; random scores."""
    yy, xx = np.mgrid[:height, :width]

    def blob():
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry, rx = rng.integers(2, 75), rng.integers(2, 75)
        if rng.random() < 0.5:
            return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1

    n = int(rng.integers(0, 7))
    gt_masks = np.stack([blob() for _ in range(n)]) if n else np.zeros((0, height, width), bool)
    gt_labels = rng.integers(0, num_classes, n)
    gt_crowd = (rng.random(n) < 0.1).astype(np.int64)
    pred_masks, pred_labels = [], []
    for mask, label in zip(gt_masks, gt_labels, strict=True):
        if rng.random() < 0.2:
            continue
        shifted = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        pred_masks.append(shifted & (rng.random(mask.shape) < 0.99))
        pred_labels.append(label if rng.random() < 0.85 else rng.integers(num_classes))
    for _ in range(rng.integers(0, 4)):
        pred_masks.append(blob())
        pred_labels.append(rng.integers(num_classes))
    m = len(pred_masks)
    pred_masks = np.stack(pred_masks) if m else np.zeros((0, height, width), bool)
    return (torch.from_numpy(gt_masks), torch.from_numpy(gt_labels), torch.from_numpy(gt_crowd),
            torch.from_numpy(pred_masks), torch.tensor(pred_labels, dtype=torch.int64),
            torch.from_numpy(rng.random(m)))


def direct_cocoeval(images, category_ids):
    """COCOeval on a dataset built here, independently of the metric's code."""
    coco_images, annotations, results = [], [], []
    for image_id, (gt_masks, gt_labels, gt_crowd, pred_masks, pred_labels, pred_scores) in images.items():
        height, width = gt_masks.shape[1:]
        coco_images.append({"id": image_id, "height": height, "width": width})
        for mask, label, crowd in zip(gt_masks.numpy(), gt_labels.tolist(), gt_crowd.tolist(), strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[label],
                                "segmentation": rle, "area": float(mask_utils.area(rle)),
                                "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": crowd})
        for mask, label, score in zip(pred_masks.numpy(), pred_labels.tolist(), pred_scores.tolist(), strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            results.append({"image_id": image_id, "category_id": category_ids[label], "segmentation": rle,
                            "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": coco_images, "annotations": annotations,
                      "categories": [{"id": c, "name": str(c)} for c in category_ids]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def fill(metric, images):
    for image_id, data in images.items():
        metric.update(image_id, *data)


@pytest.mark.parametrize("category_ids", [None, [7, 3, 90, 15]])
def test_identical_to_direct_cocoeval(category_ids):
    rng = np.random.default_rng(5)
    images = {int(i): random_image(rng, 4) for i in rng.choice(1000, 20, replace=False)}
    metric = InstanceMetric(4, category_ids=category_ids)
    fill(metric, images)
    ours = metric.compute()
    ids = category_ids or list(range(4))
    evaluator = direct_cocoeval(images, ids)
    for name, value in zip(STATS, evaluator.stats, strict=True):
        expected = 100 * value if value > -1 else math.nan
        np.testing.assert_equal(ours[name], expected, err_msg=name)
    assert 0 < ours["AP"] < 100 and not math.isnan(ours["APl"]) and not math.isnan(ours["APs"])
    catids = evaluator.params.catIds
    for label, category in enumerate(ids):
        precision = evaluator.eval["precision"][:, :, catids.index(category), 0, -1]
        precision = precision[precision > -1]
        expected = 100 * precision.mean() if precision.size else math.nan
        np.testing.assert_equal(ours["per_class_AP"][label], expected)


def test_perfect_and_shuffled_predictions():
    rng = np.random.default_rng(6)
    images = {}
    for image_id in range(8):
        gt_masks, gt_labels, gt_crowd, *_ = random_image(rng, 3)
        gt_crowd = torch.zeros_like(gt_crowd)
        images[image_id] = (gt_masks, gt_labels, gt_crowd, gt_masks.clone(), gt_labels.clone(),
                            torch.rand(len(gt_labels)))
    perfect = InstanceMetric(["a", "b", "c"])
    fill(perfect, images)
    result = perfect.compute()
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert result[name] == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for v in result["per_class_AP"] if not math.isnan(v))

    shuffled = InstanceMetric(3)
    for image_id, (gt_masks, gt_labels, gt_crowd, masks, labels, scores) in images.items():
        order = torch.roll(torch.arange(len(labels)), 1)  # every mask goes to another object's label
        shuffled.update(image_id, gt_masks, gt_labels, gt_crowd, masks[order], labels, scores)
    assert shuffled.compute()["AP"] < result["AP"] - 10


def test_rle_inputs_and_empty_cases():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, :5, :5] = True
    masks[1, 5:, 6:] = True
    rles = mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    from_rles, from_masks = InstanceMetric(2), InstanceMetric(2)
    from_rles.update(1, list(rles), [0, 1], [0, 0], list(rles), [0, 1], [0.9, 0.4])
    from_masks.update(1, masks, [0, 1], None, masks, [0, 1], [0.9, 0.4])
    assert from_rles.records == from_masks.records
    assert from_masks.compute()["AP"] == pytest.approx(100.0)

    # ground truth but no predictions at all: AP 0 (every object missed)
    missed = InstanceMetric(2)
    missed.update(1, masks, [0, 1], None, torch.zeros(0, 10, 12, dtype=torch.bool), [], [])
    result = missed.compute()
    assert result["AP"] == 0.0 and result["per_class_AP"] == [0.0, 0.0]
    assert math.isnan(result["APm"])  # no medium object: pycocotools says -1

    # predictions but no ground truth, and nothing at all: NaN
    no_gt = InstanceMetric(2)
    no_gt.update(1, [], [], None, masks, [0, 1], [0.9, 0.4])
    assert math.isnan(no_gt.compute()["AP"])
    nothing = InstanceMetric(2).compute()
    assert math.isnan(nothing["AP"]) and len(nothing["per_class_AP"]) == 2
    assert all(map(math.isnan, nothing["per_class_AP"]))

    with pytest.raises(ValueError, match="image_size"):
        InstanceMetric(2).update(1, [], [], None, [], [], [])
    InstanceMetric(2).update(1, [], [], None, [], [], [], image_size=(10, 12))


def test_invalid_inputs():
    metric = InstanceMetric(2)
    masks = torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="pred_labels"):
        metric.update(1, masks, [0], None, masks, [2], [0.5])
    with pytest.raises(ValueError, match="sizes"):
        metric.update(1, masks, [0], None, torch.ones(1, 4, 5, dtype=torch.bool), [0], [0.5])
    with pytest.raises(TypeError):
        metric.update(1, masks, [0], None, masks.float(), [0], [0.5])
    with pytest.raises(ValueError, match="expected 1 values"):
        metric.update(1, masks, [0], None, masks, [0], [0.5, 0.2])
    metric.update(1, masks, [0], None, masks, [0], [0.5])
    with pytest.raises(ValueError, match="already"):
        metric.update(1, masks, [0], None, masks, [0], [0.5])


def test_merge_state_dict_round_trip():
    rng = np.random.default_rng(7)
    images = {i: random_image(rng, 3, 64, 64) for i in range(10)}
    whole, first, second = InstanceMetric(3), InstanceMetric(3), InstanceMetric(3)
    fill(whole, images)
    for image_id, data in images.items():
        (first if image_id % 2 else second).update(image_id, *data)
    state = json.loads(json.dumps(second.state_dict()))  # plain JSON-able records
    first.merge(state)
    first.merge(second)  # already present: skipped
    assert len(first.records) == 10
    np.testing.assert_equal(first.compute(), whole.compute())
    restored = InstanceMetric(3)
    restored.load_state_dict(whole.state_dict())
    np.testing.assert_equal(restored.compute(), whole.compute())
    with pytest.raises(ValueError):
        InstanceMetric(4).merge(whole)
    whole.reset()
    assert whole.records == []


def test_an_image_with_more_than_255_objects():
    """pycocotools' area() of more than 255 RLEs fails under numpy 2; crowded images (tiles, cells) have them."""
    gt = torch.zeros(300, 40, 40, dtype=torch.bool)
    for i in range(300):
        gt[i, (i // 20) * 2:(i // 20) * 2 + 2, (i % 20) * 2:(i % 20) * 2 + 1 + i % 2] = True
    labels, crowd = torch.zeros(300, dtype=torch.int64), torch.zeros(300, dtype=torch.int64)
    image = (gt, labels, crowd, gt.clone(), labels.clone(), torch.rand(300, generator=torch.Generator().manual_seed(0)))
    metric = InstanceMetric(1)
    metric.update(0, *image)
    ours = metric.compute()
    for name, value in zip(STATS, direct_cocoeval({0: image}, [0]).stats, strict=True):
        np.testing.assert_equal(ours[name], 100 * value if value > -1 else math.nan, err_msg=name)
    assert ours["AP"] > 10
