"""Any input size that is a multiple of the patch size, without retraining."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from eomt import EomtConfig, EomtForUniversalSegmentation


def _tiny(**overrides) -> EomtConfig:
    values = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2, num_queries=6,
                  image_size=64, num_labels=4)
    values.update(overrides)
    return EomtConfig(**values)


def _model(config: EomtConfig) -> EomtForUniversalSegmentation:
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(config).eval()
    model.attn_mask_probs.zero_()
    return model


def test_model_built_for_one_size_runs_at_another_like_a_model_built_for_it():
    """64x64 model at 48x80 == a model built for 48x80 whose embeddings were resized bicubically."""
    square = _model(_tiny())
    wide = EomtForUniversalSegmentation(dataclasses.replace(square.config, image_size=(48, 80))).eval()
    state = square.state_dict()
    pos = state["embeddings.position_embeddings.weight"].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(3, 5), mode="bicubic", align_corners=False, antialias=True)
    state["embeddings.position_embeddings.weight"] = pos.permute(0, 2, 3, 1).reshape(15, 32)
    wide.load_state_dict(state)
    pixels = torch.randn(2, 3, 48, 80)
    with torch.inference_mode():
        a, b = square(pixels), wide(pixels)
        again = square(pixels)  # served from the cache
    assert a.masks_queries_logits.shape == (2, 6, 12, 20)
    torch.testing.assert_close(a.masks_queries_logits, b.masks_queries_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.class_queries_logits, b.class_queries_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(again.masks_queries_logits, a.masks_queries_logits, atol=0, rtol=0)


def test_cached_resized_embeddings_follow_weight_updates():
    model = _model(_tiny())
    pixels = torch.randn(1, 3, 48, 80)
    with torch.inference_mode():
        before = model(pixels).class_queries_logits
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.mul_(3.0)
    with torch.inference_mode():
        after = model(pixels).class_queries_logits
    assert (before - after).abs().max() > 1e-3


def test_training_at_another_size_sends_gradients_to_position_embeddings():
    model = _model(_tiny())
    model.train()
    model(torch.randn(1, 3, 48, 80)).masks_queries_logits.sum().backward()
    assert model.embeddings.position_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(32, 96), (80, 48), (16, 16)])
def test_dinov3_runs_at_any_multiple_of_the_patch(size):
    model = _model(_tiny(model_type="eomt_dinov3", hidden_size=64, num_attention_heads=4, intermediate_size=64))
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    assert out.masks_queries_logits.shape == (1, 6, size[0] // 4, size[1] // 4)


def test_eval_fast_path_computes_no_intermediate_prediction():
    model = _model(_tiny())
    calls = []
    model.mask_head.register_forward_hook(lambda *args: calls.append(1))
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 64))
    assert len(calls) == 1  # the final prediction only
    model.attn_mask_probs[1] = 0.5
    calls.clear()
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 64))
    assert len(calls) == 2  # one masked block in eval mode: its intermediate prediction + final


@pytest.mark.parametrize(
    "shape, message",
    [((1, 4, 64, 64), "4 channels, the model expects 3"),
     ((1, 3, 64, 60), "64x60 is not a multiple of the patch size 16"),
     ((3, 64, 64), "must be (batch, channels, height, width)")],
)
def test_bad_input_is_a_one_line_error(shape, message):
    model = _model(_tiny())
    with pytest.raises(ValueError) as err:
        model(torch.randn(*shape))
    assert message in str(err.value) and "\n" not in str(err.value)
