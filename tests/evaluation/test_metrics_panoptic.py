"""PanopticMetric: hand-computed cases for each panopticapi rule, and equality with a plain
segment-by-segment, pixel-by-pixel reimplementation of those rules on random panoptic pairs."""

import io
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from eomt.evaluation.metrics import PanopticMetric
from eomt.evaluation.metrics.panoptic import _dense_index, _hash_parameters

H, W = 4, 8


def columns(spec):
    """(H, W) id map from {id: (first column, last column)}; other pixels are 0 (unlisted: void)."""
    id_map = torch.zeros(H, W, dtype=torch.int64)
    for segment_id, (first, last) in spec.items():
        id_map[:, first:last + 1] = segment_id
    return id_map


def stats(metric):
    return {name: getattr(metric, name).tolist() for name in ("tp", "fp", "fn", "iou_sum")}


def run(pred_spec, pred_labels, gt_spec, gt_labels, crowd=(), num_classes=3, things=(0,)):
    metric = PanopticMetric(num_classes, things)
    pred_segments = [{"id": i, "label_id": c} for i, c in pred_labels.items()]
    gt_segments = [{"id": i, "label_id": c, "iscrowd": int(i in crowd)} for i, c in gt_labels.items()]
    metric.update(columns(pred_spec), pred_segments, columns(gt_spec), gt_segments)
    return metric


# --------------------------------------------------------------------------- hand-computed cases


def test_void_pixels_of_a_prediction_are_left_out_of_the_union():
    # GT: segment 1 (class 0) on columns 0-3 (16 px), void on 4-7. Prediction 10 (class 0) on 0-5:
    # 24 px, 16 on segment 1 and 8 on void -> IoU = 16 / (24 + 16 - 16 - 8) = 1 (16/24 without the rule).
    metric = run({10: (0, 5)}, {10: 0}, {1: (0, 3)}, {1: 0})
    assert stats(metric) == {"tp": [1, 0, 0], "fp": [0, 0, 0], "fn": [0, 0, 0], "iou_sum": [1.0, 0.0, 0.0]}
    # with the void columns labelled as another class the union is 24 -> IoU 2/3, still a match
    metric = run({10: (0, 5)}, {10: 0}, {1: (0, 3), 2: (4, 7)}, {1: 0, 2: 1})
    assert metric.tp.tolist() == [1, 0, 0] and metric.fn.tolist() == [0, 1, 0]
    assert metric.iou_sum[0].item() == pytest.approx(16 / 24, abs=1e-15)


def test_false_positive_false_negative_and_final_scores():
    # segment 1 (class 0) matched exactly; segment 2 (class 1) covered by prediction 11 of class 2:
    # same pixels, wrong class -> FN for class 1 and FP for class 2.
    metric = run({10: (0, 3), 11: (4, 7)}, {10: 0, 11: 2}, {1: (0, 3), 2: (4, 7)}, {1: 0, 2: 1})
    assert stats(metric) == {"tp": [1, 0, 0], "fp": [0, 0, 1], "fn": [0, 1, 0], "iou_sum": [1.0, 0.0, 0.0]}
    result = metric.compute()
    assert result["per_class_PQ"] == [100.0, 0.0, 0.0]
    assert result["All"] == {"PQ": pytest.approx(100 / 3), "SQ": pytest.approx(100 / 3),
                             "RQ": pytest.approx(100 / 3), "n": 3}
    assert result["Things"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "n": 1}
    assert result["Stuff"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "n": 2}
    assert result["PQ"] == result["All"]["PQ"]


