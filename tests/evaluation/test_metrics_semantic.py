"""SemanticMetric: hand-computed mIoU / accuracies, a plain per-class reference, state round trips."""

import io
import math

import numpy as np
import pytest
import torch

from eomt.evaluation.metrics import SemanticMetric

# 3 x 4 maps, K = 5. Non-ignored pixels (target, pred):
# (0,0) (0,1) (1,1) (1,1) / (0,3) (1,2) (2,2) / (2,2) (2,255): pixels at target 255 are skipped
# whatever is predicted there, and the 255 prediction counts as wrong for class 2.
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 255, 1, 2],
                       [255, 255, 2, 2]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [3, 3, 2, 2],
                     [3, 4, 2, 255]])


def test_hand_computed_values():
    metric = SemanticMetric(5)
    metric.update(PRED, TARGET)
    result = metric.compute()
    # TP: c0 1, c1 2, c2 2, c3 0; targets: 3 / 3 / 3 / 0; predictions (valid, non-ignored): 1 / 3 / 3 / 1 / 0.
    # IoU: c0 1/3, c1 2/4, c2 2/4, c3 0/1 (only predicted: present, IoU 0), c4 absent (predicted only
    # on an ignored pixel) -> NaN.
    expected_iou = [100 / 3, 50.0, 50.0, 0.0]
    assert result["per_class_iou"][:4] == pytest.approx(expected_iou, abs=1e-12)
    assert math.isnan(result["per_class_iou"][4])
    assert result["mIoU"] == pytest.approx(100 / 3, abs=1e-12)  # (1/3 + 1/2 + 1/2 + 0) / 4
    assert result["pixel_accuracy"] == pytest.approx(100 * 5 / 9, abs=1e-12)  # 5 of 9 non-ignored pixels
    assert result["mean_accuracy"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 2 / 3) / 3, abs=1e-12)
    cm = metric.confusion_matrix
    assert cm.shape == (5, 5) and int(cm.sum()) == 8  # the 255 prediction is outside the (K, K) matrix
    assert int(metric.confusion[2, 5]) == 1
    assert cm[0].tolist() == [1, 1, 0, 1, 0]


def test_nothing_accumulated_and_all_ignored():
    metric = SemanticMetric(3)
    empty = metric.compute()
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["pixel_accuracy"]) and math.isnan(empty["mean_accuracy"])
    metric.update(torch.zeros(2, 2, dtype=torch.int64), torch.full((2, 2), 255))
    assert int(metric.confusion.sum()) == 0


def test_custom_ignore_index_and_dtypes():
    metric = SemanticMetric(2, ignore_index=-1)
    metric.update(np.array([[0, 1], [1, 1]], dtype=np.uint8), np.array([[0, -1], [1, 0]], dtype=np.int32))
    assert metric.compute()["per_class_iou"] == pytest.approx([50.0, 50.0])


def test_views_and_integer_dtypes_give_the_same_counts():
    reference = SemanticMetric(5)
    reference.update(PRED, TARGET)
    metric = SemanticMetric(5)
    metric.update(PRED.t().contiguous().t(), TARGET.t().contiguous().t())  # non-contiguous views
    metric.update(PRED.int(), TARGET.to(torch.int16))
    assert torch.equal(metric.confusion, 2 * reference.confusion)


def test_invalid_inputs():
    metric = SemanticMetric(3)
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.zeros(2, 2, dtype=torch.int64), torch.tensor([[0, 3], [1, 255]]))
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError):
        metric.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="ignore_index"):
        SemanticMetric(3, ignore_index=1)
    assert int(metric.confusion.sum()) == 0  # failed updates leave no trace


def reference_per_class(preds, targets, num_classes, ignore_index=255):
    """Plain numpy per-class loop: intersection, target and prediction pixel counts."""
    inter = np.zeros(num_classes)
    target_count = np.zeros(num_classes)
    pred_count = np.zeros(num_classes)
    total = 0
    for pred, target in zip(preds, targets, strict=True):
        keep = target != ignore_index
        total += keep.sum()
        for c in range(num_classes):
            p = (pred == c) & keep
            t = target == c
            inter[c] += (p & t).sum()
            target_count[c] += t.sum()
            pred_count[c] += p.sum()
    union = target_count + pred_count - inter
    ious = [inter[c] / union[c] if union[c] > 0 else math.nan for c in range(num_classes)]
    present = [iou for iou in ious if not math.isnan(iou)]
    accs = [inter[c] / target_count[c] for c in range(num_classes) if target_count[c] > 0]
    return {"mIoU": 100 * sum(present) / len(present), "pixel_accuracy": 100 * inter.sum() / total,
            "mean_accuracy": 100 * sum(accs) / len(accs), "per_class_iou": [100 * v for v in ious]}


def test_matches_plain_reference_on_random_maps():
    rng = np.random.default_rng(0)
    k = 7
    preds, targets = [], []
    metric = SemanticMetric(k)
    for _ in range(20):
        target = rng.integers(0, k - 1, size=(16, 20))  # class k-1 never in the targets
        target[rng.random(target.shape) < 0.2] = 255
        pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, k + 1, size=target.shape))
        pred[pred == 255] = 0
        preds.append(pred)
        targets.append(target)
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    ours, reference = metric.compute(), reference_per_class(preds, targets, k)
    for key in ("mIoU", "pixel_accuracy", "mean_accuracy"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9)
    np.testing.assert_allclose(ours["per_class_iou"], reference["per_class_iou"], atol=1e-9)


def test_merge_state_dict_round_trip():
    rng = np.random.default_rng(1)
    pairs = [(torch.from_numpy(rng.integers(0, 4, (8, 8))), torch.from_numpy(rng.integers(0, 4, (8, 8))))
             for _ in range(6)]
    whole, first, second = SemanticMetric(4), SemanticMetric(4), SemanticMetric(4)
    for i, (pred, target) in enumerate(pairs):
        whole.update(pred, target)
        (first if i % 2 else second).update(pred, target)
    buffer = io.BytesIO()
    torch.save(second.state_dict(), buffer)
    buffer.seek(0)
    assert torch.equal(first.merge(torch.load(buffer)).confusion, whole.confusion)
    restored = SemanticMetric(4)
    restored.load_state_dict(whole.state_dict())
    np.testing.assert_equal(restored.compute(), whole.compute())
    assert torch.equal(SemanticMetric(4).merge(whole).confusion, whole.confusion)
    with pytest.raises(ValueError):
        SemanticMetric(5).merge(whole)
    whole.reset()
    assert int(whole.confusion.sum()) == 0


def test_sync_without_distributed_is_a_no_op():
    metric = SemanticMetric(5)
    metric.update(PRED, TARGET)
    before = metric.confusion.clone()
    metric.sync()
    metric.update(PRED, TARGET)  # not synced across processes: updating goes on
    assert torch.equal(metric.confusion, 2 * before)
