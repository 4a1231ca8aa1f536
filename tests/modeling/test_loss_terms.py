"""The set loss's pieces on cases whose answer is known, and its distributed normalisation."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from eomt import EomtConfig
from eomt.modeling.loss import EomtLoss, HungarianMatcher, pairwise_bce, pairwise_dice


def test_pairwise_costs_equal_elementwise_definitions():
    logits, targets = torch.randn(4, 50), (torch.rand(3, 50) > 0.5).float()
    bce = pairwise_bce(logits, targets)
    dice = pairwise_dice(logits, targets)
    for i in range(4):
        for j in range(3):
            expected_bce = F.binary_cross_entropy_with_logits(logits[i], targets[j])
            p = logits[i].sigmoid()
            expected_dice = 1 - (2 * (p * targets[j]).sum() + 1) / (p.sum() + targets[j].sum() + 1)
            torch.testing.assert_close(bce[i, j], expected_bce)
            torch.testing.assert_close(dice[i, j], expected_dice)


def test_matcher_finds_the_obvious_assignment():
    """Query 2 predicts target 0's mask and class, query 0 target 1's: that is the matching."""
    masks = torch.zeros(2, 16, 16)
    masks[0, :8], masks[1, 8:] = 1, 1
    logits = torch.full((1, 4, 16, 16), -10.0)
    logits[0, 2] = masks[0] * 20 - 10
    logits[0, 0] = masks[1] * 20 - 10
    classes = torch.full((1, 4, 4), -5.0)
    classes[0, 2, 1] = classes[0, 0, 3] = 5.0
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=500)
    (rows, cols), = matcher(logits, classes, [masks], [torch.tensor([1, 3])])
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 2: 0}


def test_right_prediction_costs_far_less_than_a_wrong_one():
    """Right mask + class vs the inverted mask / swapped classes. (Importance sampling puts most points on
    the mask border, where bilinear sampling blurs both sides, so even a perfect mask keeps some BCE.)"""
    config = EomtConfig(num_labels=3, train_num_points=400)
    criterion = EomtLoss(config)
    masks = torch.zeros(1, 32, 32)
    masks[0, 4:20, 4:20] = 1
    right = (masks * 40 - 20)[None].repeat(1, 2, 1, 1)
    right[0, 1] = -20
    classes = torch.tensor([[[20.0, -20, -20, -20], [-20, -20, -20, 20.0]]])
    torch.manual_seed(0)
    _, good = criterion([right], [classes], [masks], [torch.tensor([0])])
    inverted = right.clone()
    inverted[0, 0] = -inverted[0, 0]
    torch.manual_seed(0)
    _, bad_mask = criterion([inverted], [classes], [masks], [torch.tensor([0])])
    swapped = torch.tensor([[[-20.0, -20, -20, 20], [20.0, -20, -20, -20]]])
    torch.manual_seed(0)
    _, bad_class = criterion([right], [swapped], [masks], [torch.tensor([0])])
    assert good["loss_cross_entropy"] < 1e-3 < 10 < bad_class["loss_cross_entropy"]
    assert good["loss_mask"] * 10 < bad_mask["loss_mask"]
    assert good["loss_dice"] * 5 < bad_mask["loss_dice"]


def _num_masks_worker(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        labels = [torch.zeros(1 if rank == 0 else 3, dtype=torch.long)]  # 1 and 3 masks: average 2
        results[rank] = EomtLoss.num_masks(labels, torch.device("cpu")).item()
    finally:
        dist.destroy_process_group()


def test_number_of_masks_is_averaged_across_processes(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_num_masks_worker, args=(2, os.path.join(tmp_path, "init"), results), nprocs=2, join=True)
    assert dict(results) == {0: 2.0, 1: 2.0}
    assert EomtLoss.num_masks([torch.zeros(0, dtype=torch.long)], torch.device("cpu")).item() == 1.0