def test_partial_match_scores():
    # class 0: prediction on columns 0-2 of a 0-3 segment: IoU 12/16 = 0.75 -> PQ = SQ = 75, RQ = 100.
    # class 1: one GT segment (columns 4-7) predicted only on columns 4-5 (IoU 0.5, not > 0.5): FP + FN.
    metric = run({10: (0, 2), 11: (4, 5)}, {10: 0, 11: 1}, {1: (0, 3), 2: (4, 7)}, {1: 0, 2: 1})
    assert stats(metric) == {"tp": [1, 0, 0], "fp": [0, 1, 0], "fn": [0, 1, 0], "iou_sum": [0.75, 0.0, 0.0]}
    result = metric.compute()
    assert result["per_class_PQ"][:2] == [75.0, 0.0] and result["per_class_SQ"][:2] == [75.0, 0.0]
    assert result["per_class_RQ"][:2] == [100.0, 0.0]
    assert math.isnan(result["per_class_PQ"][2])  # class 2 does not appear
    assert result["All"]["n"] == 2 and result["All"]["PQ"] == pytest.approx(37.5)


def test_crowd_region_absorbs_a_prediction_of_its_class():
    # GT: crowd segment 1 (class 0) on columns 0-3, segment 2 (class 1) on 4-7.
    # Prediction 10 (class 0) on 0-4: 16 of its 20 px on the crowd of its class -> ignored, not FP.
    # Prediction 11 (class 1) on 5-7: IoU 12/16 with segment 2 -> TP. The crowd GT is never an FN.
    metric = run({10: (0, 4), 11: (5, 7)}, {10: 0, 11: 1}, {1: (0, 3), 2: (4, 7)}, {1: 0, 2: 1}, crowd={1})
    assert stats(metric) == {"tp": [0, 1, 0], "fp": [0, 0, 0], "fn": [0, 0, 0], "iou_sum": [0.0, 0.75, 0.0]}
    # a crowd segment never matches, even when covered exactly
    metric = run({10: (0, 3)}, {10: 0}, {1: (0, 3)}, {1: 0}, crowd={1})
    assert stats(metric) == {"tp": [0, 0, 0], "fp": [0, 0, 0], "fn": [0, 0, 0], "iou_sum": [0.0, 0.0, 0.0]}
    # a crowd region of another class does not absorb: prediction of class 2 on the class-0 crowd is an FP
    metric = run({10: (0, 3)}, {10: 2}, {1: (0, 3)}, {1: 0}, crowd={1})
    assert stats(metric)["fp"] == [0, 0, 1]


def test_only_the_last_crowd_segment_of_a_class_absorbs_as_in_panopticapi():
    # GT: crowd segments 1 (columns 0-3) and 2 (columns 4-7), both class 0, listed 1 then 2.
    # Prediction 10 (class 0) on columns 0-3 lies on crowd 1 only: panopticapi looks up crowd 2 (the last
    # listed) -> a false positive. On columns 4-7 it lies on crowd 2 -> ignored.
    gt, labels = {1: (0, 3), 2: (4, 7)}, {1: 0, 2: 0}
    assert stats(run({10: (0, 3)}, {10: 0}, gt, labels, crowd={1, 2}))["fp"] == [1, 0, 0]
    assert stats(run({10: (4, 7)}, {10: 0}, gt, labels, crowd={1, 2}))["fp"] == [0, 0, 0]
    # listed the other way round, crowd 1 is the last one
    metric = PanopticMetric(3, (0,))
    metric.update(columns({10: (0, 3)}), [{"id": 10, "label_id": 0}], columns(gt),
                  [{"id": 2, "label_id": 0, "iscrowd": 1}, {"id": 1, "label_id": 0, "iscrowd": 1}])
    assert stats(metric)["fp"] == [0, 0, 0]
    # half on each crowd segment: 16 of 32 px on the last one is not more than half -> FP
    assert stats(run({10: (0, 7)}, {10: 0}, gt, labels, crowd={1, 2}))["fp"] == [1, 0, 0]


