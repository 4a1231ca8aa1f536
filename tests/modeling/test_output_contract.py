"""The forward contract of transformers' EoMT: tuples, ModelOutput access, hidden states, attentions, kwargs.

Ported from transformers' tests/models/eomt/test_modeling_eomt.py and
tests/models/eomt_dinov3/test_modeling_eomt_dinov3.py (attention and hidden-state outputs through
arguments and config, return_dict=False, labels, training, initialisation), and compared with
transformers' model on the same weights where both run.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_reference, random_targets, save_reference

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.modeling import vit

BACKBONES = {
    "dinov2": ("eomt", dict()),
    "dinov3": ("eomt_dinov3", dict(hidden_size=64, num_attention_heads=4)),
}
# The model tester of transformers' EoMT tests: 20x20 patches, 19 registers, one query block.
TESTER = dict(image_size=40, patch_size=2, num_queries=5, num_register_tokens=19, num_labels=4, hidden_size=8,
              num_attention_heads=2, num_hidden_layers=4, num_blocks=1)


def _pair(tmp_path, backbone: str, probs: float = 0.0):
    kind, overrides = BACKBONES[backbone]
    ref = make_reference(kind, **overrides)
    ref.set_attn_implementation("eager")  # transformers returns attention weights only from eager attention
    ours = EomtForUniversalSegmentation.from_pretrained(save_reference(ref, tmp_path / backbone, probs=probs))
    ours.attn_mask_probs.fill_(probs)
    return ref, ours


def _max_diff(a, b) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_attentions_equal_transformers_eager_weights(tmp_path, backbone):
    ref, ours = _pair(tmp_path, backbone)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
        got = ours(pixels, output_attentions=True, output_hidden_states=True)
    assert len(got.attentions) == len(expected.attentions) == ref.config.num_hidden_layers
    for a, b in zip(got.attentions, expected.attentions, strict=True):
        assert _max_diff(a, b) <= 1e-5
    for a, b in zip(got.hidden_states, expected.hidden_states, strict=True):
        assert _max_diff(a, b) <= 1e-4
    # the explicit softmax gives the same logits as the SDPA path
    with torch.no_grad():
        fast = ours(pixels)
    assert _max_diff(fast.masks_queries_logits, got.masks_queries_logits) <= 1e-4


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_masked_attention_weights_equal_transformers_in_training(tmp_path, backbone):
    """Training mode with masked attention (probabilities 1): masked entries are 0 in both."""
    ref, ours = _pair(tmp_path, backbone, probs=1.0)
    ref.train(), ours.train()
    pixels = torch.randn(2, 3, 64, 64)
    torch.manual_seed(3)
    expected = ref(pixel_values=pixels, output_attentions=True)
    torch.manual_seed(3)
    got = ours(pixels, output_attentions=True)
    masked = expected.attentions[-1] == 0
    assert masked.any()
    for a, b in zip(got.attentions, expected.attentions, strict=True):
        assert _max_diff(a, b) <= 1e-5
    assert bool((got.attentions[-1][masked] == 0).all())


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_return_dict_false_is_transformers_tuple(tmp_path, backbone):
    ref, ours = _pair(tmp_path, backbone, probs=1.0)
    pixels = torch.randn(2, 3, 64, 64)
    masks, classes = random_targets(2, 64, 64, ref.config.num_labels)
    flags = dict(output_attentions=True, output_hidden_states=True, return_dict=False)
    ref.train(), ours.train()
    torch.manual_seed(5)
    expected = ref(pixel_values=pixels, mask_labels=masks, class_labels=classes, **flags)
    torch.manual_seed(5)
    got = ours(pixels, mask_labels=masks, class_labels=classes, **flags)
    assert type(got) is tuple and len(got) == len(expected) == 6  # loss, class, masks, last, hidden, attentions
    assert abs(got[0].item() - expected[0].item()) <= 1e-4
    for a, b in zip(got[1:4], expected[1:4], strict=True):
        assert _max_diff(a, b) <= 1e-4
    for position in (4, 5):
        assert len(got[position]) == len(expected[position])
        for a, b in zip(got[position], expected[position], strict=True):
            assert _max_diff(a, b) <= 1e-4


def test_output_reads_like_a_model_output(tmp_path):
    ref, ours = _pair(tmp_path, "dinov2")
    pixels = torch.randn(1, 3, 64, 64)
    offsets = [torch.tensor([0, 0, 64])]
    with torch.no_grad():
        expected = ref(pixel_values=pixels, patch_offsets=offsets)
        got = ours(pixels, patch_offsets=offsets)
    assert list(got.keys()) == list(expected.keys()) == [
        "class_queries_logits", "masks_queries_logits", "last_hidden_state", "patch_offsets"]
    assert len(got) == len(expected) == 4 and list(got) == list(expected)
    assert got[0] is got.class_queries_logits and got["masks_queries_logits"] is got[1]
    assert got[-1] is offsets and got[1:3] == got.to_tuple()[1:3]
    assert "hidden_states" not in got and "loss" not in got
    assert dict(got.items()).keys() == set(expected.keys())
    with pytest.raises(KeyError):
        got["hidden_states"]  # noqa: B018 - unset fields are not keys, as in transformers
    assert got.get("hidden_states") is None and got.hidden_states is None


@pytest.mark.parametrize("flag", ["output_hidden_states", "output_attentions", "return_dict"])
def test_config_attributes_set_the_defaults_and_arguments_win(flag):
    model = EomtForUniversalSegmentation(EomtConfig(**{**TESTER, "num_blocks": 2})).eval()
    pixels = torch.randn(1, 3, 40, 40)
    value = flag != "return_dict"  # the non-default value
    with torch.no_grad():
        default = model(pixels)
        setattr(model.config, flag, value)
        from_config = model(pixels)
        overridden = model(pixels, **{flag: not value})
    if flag == "return_dict":
        assert type(from_config) is tuple and len(from_config) == 3 and not isinstance(overridden, tuple)
        assert not isinstance(default, tuple)
    else:
        name = flag.removeprefix("output_")
        assert getattr(default, name) is None and getattr(overridden, name) is None
        assert len(getattr(from_config, name)) == 4 + (name == "hidden_states")


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_hidden_state_and_attention_shapes_of_the_transformers_tester(kind):
    """transformers' test_attention_outputs / test_hidden_states_output with its model tester's config."""
    model = EomtForUniversalSegmentation(EomtConfig(**TESTER, model_type=kind)).eval()
    pixels = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        only_attentions = model(pixels, output_attentions=True)
        both = model(pixels, output_attentions=True, output_hidden_states=True)
    patches_and_prefix = 400 + 1 + 19
    assert len(both) == len(only_attentions) + 1
    assert len(both.hidden_states) == 5 and len(both.attentions) == 4
    for layer, weights in enumerate(both.attentions):
        tokens = patches_and_prefix + (5 if layer == 3 else 0)  # queries join the last block
        assert weights.shape == (2, 2, tokens, tokens)
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    assert both.hidden_states[0].shape == (2, patches_and_prefix, 8)
    assert both.hidden_states[-1].shape == (2, patches_and_prefix + 5, 8)
    assert torch.equal(both.hidden_states[-1], both.last_hidden_state)


def test_attention_weights_are_computed_only_when_asked(monkeypatch):
    """The default path runs SDPA: the explicit softmax is never called unless attentions are asked for."""
    model = EomtForUniversalSegmentation(EomtConfig(**TESTER)).eval()
    calls = []
    original = vit.explicit_attention
    monkeypatch.setattr(vit, "explicit_attention", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        model(torch.randn(1, 3, 40, 40), output_hidden_states=True)
        assert calls == []
        model(torch.randn(1, 3, 40, 40), output_attentions=True)
    assert len(calls) == TESTER["num_hidden_layers"]


def test_forward_rejects_unknown_keywords_and_accepts_the_seeds():
    model = EomtForUniversalSegmentation(EomtConfig(**TESTER)).eval()
    pixels = torch.randn(1, 3, 40, 40)
    with pytest.raises(TypeError, match="'ouptut_attentions', 'pixel_mask'"):
        model(pixels, ouptut_attentions=True, pixel_mask=None)
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=None)
    with torch.no_grad():  # TransformersKwargs that mean nothing for this model are accepted, as in transformers
        out = model(pixel_values=pixels, num_items_in_batch=torch.tensor(2), output_router_logits=False)
    assert out.class_queries_logits.shape == (1, 5, 5)


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_labels_as_batched_tensors_give_a_loss_and_gradients(kind):
    """transformers' test_model_with_labels and test_training: labels may be stacked tensors."""
    model = EomtForUniversalSegmentation(EomtConfig(**TESTER, model_type=kind, train_num_points=200)).train()
    inputs = {
        "pixel_values": torch.randn(2, 3, 40, 40),
        "mask_labels": (torch.rand(2, 4, 40, 40) > 0.5).float(),
        "class_labels": (torch.rand(2, 4) > 0.5).long(),
    }
    outputs = model(**inputs, output_hidden_states=True, output_attentions=True)
    outputs.hidden_states[0].retain_grad()
    outputs.attentions[0].retain_grad()
    outputs.loss.backward()
    assert outputs.hidden_states[0].grad is not None and outputs.attentions[0].grad is not None


def test_gradient_checkpointing_with_attentions_keeps_outputs_and_gradients():
    config = EomtConfig(**{**TESTER, "num_blocks": 2})
    plain = EomtForUniversalSegmentation(config).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing = True
    pixels = torch.randn(1, 3, 40, 40)
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(0)
        out = model(pixels, output_attentions=True)
        out.masks_queries_logits.sum().backward()
        results.append((out.attentions, model.query.weight.grad))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_initialization_with_zeroed_ranges(kind):
    """transformers' test_initialization: with every *_range ~ 0, norms/scales/tokens are exactly 0 or 1
    and every other parameter has a mean in [-1, 1]."""
    config = EomtConfig(**TESTER, model_type=kind, initializer_range=1e-10)
    exact = ("layernorm.", "norm1.", "norm2.", "layer_scale1.lambda1", "layer_scale2.lambda1", "register_tokens",
             "cls_token")
    for name, param in EomtForUniversalSegmentation(config).named_parameters():
        mean = ((param.data.mean() * 1e9).round() / 1e9).item()
        if any(part in name for part in exact):
            assert mean in (0.0, 1.0), name
        else:
            assert -1.0 <= mean <= 1.0, name
