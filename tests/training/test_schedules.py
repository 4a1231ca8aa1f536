"""The recipe's schedules against the reference numbers."""

from __future__ import annotations

import pytest
import torch

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.training.schedules import (
    WarmupPoly,
    annealing_probabilities,
    annealing_windows,
    param_groups,
    set_learning_rates,
)

COCO_L_STARTS = [14782, 29564, 44346, 59128]
COCO_L_ENDS = [29564, 44346, 59128, 73910]


@pytest.mark.parametrize("step, expected", [
    (0, [1.0, 1.0, 1.0, 1.0]),
    (14782, [1.0, 1.0, 1.0, 1.0]),
    (22173, [0.5 ** 0.9, 1.0, 1.0, 1.0]),  # half-way through block 0's window
    (29564, [0.0, 1.0, 1.0, 1.0]),
    (51737, [0.0, 0.0, 0.5 ** 0.9, 1.0]),
    (73910, [0.0, 0.0, 0.0, 0.0]),
    (88000, [0.0, 0.0, 0.0, 0.0]),
])
def test_annealing_follows_the_reference_schedule(step, expected):
    assert annealing_probabilities(step, COCO_L_STARTS, COCO_L_ENDS) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("blocks, starts, ends", [
    (4, COCO_L_STARTS, COCO_L_ENDS),
    (3, [14782, 36955, 59128], [29564, 51737, 73910]),
    (5, [14782, 25869, 36955, 48042, 59128], [29564, 40651, 51737, 62824, 73910]),
])
def test_fraction_windows_reproduce_the_coco_iterations(blocks, starts, ends):
    """COCO: 118287 images / 16 = 7393 iterations per epoch, 12 epochs = 88716 (the table's T ~ 88692)."""
    got_starts, got_ends = annealing_windows(88692, blocks)
    assert got_starts == pytest.approx(starts, abs=2) and got_ends == pytest.approx(ends, abs=2)


def _model() -> EomtForUniversalSegmentation:
    return EomtForUniversalSegmentation(EomtConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                                   num_blocks=2, num_queries=5, image_size=32, num_labels=3))


def _lrs(optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}


def test_learning_rates_follow_decay_warmup_and_poly():
    model = _model()
    optimizer = torch.optim.AdamW(param_groups(model, 0.05, 0.8), lr=1e-4)
    schedule = WarmupPoly(total_steps=10_000, warmup=500, backbone_warmup=1000)
    set_learning_rates(optimizer, 1e-4, schedule, 0)
    lrs = _lrs(optimizer)
    assert lrs["head"] == pytest.approx(1e-4 / 500) and lrs["block3"] == 0.0  # backbone frozen in stage 1
    set_learning_rates(optimizer, 1e-4, schedule, 499)
    assert _lrs(optimizer)["head"] == pytest.approx(1e-4) and _lrs(optimizer)["block0"] == 0.0
    set_learning_rates(optimizer, 1e-4, schedule, 1000)  # half-way through the backbone warmup
    lrs = _lrs(optimizer)
    head_poly = (1 - 500 / 9500) ** 0.9
    assert lrs["head"] == pytest.approx(1e-4 * head_poly)
    assert lrs["block3"] == pytest.approx(1e-4 * 501 / 1000)
    assert lrs["block0"] == pytest.approx(1e-4 * 0.8 ** 3 * 501 / 1000)  # embeddings + block 0: 0.8^(depth-1)
    set_learning_rates(optimizer, 1e-4, schedule, 6000)
    lrs = _lrs(optimizer)
    backbone_poly = (1 - (6000 - 1500) / (10_000 - 1500)) ** 0.9
    assert lrs["block2"] == pytest.approx(1e-4 * 0.8 * backbone_poly)
    assert lrs["head"] == pytest.approx(1e-4 * (1 - 5500 / 9500) ** 0.9)
    set_learning_rates(optimizer, 1e-4, schedule, 10_000)
    assert all(lr == 0.0 for lr in _lrs(optimizer).values())


def test_groups_place_every_parameter_once_with_the_right_decay():
    model = _model()
    groups = param_groups(model, 0.05, 0.8)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["embeddings.patch_embeddings.projection.weight"]["lr_scale"] == pytest.approx(0.8 ** 3)
    assert by_name["layers.3.mlp.fc1.weight"]["lr_scale"] == 1.0 and by_name["layers.3.mlp.fc1.weight"]["backbone"]
    assert by_name["layernorm.weight"]["lr_scale"] == 1.0 and not by_name["layernorm.weight"]["backbone"]
    assert not by_name["query.weight"]["backbone"] and by_name["query.weight"]["weight_decay"] == 0.0
    assert by_name["layers.0.norm1.bias"]["weight_decay"] == 0.0
    assert by_name["mask_head.fc1.weight"]["weight_decay"] == 0.05


def test_freezing_the_backbone_trains_only_the_new_parts():
    model = _model()
    groups = param_groups(model, 0.05, 0.8, freeze_backbone=True)
    assert all(not g["backbone"] for g in groups)
    assert not model.layers[0].mlp.fc1.weight.requires_grad and model.mask_head.fc1.weight.requires_grad