def test_void_and_crowd_add_up_and_more_than_half_is_needed():
    # Prediction 10 (class 0) on columns 2-5 (16 px): 4 px on crowd of class 0 (column 3), 4 px on void
    # (column 4), 8 px on segment 2 (class 1; columns 2 and 5) -> 8/16 is exactly half: FP.
    gt = {1: (3, 3), 2: (0, 2), 3: (5, 7)}
    metric = run({10: (2, 5)}, {10: 0}, gt, {1: 0, 2: 1, 3: 1}, crowd={1})
    assert stats(metric)["fp"] == [1, 0, 0] and stats(metric)["fn"] == [0, 2, 0]
    # on columns 3-5: 4 crowd + 4 void of 12 px = 2/3 -> ignored
    metric = run({10: (3, 5)}, {10: 0}, gt, {1: 0, 2: 1, 3: 1}, crowd={1})
    assert stats(metric)["fp"] == [0, 0, 0]


def test_more_than_half_on_void_is_not_a_false_positive():
    # GT: segment 1 (class 0) on columns 0-3, void on 4-7.
    # prediction of class 1 on columns 3-5: 8 of 12 px on void -> ignored (segment 1 is an FN)
    metric = run({10: (3, 5)}, {10: 1}, {1: (0, 3)}, {1: 0})
    assert stats(metric) == {"tp": [0, 0, 0], "fp": [0, 0, 0], "fn": [1, 0, 0], "iou_sum": [0.0, 0.0, 0.0]}
    # on columns 2-5: 8 of 16 px on void, exactly half -> FP
    metric = run({10: (2, 5)}, {10: 1}, {1: (0, 3)}, {1: 0})
    assert stats(metric)["fp"] == [0, 1, 0]


def test_unlisted_ids_are_void_and_empty_segments():
    # prediction pixels with an unlisted id (here 99 on columns 4-7) are simply not predicted;
    # a listed prediction without pixels is ignored; a listed GT segment without pixels is an FN.
    pred = columns({10: (0, 3), 99: (4, 7)})
    gt = columns({1: (0, 3), 2: (4, 7)})
    gt[gt == 2] = -1  # GT id -1 is not listed: void
    metric = PanopticMetric(3, [0])
    metric.update(pred, [{"id": 10, "label_id": 0}, {"id": 11, "label_id": 1}],
                  gt, [{"id": 1, "label_id": 0}, {"id": 5, "label_id": 2}])
    assert stats(metric) == {"tp": [1, 0, 0], "fp": [0, 0, 0], "fn": [0, 0, 1], "iou_sum": [1.0, 0.0, 0.0]}


def test_views_and_integer_dtypes_give_the_same_counts():
    rng = np.random.default_rng(9)
    pairs = [random_panoptic_pair(rng) for _ in range(20)]
    reference, metric = PanopticMetric(6, [0]), PanopticMetric(6, [0])
    for pred, pred_segments, gt, gt_segments in pairs:
        reference.update(pred, pred_segments, gt, gt_segments)
        if int(gt.abs().max()) < 2**31 and int(pred.abs().max()) < 2**31:
            pred, gt = pred.int(), gt.int()
        metric.update(pred.t().contiguous().t(), pred_segments, gt.t().contiguous().t(), gt_segments)
    assert stats(metric) == stats(reference)


def test_invalid_segments_raise():
    metric = PanopticMetric(3, [0])
    ok = [{"id": 1, "label_id": 0}]
    with pytest.raises(ValueError, match="label_id"):
        metric.update(columns({1: (0, 7)}), [{"id": 1, "label_id": 3}], columns({1: (0, 7)}), ok)
    with pytest.raises(ValueError, match="label_id"):
        metric.update(columns({1: (0, 7)}), ok, columns({1: (0, 7)}), [{"id": 1, "label_id": -1}])
    with pytest.raises(ValueError, match="more than once"):
        metric.update(columns({1: (0, 7)}), ok + ok, columns({1: (0, 7)}), ok)
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(2, 2, dtype=torch.int64), ok, columns({1: (0, 7)}), ok)
    with pytest.raises(ValueError, match="thing_classes"):
        PanopticMetric(3, [3])
    assert int(metric.tp.sum() + metric.fn.sum() + metric.fp.sum()) == 0


