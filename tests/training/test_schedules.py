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
    """Default: the authors' policy, AdamW weight decay on every parameter (norms, biases, tokens, queries)."""
    model = _model()
    groups = param_groups(model, 0.05, 0.8)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["embeddings.patch_embeddings.projection.weight"]["lr_scale"] == pytest.approx(0.8 ** 3)
    assert by_name["layers.3.mlp.fc1.weight"]["lr_scale"] == 1.0 and by_name["layers.3.mlp.fc1.weight"]["backbone"]
    assert not by_name["query.weight"]["backbone"]
    assert all(g["weight_decay"] == 0.05 for g in groups)
    for name in ("query.weight", "layers.0.norm1.bias", "embeddings.cls_token", "embeddings.register_tokens",
                 "embeddings.position_embeddings.weight", "layers.1.layer_scale1.lambda1", "layernorm.weight",
                 "mask_head.fc1.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name


def test_matrices_policy_exempts_norms_biases_tokens_and_queries():
    by_name = {n: g for g in param_groups(_model(), 0.05, 0.8, weight_decay_policy="matrices") for n in g["names"]}
    for name in ("query.weight", "layers.0.norm1.bias", "embeddings.cls_token", "embeddings.position_embeddings.weight",
                 "layers.1.layer_scale1.lambda1", "layernorm.weight", "mask_head.fc1.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert by_name["mask_head.fc1.weight"]["weight_decay"] == 0.05
    assert by_name["layers.2.attention.q_proj.weight"]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="weight_decay_policy"):
        param_groups(_model(), 0.05, 0.8, weight_decay_policy="none")


def test_final_norm_follows_the_backbone_schedule_at_full_lr():
    """The authors put the final LayerNorm in the backbone groups (lr 0 during the first warmup) at scale 1."""
    model = _model()
    optimizer = torch.optim.AdamW(param_groups(model, 0.05, 0.8), lr=1e-4)
    by_name = {n: g for g in optimizer.param_groups for n in g["names"]}
    assert by_name["layernorm.weight"]["backbone"] and by_name["layernorm.weight"]["lr_scale"] == 1.0
    schedule = WarmupPoly(total_steps=10_000, warmup=500, backbone_warmup=1000)
    set_learning_rates(optimizer, 1e-4, schedule, 100)
    assert by_name["layernorm.weight"]["lr"] == 0.0 and by_name["query.weight"]["lr"] > 0
    set_learning_rates(optimizer, 1e-4, schedule, 1000)
    assert by_name["layernorm.weight"]["lr"] == pytest.approx(1e-4 * 501 / 1000)


def _authors_lrs(model, lr: float, llrd: float, llrd_l2_enabled: bool) -> dict[str, float]:
    """The authors' configure_optimizers rule, restated on our parameter names: walk the parameters in reverse,
    a backbone block i gets lr * llrd ** (depth - 1 - i), the embeddings the rate of block 0, the final norm lr,
    and, with llrd_l2_enabled False, the last num_blocks blocks lr."""
    depth, num_blocks = model.config.num_hidden_layers, model.config.num_blocks
    lrs, block_i = {}, depth
    for name, _ in reversed(list(model.named_parameters())):
        if not name.startswith(("embeddings.", "layers.", "layernorm.")):
            continue
        value = lr
        is_block = name.startswith("layers.")
        if is_block:
            block_i = int(name.split(".")[1])
        if is_block or block_i == 0:
            value *= llrd ** (depth - 1 - block_i)
        if name.startswith("layernorm."):
            value = lr
        if is_block and block_i >= depth - num_blocks and not llrd_l2_enabled:
            value = lr
        lrs[name] = value
    return lrs


@pytest.mark.parametrize("llrd_l2", [True, False])
def test_layer_decay_equals_the_authors_rule(llrd_l2):
    model = _model()
    groups = param_groups(model, 0.05, 0.8, llrd_l2=llrd_l2)
    ours = {n: 1e-4 * g["lr_scale"] for g in groups for n in g["names"] if g["backbone"]}
    assert ours == pytest.approx(_authors_lrs(model, 1e-4, 0.8, llrd_l2))
    scale_of_block = {int(n.split(".")[1]): s for n, s in ((n, g["lr_scale"]) for g in groups for n in g["names"])
                      if n.startswith("layers.")}
    # depth 4, 2 query blocks: blocks 2 and 3 carry queries
    assert scale_of_block[2] == pytest.approx(1.0 if not llrd_l2 else 0.8)
    assert scale_of_block[1] == pytest.approx(0.8 ** 2)


def test_freezing_the_backbone_trains_only_the_new_parts():
    model = _model()
    groups = param_groups(model, 0.05, 0.8, freeze_backbone=True)
    assert all(not g["backbone"] for g in groups)
    assert not model.layers[0].mlp.fc1.weight.requires_grad and model.mask_head.fc1.weight.requires_grad
