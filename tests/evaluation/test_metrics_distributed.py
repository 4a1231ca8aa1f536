"""Two gloo processes, each updating with half of the images (and a padding sampler's repeats), then
`sync()`: the same results as one process with all images, for SemanticMetric, PanopticMetric and
InstanceMetric."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_metrics_instance import random_image
from test_metrics_panoptic import random_panoptic_pair

from eomt.evaluation.metrics import InstanceMetric, PanopticMetric, SemanticMetric

NUM_IMAGES = 12
WORLD = 2


def make_data():
    rng = np.random.default_rng(11)
    semantic = []
    for _ in range(NUM_IMAGES):
        target = rng.integers(0, 5, (20, 24))
        target[rng.random(target.shape) < 0.1] = 255
        pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape))
        pred[pred == 255] = 1
        semantic.append((torch.from_numpy(pred), torch.from_numpy(target)))
    panoptic = [random_panoptic_pair(rng) for _ in range(NUM_IMAGES)]
    instance = {100 + i: random_image(rng, 3, 64, 64) for i in range(NUM_IMAGES)}
    return semantic, panoptic, instance


def metrics():
    return SemanticMetric(5), PanopticMetric(6, [0, 1, 2]), InstanceMetric(3)


def results(semantic, panoptic, instance):
    return {"semantic": semantic.compute(), "confusion": semantic.confusion.clone(),
            "panoptic": panoptic.compute(),
            "pq_counts": [panoptic.tp.clone(), panoptic.fp.clone(), panoptic.fn.clone()],
            "iou_sum": panoptic.iou_sum.clone(), "instance": instance.compute(), "num_records": len(instance.records)}


def worker(rank, init_method, out_dir):
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD)
    try:
        semantic_data, panoptic_data, instance_data = make_data()
        semantic, panoptic, instance = metrics()
        for i in range(rank, NUM_IMAGES, WORLD):
            semantic.update(*semantic_data[i], image_id=i)
            panoptic.update(*panoptic_data[i], image_id=i)
        for image_id in list(instance_data)[rank::WORLD]:
            instance.update(image_id, *instance_data[image_id])
        # a padding sampler repeats images: rank 1 gets rank 0's first image, rank 0 its own again; each counts once
        repeat = 0
        semantic.update(*semantic_data[repeat], image_id=repeat)
        panoptic.update(*panoptic_data[repeat], image_id=repeat)
        if rank == 1:  # InstanceMetric refuses a local repeat; gathered records keep the first
            instance.update(100 + repeat, *instance_data[100 + repeat])
        for metric in (semantic, panoptic, instance):
            metric.sync()
            metric.sync()  # idempotent
        out = results(semantic, panoptic, instance)
        try:
            semantic.update(*semantic_data[0])
            out["update_after_sync"] = "allowed"
        except RuntimeError:
            out["update_after_sync"] = "refused"
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_sync_equals_single_process(tmp_path):
    init_method = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(worker, args=(init_method, str(tmp_path)), nprocs=WORLD, join=True)

    semantic_data, panoptic_data, instance_data = make_data()
    semantic, panoptic, instance = metrics()
    for i in range(NUM_IMAGES):
        semantic.update(*semantic_data[i])
        panoptic.update(*panoptic_data[i])
    for image_id, data in instance_data.items():
        instance.update(image_id, *data)
    single = results(semantic, panoptic, instance)
    assert single["panoptic"]["All"]["n"] > 0 and 0 < single["instance"]["AP"] < 100

    for rank in range(WORLD):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert out["update_after_sync"] == "refused"
        assert torch.equal(out["confusion"], single["confusion"])
        np.testing.assert_equal(out["semantic"], single["semantic"])
        for ours, expected in zip(out["pq_counts"], single["pq_counts"], strict=True):
            assert torch.equal(ours, expected)
        torch.testing.assert_close(out["iou_sum"], single["iou_sum"], rtol=0, atol=1e-12)
        for group in ("All", "Things", "Stuff"):
            for key in ("PQ", "SQ", "RQ", "n"):
                expected = single["panoptic"][group][key]
                assert out["panoptic"][group][key] == pytest.approx(expected, abs=1e-9, nan_ok=True)
        assert out["num_records"] == NUM_IMAGES
        np.testing.assert_equal(out["instance"], single["instance"])


def test_an_image_given_twice_in_one_process_counts_once():
    semantic_data, panoptic_data, _ = make_data()
    once, twice = metrics()[:2], metrics()[:2]
    for metric_once, metric_twice, data in ((once[0], twice[0], semantic_data), (once[1], twice[1], panoptic_data)):
        for i in (0, 1):
            metric_once.update(*data[i], image_id=i)
        for i in (0, 1, 0):
            metric_twice.update(*data[i], image_id=i)
        np.testing.assert_equal(metric_twice.compute(), metric_once.compute())
    without_ids = SemanticMetric(5)
    for i in (0, 1, 0):
        without_ids.update(*semantic_data[i])
    assert not torch.equal(without_ids.confusion, once[0].confusion)  # no id: every update counts