def test_no_appearing_class_gives_nan():
    result = PanopticMetric(2, [0]).compute()
    assert math.isnan(result["PQ"]) and result["All"]["n"] == 0 and math.isnan(result["Things"]["SQ"])


@pytest.mark.parametrize("ids", [
    [0, 1, 2, 7],                                     # lookup table
    [-3, 5, 40, 1000],                                # lookup table with an offset
    [1, 1 << 21, 3 << 22, -(1 << 25), 16777215],      # hash
    [5, 1 << 40, -(1 << 45)],                         # binary search
])
def test_dense_index_paths(ids):
    rng = np.random.default_rng(len(ids))
    others = [-1, 0, 3, 1 << 20, (1 << 21) + 1, 1 << 33, -(1 << 62), (1 << 62) + 5, 123456789]
    values = rng.choice(np.array(ids + others, dtype=np.int64), size=(30, 40))
    position = {v: i for i, v in enumerate(ids)}
    expected = torch.tensor([[position.get(int(v), len(ids)) * 3 for v in row] for row in values])
    assert torch.equal(_dense_index(torch.from_numpy(values), ids, scale=3), expected)
    assert torch.equal(_dense_index(torch.from_numpy(values), [], scale=3), torch.zeros(30, 40, dtype=torch.int64))


def test_hash_parameters_are_collision_free():
    rng = np.random.default_rng(0)
    for n in (1, 2, 40, 300):
        ids = rng.choice(1 << 24, n, replace=False).tolist()
        multiplier, bits = _hash_parameters(ids)
        assert len({((i * multiplier) >> (32 - bits)) & ((1 << bits) - 1) for i in ids}) == n
    assert _hash_parameters([1, 1 << 40]) is None


# ------------------------------------------------------------ plain reference and random pairs


def reference_image_stats(pred_map, pred_segments, gt_map, gt_segments):
    """panopticapi's pq_compute_single_core rules, one segment pair and one pixel at a time.

    Returns per-class dicts of tp, fp, fn, iou and counts of how often each rule decided something.
    Unlisted ids are void; a listed prediction without pixels is ignored; a class's crowd region is
    its last crowd segment in list order (panopticapi's `crowd_labels_dict[category_id] = gt_label`).
    """
    void = "void"
    gt_info = {s["id"]: s for s in gt_segments}
    pred_info = {s["id"]: s for s in pred_segments}
    gt_area = defaultdict(int)
    pred_area = defaultdict(int)
    pair_area = defaultdict(int)
    height, width = gt_map.shape
    for y in range(height):
        for x in range(width):
            g = int(gt_map[y, x]) if int(gt_map[y, x]) in gt_info else void
            p = int(pred_map[y, x]) if int(pred_map[y, x]) in pred_info else void
            if g != void:
                gt_area[g] += 1
            if p != void:
                pred_area[p] += 1
            pair_area[(g, p)] += 1

    per_class = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    events = defaultdict(int)
    gt_matched, pred_matched = set(), set()
    for (g, p), intersection in pair_area.items():
        if g == void or p == void:
            continue
        if gt_info[g].get("iscrowd", 0) == 1:
            continue
        if gt_info[g]["label_id"] != pred_info[p]["label_id"]:
            continue
        pred_on_void = pair_area.get((void, p), 0)
        union = pred_area[p] + gt_area[g] - intersection - pred_on_void
        iou = intersection / union
        if iou > 0.5:
            label = gt_info[g]["label_id"]
            per_class[label]["tp"] += 1
            per_class[label]["iou"] += iou
            gt_matched.add(g)
            pred_matched.add(p)
            events["match"] += 1
            if pred_on_void and intersection / (union + pred_on_void) <= 0.5:
                events["match only thanks to the void rule"] += 1

    crowd_labels_dict = {}
    for g, info in gt_info.items():
        if g in gt_matched:
            continue
        if info.get("iscrowd", 0) == 1:
            crowd_labels_dict[info["label_id"]] = g  # overwritten: the last crowd segment of the class wins
            continue
        per_class[info["label_id"]]["fn"] += 1

    for p, info in pred_info.items():
        if p in pred_matched or pred_area[p] == 0:
            continue
        on_void = pair_area.get((void, p), 0)
        crowd = crowd_labels_dict.get(info["label_id"])
        on_crowd = pair_area.get((crowd, p), 0) if crowd is not None else 0
        if (on_void + on_crowd) / pred_area[p] > 0.5:
            events["ignored: on void"] += on_crowd == 0
            events["ignored: on crowd"] += on_crowd > 0
            continue
        per_class[info["label_id"]]["fp"] += 1
    return per_class, events


