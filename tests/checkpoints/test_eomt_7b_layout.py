"""EoMT-7B (tue-mps/coco_panoptic_eomt_7b_640, a WebSSL-DINO 7B backbone): its checkpoint layout loads.

The authors publish it as their training code's `pytorch_model.bin`. Their code runs a backbone without
RoPE only in timm naming (`blocks.N.attn.qkv`, `ls1.gamma`, `pos_embed`), and WebSSL-DINO (DINOv2 trained
on web images) has no register tokens, so its position embeddings carry a CLS position. A tiny checkpoint
of that structure — same key names and layer kinds, 128-wide heads as ViT-7B's (4096 / 32), 40x40 grid
at 640 — must give transformers' outputs for the same weights, from a file and from a hub repo holding
only that file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from helpers import make_reference, to_authors_format, write_hub_cache

from eomt import EomtForUniversalSegmentation

BACKBONE = "network.encoder.backbone."


def _seven_b_like():
    """A transformers EoMT shaped like EoMT-7B in miniature, and its checkpoint in the authors' layout."""
    ref = make_reference("eomt", hidden_size=128, num_attention_heads=1, num_hidden_layers=3, num_blocks=2,
                         num_register_tokens=0, image_size=640, patch_size=16, num_queries=7)
    ref.attn_mask_probs.zero_()
    state = to_authors_format(ref.state_dict())
    del state[f"{BACKBONE}reg_token"]  # transformers keeps an empty (1, 0, 128) one; timm has none
    cls_position = torch.randn(1, 1, 128) * 0.02  # timm keeps a CLS position when there are no registers
    state[f"{BACKBONE}pos_embed"] = torch.cat([cls_position, state[f"{BACKBONE}pos_embed"]], dim=1)
    state[f"{BACKBONE}cls_token"] = state[f"{BACKBONE}cls_token"] - cls_position
    return ref, state


def _logits(model, pixels):
    with torch.no_grad():
        out = model(pixel_values=pixels)
    return out.class_queries_logits, out.masks_queries_logits


def test_the_7b_layout_loads_and_gives_transformers_outputs(tmp_path):
    ref, state = _seven_b_like()
    assert f"{BACKBONE}reg_token" not in state and state[f"{BACKBONE}pos_embed"].shape == (1, 1601, 128)
    torch.save(state, tmp_path / "pytorch_model.bin")
    pixels = torch.randn(1, 3, 640, 640)  # transformers runs at image_size only
    # the head width is not in any shape: the inferred 64-wide heads (DINOv2's) are wrong for ViT-7B ...
    guessed = EomtForUniversalSegmentation.from_pretrained(tmp_path / "pytorch_model.bin")
    assert guessed.config.num_attention_heads == 2
    assert not torch.allclose(_logits(guessed, pixels)[0], _logits(ref, pixels)[0], atol=1e-3)
    # ... so EoMT-7B is loaded with its head count (32 there; 1 here)
    model = EomtForUniversalSegmentation.from_pretrained(tmp_path / "pytorch_model.bin", num_attention_heads=1)
    config = model.config
    assert (config.num_register_tokens, config.image_size, config.patch_size, config.num_blocks) == (0, 640, 16, 2)
    for ours, theirs in zip(_logits(model, pixels), _logits(ref, pixels), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_a_hub_repo_holding_only_the_authors_file_loads(tmp_path):
    ref, state = _seven_b_like()
    (tmp_path / "src").mkdir()
    torch.save(state, tmp_path / "src" / "pytorch_model.bin")
    write_hub_cache(tmp_path / "hub", "tue-mps/tiny_eomt_7b_layout", tmp_path / "src")
    pixels = torch.randn(1, 3, 640, 640)
    torch.save(pixels, tmp_path / "pixels.pt")
    code = f"""
import torch
from eomt import EomtForUniversalSegmentation
model = EomtForUniversalSegmentation.from_pretrained("tue-mps/tiny_eomt_7b_layout", num_attention_heads=1)
with torch.no_grad():
    torch.save(model(torch.load({str(tmp_path / 'pixels.pt')!r})).class_queries_logits, {str(tmp_path / 'out.pt')!r})
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), _logits(ref, pixels)[0], atol=1e-4, rtol=0)
