"""Key filters between the transformers EoMT state dict and ours.

Our parameter names are those of transformers' `EomtForUniversalSegmentation`. The DINOv3 variant
in transformers names two things differently, and transformers 5.0 wrote SwiGLU weights fused;
these functions adapt such dictionaries in both directions.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from ..config import EomtConfig

# Entries that carry no learned state; dropped on load.
IGNORED_KEYS = re.compile(r"^(embeddings\.position_ids|embeddings\.mask_token|rope_embeddings\.\w+)$")

# VidEoMT's model keeps transformers' mask token (see eomt.modeling.videomt), so it is read, not dropped.
VIDEO_MASK_TOKEN = "embeddings.mask_token"

_DINOV3_TO_OURS = [
    (re.compile(r"^embeddings\.patch_embeddings\.(weight|bias)$"), r"embeddings.patch_embeddings.projection.\1"),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"layers.\1.attention.out_proj."),
]
_OURS_TO_DINOV3 = [
    (re.compile(r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$"), r"embeddings.patch_embeddings.\1"),
    (re.compile(r"^layers\.(\d+)\.attention\.out_proj\."), r"layers.\1.attention.o_proj."),
]


def _rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


def from_transformers(state_dict: dict[str, Tensor], config: EomtConfig) -> dict[str, Tensor]:
    """A transformers EoMT / EoMT-DINOv3 state dict in our names."""
    out: dict[str, Tensor] = {}
    video = config.model_type == "videomt"
    for key, value in state_dict.items():
        if IGNORED_KEYS.match(key) and not (video and key == VIDEO_MASK_TOKEN):
            continue
        if config.is_dinov3:
            key = _rename(key, _DINOV3_TO_OURS)
        fused = re.match(r"^(layers\.\d+\.mlp)\.weights_in\.(weight|bias)$", key)
        if fused:  # transformers 5.0 SwiGLU: one (2h, C) projection = [gate; up]
            gate, up = torch.chunk(value, 2, dim=0)
            out[f"{fused[1]}.gate_proj.{fused[2]}"] = gate
            out[f"{fused[1]}.up_proj.{fused[2]}"] = up
            continue
        out[re.sub(r"\.mlp\.weights_out\.", ".mlp.down_proj.", key)] = value
    if video and VIDEO_MASK_TOKEN not in out:  # unused at inference; VidEoMT's model keeps one to write back
        out[VIDEO_MASK_TOKEN] = torch.zeros(1, 1, config.hidden_size)
    return out


def to_transformers(state_dict: dict[str, Tensor], config: EomtConfig) -> dict[str, Tensor]:
    """Our state dict in the names the installed transformers reads."""
    if not config.is_dinov3:
        return dict(state_dict)
    return {_rename(k, _OURS_TO_DINOV3): v for k, v in state_dict.items()}
