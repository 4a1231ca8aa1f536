"""Our network against transformers' EoMT on the same random weights."""

from __future__ import annotations

import pytest
import torch
from helpers import make_reference, random_targets, save_reference

from eomt import EomtForUniversalSegmentation

CONFIGS = {
    "tiny": ("eomt", dict()),
    "s_like": ("eomt", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, num_blocks=3,
                            num_queries=20, image_size=96)),
    "swiglu": ("eomt", dict(hidden_size=48, num_attention_heads=3, use_swiglu_ffn=True)),
    "registers_0": ("eomt", dict(num_register_tokens=0)),
    "registers_1": ("eomt", dict(num_register_tokens=1, num_blocks=3)),
    "dinov3": ("eomt_dinov3", dict(hidden_size=64, num_attention_heads=4)),
    "dinov3_gated": ("eomt_dinov3", dict(hidden_size=64, num_attention_heads=4, use_gated_mlp=True,
                                         key_bias=True)),
}
CONFIGS.update({f"num_blocks_{n}": ("eomt", dict(num_hidden_layers=5, num_blocks=n)) for n in range(1, 6)})


def _pair(tmp_path, name: str, probs: float):
    kind, overrides = CONFIGS[name]
    ref = make_reference(kind, **overrides)
    ours = EomtForUniversalSegmentation.from_pretrained(save_reference(ref, tmp_path / name, probs=probs))
    ours.attn_mask_probs.fill_(probs)  # a file's probabilities are loaded as they are
    return ref, ours


def _assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_eval_outputs_match(tmp_path, name):
    ref, ours = _pair(tmp_path, name, probs=0.0)
    size = ref.config.image_size
    pixels = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        expected = ref(pixel_values=pixels, output_hidden_states=True)
        got = ours(pixels, output_hidden_states=True)
    _assert_close(got.class_queries_logits, expected.class_queries_logits)
    _assert_close(got.masks_queries_logits, expected.masks_queries_logits)
    _assert_close(got.last_hidden_state, expected.last_hidden_state)
    assert len(got.hidden_states) == len(expected.hidden_states) == ref.config.num_hidden_layers + 1
    for a, b in zip(got.hidden_states, expected.hidden_states, strict=True):
        _assert_close(a, b)
    assert got.masks_queries_logits.shape[-2:] == (size // 4, size // 4)


@pytest.mark.parametrize("name", ["tiny", "swiglu", "registers_0", "dinov3", "num_blocks_1", "num_blocks_5"])
@pytest.mark.parametrize("probs", [1.0, 0.5])
def test_training_mode_masked_attention_matches(tmp_path, name, probs):
    """Training mode: intermediate predictions and masked attention (probs 1: fully masked;
    0.5: queries lifted at random, same draws on both sides from the same seed)."""
    ref, ours = _pair(tmp_path, name, probs=probs)
    ref.train(), ours.train()
    size = ref.config.image_size
    pixels = torch.randn(2, 3, size, size)
    torch.manual_seed(7)
    expected = ref(pixel_values=pixels)
    torch.manual_seed(7)
    got = ours(pixels)
    _assert_close(got.class_queries_logits, expected.class_queries_logits)
    _assert_close(got.masks_queries_logits, expected.masks_queries_logits)
    assert len(got.predictions_per_level) == ref.config.num_blocks + 1


@pytest.mark.parametrize("name", ["tiny", "swiglu", "dinov3", "num_blocks_3"])
def test_loss_matches_with_same_sampled_points(tmp_path, name):
    """Both losses draw their random points in the same order, so one seed gives both the same points."""
    ref, ours = _pair(tmp_path, name, probs=1.0)
    ref.train(), ours.train()
    size = ref.config.image_size
    pixels = torch.randn(2, 3, size, size)
    masks, classes = random_targets(2, size, size, ref.config.num_labels)
    torch.manual_seed(11)
    expected = ref(pixel_values=pixels, mask_labels=masks, class_labels=classes).loss
    torch.manual_seed(11)
    got = ours(pixels, mask_labels=masks, class_labels=classes)
    assert abs(got.loss.item() - expected.item()) <= 1e-4, (got.loss.item(), expected.item())
    assert abs(sum(v.item() for v in got.loss_dict.values()) - got.loss.item()) <= 1e-4


def test_loss_gradients_reach_every_trainable_parameter(tmp_path):
    ref, ours = _pair(tmp_path, "tiny", probs=1.0)
    ours.train()
    masks, classes = random_targets(2, 64, 64, ref.config.num_labels)
    ours(torch.randn(2, 3, 64, 64), mask_labels=masks, class_labels=classes).loss.backward()
    no_grad = [n for n, p in ours.named_parameters() if p.grad is None]
    assert no_grad == []
