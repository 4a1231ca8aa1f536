"""The eval forward is traceable: no host sync, no size-dependent branch, one graph for every size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.modeling.embeddings import (
    bicubic_aa_matrix,
    resample_position_embeddings,
    resample_position_embeddings_traceable,
)


def _model(kind: str = "eomt", probs: float = 0.0) -> EomtForUniversalSegmentation:
    extra = {"intermediate_size": 64} if kind == "eomt_dinov3" else {}
    config = EomtConfig(model_type=kind, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2,
                        num_queries=6, image_size=64, num_labels=4, **extra)
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(config).eval()
    model.attn_mask_probs.fill_(probs)
    return model


class _Logits(torch.nn.Module):
    def __init__(self, model: EomtForUniversalSegmentation) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values, return_dict=True)
        return out.class_queries_logits, out.masks_queries_logits


def test_interpolation_matrix_equals_torch_antialiased_bicubic_up_and_down():
    worst = 0.0
    for n in range(2, 30):
        for m in (1, 2, 3, n - 1, n, n + 1, 2 * n, 3 * n + 1, 50):
            if m < 1:
                continue
            # each column of the identity, resized along H (W kept at 3 columns)
            eye = torch.eye(n).reshape(n, 1, n, 1).expand(n, 1, n, 3)
            ref = F.interpolate(eye, size=(m, 3), mode="bicubic", align_corners=False, antialias=True)
            worst = max(worst, (bicubic_aa_matrix(n, m) - ref[..., 0].reshape(n, m).T).abs().max().item())
    assert worst < 1e-6


@pytest.mark.parametrize("new_grid", [(4, 4), (3, 5), (9, 2), (1, 1), (20, 13)])
def test_traceable_resample_equals_interpolate_and_is_identity_at_the_native_grid(new_grid):
    weight = torch.randn(16, 8)
    expected = weight if new_grid == (4, 4) else resample_position_embeddings(weight, (4, 4), new_grid)
    assert torch.allclose(resample_position_embeddings_traceable(weight, (4, 4), new_grid), expected, atol=2e-6)


def test_eval_forward_reads_the_probabilities_once_not_per_call(monkeypatch):
    model = _model()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model(pixels)
    calls = []
    for name in ("tolist", "item", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: calls.append(_n) or _o(self, *a))
    with torch.inference_mode():
        model(pixels)
        model(torch.randn(2, 3, 48, 80))
    assert calls == []


def test_an_in_place_change_of_the_probabilities_takes_effect_at_the_next_forward():
    pixels = torch.randn(1, 3, 64, 64)
    model = _model(probs=0.0)
    masked, unmasked = _model(probs=1.0), _model(probs=0.0)
    with torch.inference_mode():
        plain = model(pixels).masks_queries_logits
        model.attn_mask_probs.fill_(1.0)  # as the trainer and users do
        after_fill = model(pixels).masks_queries_logits
        model.attn_mask_probs[1] = 0.0
        after_index = model(pixels).masks_queries_logits
        model.load_state_dict(unmasked.state_dict())
        after_load = model(pixels).masks_queries_logits
        expected_masked = masked(pixels).masks_queries_logits
        half = _model(probs=1.0)
        half.attn_mask_probs[1] = 0.0
        expected_half = _model(probs=1.0)
        expected_half.load_state_dict(half.state_dict())
        expected_half = expected_half(pixels).masks_queries_logits
    assert not torch.equal(plain, after_fill)
    assert torch.equal(after_fill, expected_masked)
    assert torch.equal(after_index, expected_half)
    assert torch.equal(after_load, plain)


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_torch_export_with_dynamic_size_equals_eager_at_three_sizes(kind):
    model = _model(kind)
    rows, cols = torch.export.Dim("rows", min=1, max=64), torch.export.Dim("cols", min=1, max=64)
    program = torch.export.export(_Logits(model).eval(), (torch.randn(2, 3, 64, 64),),
                                  dynamic_shapes={"pixel_values": {2: 16 * rows, 3: 16 * cols}})
    exported = program.module()
    for size in [(64, 64), (48, 96), (128, 32)]:
        pixels = torch.randn(2, 3, *size)
        with torch.inference_mode():
            expected = _Logits(model)(pixels)
            got = exported(pixels)
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_eval_forward_compiles_without_graph_breaks_and_equals_eager(kind):
    model = _model(kind)
    model.mask_probs()  # as after loading or eval(): the compiled graph skips the intermediate predictions
    torch._dynamo.reset()
    compiled = torch.compile(_Logits(model), fullgraph=True, backend="eager")  # fullgraph: a break is an error
    for size in [(64, 64), (48, 80)]:
        pixels = torch.randn(1, 3, *size)
        with torch.inference_mode():
            for a, b in zip(compiled(pixels), _Logits(model)(pixels), strict=True):
                assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("probs", [0.0, 1.0])
def test_compiled_forward_uses_the_probabilities_read_at_eval(probs):
    model = _model(probs=1.0 - probs)
    model(torch.randn(1, 3, 64, 64))
    model.attn_mask_probs.fill_(probs)  # changed in place after the last read ...
    model.eval()  # ... and read again, as the contract asks before compiling
    torch._dynamo.reset()
    compiled = torch.compile(_Logits(model), fullgraph=True, backend="eager")
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        got = compiled(pixels)
        expected = _Logits(_model(probs=probs))(pixels)
    for a, b in zip(got, expected, strict=True):
        assert (a - b).abs().max().item() < 1e-5


def test_compiled_training_forward_reads_the_probabilities_as_a_tensor():
    model = _model(probs=1.0).train()
    torch._dynamo.reset()
    compiled = torch.compile(_Logits(model), fullgraph=True, backend="eager")
    pixels = torch.randn(1, 3, 64, 64)
    masked = compiled(pixels)[1].detach()
    model.attn_mask_probs.zero_()  # the trainer's annealing writes in place between steps
    unmasked = compiled(pixels)[1].detach()
    expected = _Logits(_model(probs=0.0).train())(pixels)[1].detach()
    assert not torch.allclose(masked, unmasked)
    assert (unmasked - expected).abs().max().item() < 1e-5
