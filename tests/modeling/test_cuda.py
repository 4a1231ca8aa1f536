"""CUDA twins of the eval-forward tests (test_traceable.py) and of the half-precision heads (tests/test_predictor.py).

Marked `cuda`: skipped without a CUDA device (tests/conftest.py). `pytest -m cuda` runs them, and so does
`bash benchmarks/gpu_checks.sh` on a GPU machine.
"""

from __future__ import annotations

import copy

import pytest
import torch

from eomt import EomtConfig, EomtForUniversalSegmentation

pytestmark = pytest.mark.cuda


def _model(kind: str = "eomt", probs: float = 0.0) -> EomtForUniversalSegmentation:
    extra = {"intermediate_size": 128} if kind == "eomt_dinov3" else {}
    config = EomtConfig(model_type=kind, hidden_size=64, num_hidden_layers=3, num_attention_heads=2, num_blocks=2,
                        num_queries=6, image_size=64, num_labels=4, **extra)
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(config).eval()
    model.attn_mask_probs.fill_(probs)
    return model.cuda()


def _logits(model, pixels) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(pixels)
    return out.class_queries_logits, out.masks_queries_logits


@pytest.mark.parametrize("probs", [0.0, 1.0])
def test_eval_forward_on_cuda_makes_no_host_sync(probs):
    model = _model(probs=probs)
    pixels = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        model(pixels)  # the first forward reads the mask probabilities (the one copy to the host)
        torch.cuda.set_sync_debug_mode("error")  # from here on, any synchronising call raises
        try:
            model(pixels)
            model(torch.randn(1, 3, 48, 80, device="cuda"))  # another size: position embeddings resampled
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_compiled_forward_on_cuda_equals_eager(kind):
    """Inductor's triton kernels, one graph without breaks, as Segmenter(compile=True) builds on GPUs."""
    model = _model(kind)
    model.mask_probs()
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: _logits(model, x), fullgraph=True, dynamic=False)
    for size in [(64, 64), (48, 80)]:
        pixels = torch.randn(2, 3, *size, device="cuda")
        with torch.inference_mode():
            for a, b in zip(compiled(pixels), _logits(model, pixels), strict=True):
                assert (a - b).abs().max().item() < 1e-4


def test_forward_on_cuda_is_captured_in_a_cuda_graph_and_replays_like_eager():
    from torch._dynamo.utils import counters

    model = _model()
    model.mask_probs()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda x: _logits(model, x), mode="reduce-overhead", fullgraph=True, dynamic=False)
    pixels = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        expected = _logits(model, pixels)
        for _ in range(3):  # warm-up, record, replay
            got = [t.clone() for t in compiled(pixels)]
    assert counters["inductor"]["cudagraph_skips"] == 0  # inductor counts each graph it could not capture
    for a, b in zip(got, expected, strict=True):
        assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_backbone_with_float32_heads_on_cuda(dtype):
    """What `Segmenter.from_pretrained(..., dtype=...)` runs: the heads' float32 logits are closer to float32's."""
    full = _model()
    mixed = copy.deepcopy(full).to(dtype).float32_heads()
    rounded = copy.deepcopy(full).to(dtype)
    assert mixed.layers[0].mlp.fc1.weight.dtype == dtype and mixed.mask_head.fc3.weight.dtype == torch.float32
    pixels = torch.randn(2, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.inference_mode():
        expected = _logits(full, pixels)
        got = _logits(mixed, pixels.to(dtype))
        plain = _logits(rounded, pixels.to(dtype))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in got)
    assert (got[1] - expected[1]).abs().mean() < (plain[1].float() - expected[1]).abs().mean()
