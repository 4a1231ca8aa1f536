"""Checkpoints written by the authors' training code (tue-mps/eomt).

They hold `network.*` keys in timm naming (fused qkv, `ls1.gamma`, ...), possibly wrapped in a
Lightning `state_dict` and prefixed by torch.compile's `_orig_mod`. No config travels with them:
every architecture number is read off tensor shapes.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import Tensor

from ..config import ConfigError, EomtConfig
from .errors import CheckpointError

BACKBONE = "network.encoder.backbone."


def unwrap(entries: dict[str, Any]) -> dict[str, Any]:
    """Lightning's {'state_dict': ...} wrapper and torch.compile's `_orig_mod` prefixes removed."""
    if isinstance(entries.get("state_dict"), dict):
        entries = entries["state_dict"]
    return {re.sub(r"(^|\.)_orig_mod\.", r"\1", k): v for k, v in entries.items()}


def is_authors_format(state_dict: dict[str, Tensor]) -> bool:
    return any(k.startswith("network.") for k in state_dict)


def _need(state_dict: dict[str, Tensor], key: str, source: str) -> Tensor:
    if key not in state_dict:
        raise CheckpointError(f"{source}: authors' checkpoint lacks tensor {key!r}")
    return state_dict[key]


def infer_config(state_dict: dict[str, Tensor], source: str, **overrides: Any) -> EomtConfig:
    """Read hidden size, depth, queries, classes, num_blocks, grid and MLP kind off tensor shapes."""
    if any("rope" in k for k in state_dict) or f"{BACKBONE}pos_embed" not in state_dict:
        raise CheckpointError(
            f"{source}: looks like an authors' DINOv3 checkpoint (no absolute position embeddings); those store "
            "the backbone as a delta against the gated DINOv3 weights and cannot be loaded alone: use the "
            "transformers-format hub repo of the model instead")
    cls_token = _need(state_dict, f"{BACKBONE}cls_token", source)
    hidden = cls_token.shape[-1]
    depth = 1 + max(int(m[1]) for k in state_dict if (m := re.match(rf"{re.escape(BACKBONE)}blocks\.(\d+)\.", k)))
    patch = _need(state_dict, f"{BACKBONE}patch_embed.proj.weight", source).shape[-1]
    num_pos = state_dict[f"{BACKBONE}pos_embed"].shape[1]
    grid = math.isqrt(num_pos)
    if grid * grid != num_pos:
        grid = math.isqrt(num_pos - 1)
        if grid * grid != num_pos - 1:
            raise CheckpointError(f"{source}: pos_embed has {num_pos} positions, not a square grid")
    registers = state_dict[f"{BACKBONE}reg_token"].shape[1] if f"{BACKBONE}reg_token" in state_dict else 0
    fc1 = _need(state_dict, f"{BACKBONE}blocks.0.mlp.fc1.weight", source).shape[0]
    fc2_in = _need(state_dict, f"{BACKBONE}blocks.0.mlp.fc2.weight", source).shape[1]
    swiglu = fc1 == 2 * fc2_in
    if swiglu:
        mlp_ratio = next((r for r in (4, 2, 3, 8) if (int(int(hidden * r) * 2 / 3) + 7) // 8 * 8 == fc2_in), None)
        if mlp_ratio is None:
            raise CheckpointError(f"{source}: SwiGLU width {fc2_in} matches no MLP ratio for hidden size {hidden}")
    else:
        mlp_ratio = fc1 // hidden if fc1 % hidden == 0 else fc1 / hidden
    if "network.attn_mask_probs" in state_dict:
        num_blocks = state_dict["network.attn_mask_probs"].shape[0]
    elif "num_blocks" in overrides:
        num_blocks = overrides["num_blocks"]
    else:
        raise CheckpointError(f"{source}: no network.attn_mask_probs to read num_blocks from; pass num_blocks=")
    upscale = len({m[1] for k in state_dict if (m := re.match(r"network\.upscale\.(\d+)\.", k))})
    values: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=max(1, hidden // 64),  # DINOv2 heads are 64 wide; shapes cannot tell
        mlp_ratio=mlp_ratio,
        use_swiglu_ffn=swiglu,
        image_size=grid * patch,
        patch_size=patch,
        num_register_tokens=registers,
        num_queries=_need(state_dict, "network.q.weight", source).shape[0],
        num_labels=_need(state_dict, "network.class_head.weight", source).shape[0] - 1,
        num_blocks=num_blocks,
        num_upscale_blocks=upscale,
    )
    values.update(overrides)
    try:
        return EomtConfig(**values)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def convert_state_dict(state_dict: dict[str, Tensor], config: EomtConfig) -> dict[str, Tensor]:
    """Authors' keys -> ours. Keys it does not know are passed through, so strict loading names them."""
    out: dict[str, Tensor] = {}
    b = re.escape(BACKBONE)
    grid_positions = config.grid_size[0] * config.grid_size[1]
    for key, value in state_dict.items():
        if key in ("network.encoder.pixel_mean", "network.encoder.pixel_std"):
            continue  # normalisation happens in the image processor
        if key == f"{BACKBONE}pos_embed":
            pos = value.reshape(-1, value.shape[-1])
            if pos.shape[0] == grid_positions + 1:  # a CLS position: fold it into the CLS token
                out["_cls_pos"] = pos[:1]
                pos = pos[1:]
            out["embeddings.position_embeddings.weight"] = pos
            continue
        if m := re.match(rf"^{b}blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key):
            q, k, v = value.chunk(3, dim=0)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
                out[f"layers.{m[1]}.attention.{name}.{m[2]}"] = part
            continue
        if config.use_swiglu_ffn and (m := re.match(rf"^{b}blocks\.(\d+)\.mlp\.(fc1|w12)\.(weight|bias)$", key)):
            gate, up = value.chunk(2, dim=0)
            out[f"layers.{m[1]}.mlp.gate_proj.{m[3]}"] = gate
            out[f"layers.{m[1]}.mlp.up_proj.{m[3]}"] = up
            continue
        out[_rename(key, config.use_swiglu_ffn)] = value
    cls_pos = out.pop("_cls_pos", None)
    if cls_pos is not None and "embeddings.cls_token" in out:
        out["embeddings.cls_token"] = out["embeddings.cls_token"] + cls_pos.reshape(1, 1, -1)
    cls_token = out.get("embeddings.cls_token")
    if config.num_register_tokens == 0 and "embeddings.register_tokens" not in out and cls_token is not None:
        # a backbone without registers (timm's DINOv2 without reg_token, WebSSL-DINO) has no such tensor
        out["embeddings.register_tokens"] = cls_token.new_zeros(1, 0, cls_token.shape[-1])
    return out


_RULES = [
    (rf"^{re.escape(BACKBONE)}cls_token$", "embeddings.cls_token"),
    (rf"^{re.escape(BACKBONE)}reg_token$", "embeddings.register_tokens"),
    (rf"^{re.escape(BACKBONE)}patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (rf"^{re.escape(BACKBONE)}norm\.", "layernorm."),
    (rf"^{re.escape(BACKBONE)}blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.out_proj."),
    (rf"^{re.escape(BACKBONE)}blocks\.(\d+)\.ls(\d)\.gamma$", r"layers.\1.layer_scale\2.lambda1"),
    (rf"^{re.escape(BACKBONE)}blocks\.(\d+)\.(norm\d)\.", r"layers.\1.\2."),
    (rf"^{re.escape(BACKBONE)}blocks\.(\d+)\.mlp\.(fc\d)\.", r"layers.\1.mlp.\2."),
    (r"^network\.q\.weight$", "query.weight"),
    (r"^network\.class_head\.", "class_predictor."),
    (r"^network\.mask_head\.0\.", "mask_head.fc1."),
    (r"^network\.mask_head\.2\.", "mask_head.fc2."),
    (r"^network\.mask_head\.4\.", "mask_head.fc3."),
    (r"^network\.upscale\.(\d+)\.norm\.", r"upscale_block.block.\1.layernorm2d."),
    (r"^network\.upscale\.(\d+)\.(conv\d)\.", r"upscale_block.block.\1.\2."),
    (r"^network\.attn_mask_probs$", "attn_mask_probs"),
]


def _rename(key: str, swiglu: bool) -> str:
    if swiglu:
        key = re.sub(rf"^{re.escape(BACKBONE)}blocks\.(\d+)\.mlp\.(fc2|w3)\.", r"layers.\1.mlp.down_proj.", key)
    for pattern, replacement in _RULES:
        new = re.sub(pattern, replacement, key)
        if new != key:
            return new
    return key