def reference_scores(totals, num_classes, things):
    """panopticapi's pq_average (NaN where it would give 0 for absent classes or divide by zero)."""
    per_class = {}
    for c in range(num_classes):
        tp, fp, fn, iou = totals[c]["tp"], totals[c]["fp"], totals[c]["fn"], totals[c]["iou"]
        if tp + fp + fn == 0:
            per_class[c] = None
            continue
        per_class[c] = (iou / (tp + 0.5 * fp + 0.5 * fn), iou / tp if tp != 0 else 0, tp / (tp + 0.5 * fp + 0.5 * fn))
    groups = {}
    for name, members in (("All", range(num_classes)), ("Things", things),
                          ("Stuff", [c for c in range(num_classes) if c not in things])):
        rows = [per_class[c] for c in members if per_class[c] is not None]
        if not rows:
            groups[name] = {"PQ": math.nan, "SQ": math.nan, "RQ": math.nan, "n": 0}
            continue
        groups[name] = {"PQ": 100 * sum(r[0] for r in rows) / len(rows),
                        "SQ": 100 * sum(r[1] for r in rows) / len(rows),
                        "RQ": 100 * sum(r[2] for r in rows) / len(rows), "n": len(rows)}
    return groups, per_class


def random_panoptic_pair(rng, height=24, width=32, num_classes=6):
    """Random GT and prediction: rectangles of a few classes, some crowd, void areas, shifted and
    relabelled predictions, extra predicted blobs; ids are arbitrary, so that all three id mappings of
    the metric (lookup table, hash, binary search) are used."""
    base = int(rng.choice([1, 1000, 1 << 22, 1 << 40]))
    gt = np.zeros((height, width), dtype=np.int64)
    gt_segments = []
    ids = rng.choice(np.arange(base, base + 500), size=12, replace=False).tolist()
    for segment_id in ids[: rng.integers(1, 8)]:
        y0, x0 = rng.integers(0, height - 2), rng.integers(0, width - 2)
        gt[y0:y0 + rng.integers(2, height), x0:x0 + rng.integers(2, width)] = segment_id
        gt_segments.append({"id": segment_id, "label_id": int(rng.integers(num_classes)),
                            "iscrowd": int(rng.random() < 0.2)})
    for _ in range(rng.integers(0, 3)):  # void: id 0 or an unlisted id
        y0, x0 = rng.integers(0, height - 2), rng.integers(0, width - 2)
        gt[y0:y0 + rng.integers(2, 10), x0:x0 + rng.integers(2, 12)] = rng.choice([0, 777])

    pred = np.full((height, width), -1, dtype=np.int64)
    pred_segments = []
    for k, segment in enumerate(gt_segments):
        if rng.random() < 0.15:
            continue  # missed
        label = segment["label_id"] if rng.random() < 0.8 else int(rng.integers(num_classes))
        pred_id = 50_000 + k if rng.random() < 0.9 else (1 << 21) + k
        pred[gt == segment["id"]] = pred_id
        pred_segments.append({"id": pred_id, "label_id": label, "score": 0.5})
    pred = np.roll(pred, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    for k in range(rng.integers(0, 4)):  # extra predicted blobs
        y0, x0 = rng.integers(0, height - 2), rng.integers(0, width - 2)
        pred[y0:y0 + rng.integers(2, 12), x0:x0 + rng.integers(2, 14)] = 60_000 + k
        pred_segments.append({"id": 60_000 + k, "label_id": int(rng.integers(num_classes))})
    if rng.random() < 0.3:  # unpredicted area, or pixels of an unlisted predicted id
        y0, x0 = rng.integers(0, height - 2), rng.integers(0, width - 2)
        pred[y0:y0 + rng.integers(2, 8), x0:x0 + rng.integers(2, 8)] = rng.choice([-1, 123])
    rng.shuffle(pred_segments)
    return torch.from_numpy(pred), pred_segments, torch.from_numpy(gt), gt_segments


def test_identical_to_plain_reference_on_random_pairs():
    rng = np.random.default_rng(2024)
    num_classes, things = 6, [0, 1, 2]
    metric = PanopticMetric(num_classes, things)
    totals = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    all_events = defaultdict(int)
    for _ in range(300):
        pred, pred_segments, gt, gt_segments = random_panoptic_pair(rng, num_classes=num_classes)
        metric.update(pred, pred_segments, gt, gt_segments)
        image_stats, events = reference_image_stats(pred.numpy(), pred_segments, gt.numpy(), gt_segments)
        for c, values in image_stats.items():
            for key in values:
                totals[c][key] += values[key]
        for key, count in events.items():
            all_events[key] += count
        # running totals equal after every image
        assert metric.tp.tolist() == [totals[c]["tp"] for c in range(num_classes)]
        assert metric.fp.tolist() == [totals[c]["fp"] for c in range(num_classes)]
        assert metric.fn.tolist() == [totals[c]["fn"] for c in range(num_classes)]
        np.testing.assert_allclose(metric.iou_sum.numpy(), [totals[c]["iou"] for c in range(num_classes)],
                                   rtol=0, atol=1e-9)
    # every rule was exercised
    for key in ("match", "match only thanks to the void rule", "ignored: on void", "ignored: on crowd"):
        assert all_events[key] > 0, key
    assert sum(totals[c]["fp"] for c in totals) > 0 and sum(totals[c]["fn"] for c in totals) > 0

    groups, per_class = reference_scores(totals, num_classes, things)
    result = metric.compute()
    for name in ("All", "Things", "Stuff"):
        assert result[name]["n"] == groups[name]["n"]
        for key in ("PQ", "SQ", "RQ"):
            assert result[name][key] == pytest.approx(groups[name][key], abs=1e-9)
    for c in range(num_classes):
        for i, key in enumerate(("per_class_PQ", "per_class_SQ", "per_class_RQ")):
            assert result[key][c] == pytest.approx(100 * per_class[c][i], abs=1e-9)


def test_merge_state_dict_round_trip():
    rng = np.random.default_rng(3)
    pairs = [random_panoptic_pair(rng) for _ in range(10)]
    whole, first, second = (PanopticMetric(6, [0, 1]) for _ in range(3))
    for i, pair in enumerate(pairs):
        whole.update(*pair)
        (first if i % 2 else second).update(*pair)
    buffer = io.BytesIO()
    torch.save(second.state_dict(), buffer)
    buffer.seek(0)
    first.merge(torch.load(buffer))
    assert first.tp.tolist() == whole.tp.tolist() and first.fp.tolist() == whole.fp.tolist()
    assert first.fn.tolist() == whole.fn.tolist()
    np.testing.assert_allclose(first.iou_sum.numpy(), whole.iou_sum.numpy(), rtol=0, atol=1e-12)
    restored = PanopticMetric(6, [0, 1])
    restored.load_state_dict(whole.state_dict())
    np.testing.assert_equal(restored.compute(), whole.compute())  # NaN == NaN here
    with pytest.raises(ValueError):
        PanopticMetric(6, [0]).merge(whole)
    whole.reset()
    assert int(whole.tp.sum()) == 0 and float(whole.iou_sum.sum()) == 0.0
