"""Initialise an EoMT for training from a pretrained DINOv2 or DINOv3 backbone.

Accepted layouts, found by where the `cls_token` sits (any wrapper prefix such as `dinov2.`,
`model.` or `module.` is stripped):

- timm / original DINOv2: `cls_token`, `reg_token` or `register_tokens`, `pos_embed`,
  `patch_embed.proj.*`, `blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.*, ls2.gamma}`, `norm.*`;
  SwiGLU as `mlp.fc1` (= [gate; up]) + `mlp.fc2`, or `mlp.w12` + `mlp.w3`.
- transformers `Dinov2WithRegistersModel` (5.x names, and the 4.x `attention.attention.query` /
  `attention.output.dense` / `mlp.weights_in` names of the hub files) and `DINOv3ViTModel`.

The result carries our names (`embeddings.*`, `layers.*`, `layernorm.*`). The CLS position embedding
is folded into the CLS token, position embeddings are resampled to the config's grid and the patch
kernel to the config's patch size.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import EomtConfig
from ..modeling.embeddings import resample_position_embeddings
from ..modeling.eomt import EomtForUniversalSegmentation
from .errors import CheckpointError
from .io import read_tensors, tensors_only
from .load import check_tensors
from .resolve import resolve_weights

BACKBONE_PREFIXES = ("embeddings.", "layers.", "layernorm.")
_WRAPPERS = ("state_dict", "model", "module", "teacher")


def resample_patch_embed(weight: Tensor, new_size: int) -> Tensor:
    """Resample a (C, in, p, p) patch-embedding kernel to (C, in, new_size, new_size), FlexiViT-style.

    Interpolating the kernel itself changes what it computes (its response to a patch scales with the
    patch area, and interpolation is not the adjoint of resizing). Instead we ask that a patch resized
    to the new size (bicubic, antialiased) gives the same embedding as the original patch:
    <resize(x), new_w> = <x, old_w>. With resize(x) = B x this is B^T new_w = old_w, whose least-norm
    solution is new_w = pinv(B^T) old_w; when enlarging the kernel it holds exactly for every patch.
    """
    old_size = weight.shape[-1]
    if weight.shape[-2] != old_size:
        raise ValueError(f"expected a square patch kernel, got shape {tuple(weight.shape)}")
    if old_size == new_size:
        return weight
    basis = torch.eye(old_size * old_size, dtype=torch.float64).reshape(-1, 1, old_size, old_size)
    resized = F.interpolate(basis, size=(new_size, new_size), mode="bicubic", align_corners=False, antialias=True)
    resize_t = resized.reshape(old_size * old_size, new_size * new_size)  # row i = resize(basis image i) = B^T
    flat = weight.detach().reshape(-1, old_size * old_size).to(torch.float64)
    new_flat = flat @ torch.linalg.pinv(resize_t).T
    return new_flat.reshape(*weight.shape[:-2], new_size, new_size).to(weight.dtype)


# ---- reading ----------------------------------------------------------------------------------


def read_backbone_tensors(source: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of a local weight file, or of a local directory / hub repo (model.safetensors, shards)."""
    path = Path(source)
    files = [path] if path.is_file() else resolve_weights(source)
    tensors: dict[str, Tensor] = {}
    for file in files:
        entries = read_tensors(file)
        while not any(isinstance(v, Tensor) for v in entries.values()):
            inner = next((entries[k] for k in _WRAPPERS if isinstance(entries.get(k), dict)), None)
            if inner is None:
                break
            entries = inner
        tensors.update(tensors_only(entries, file))
    return tensors


def _backbone_scope(state_dict: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The entries of the one backbone in the file, with the wrapper prefix before it removed."""
    scopes = set()
    for key in state_dict:
        if m := re.match(r"^(.*?)(embeddings\.)?cls_token$", key):
            if m[1] == "" or m[1].endswith("."):
                scopes.add(m[1])
    if not scopes:
        raise CheckpointError(f"{source}: no cls_token found, not a DINOv2/DINOv3 backbone checkpoint")
    if len(scopes) > 1:
        raise CheckpointError(f"{source}: several backbones in one file (prefixes {sorted(scopes)}); keep one")
    scope = scopes.pop()
    return {k[len(scope):]: v for k, v in state_dict.items() if k.startswith(scope)}


# ---- renaming ---------------------------------------------------------------------------------

_TIMM_TOP = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^(reg_token|register_tokens)$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"embeddings.patch_embeddings.projection.\1"),
    (r"^norm\.(weight|bias)$", r"layernorm.\1"),
]
_TIMM_BLOCK = [
    (r"^attn\.proj\.", "attention.out_proj."),
    (r"^ls([12])\.gamma$", r"layer_scale\1.lambda1"),
]
_HF_TOP = [
    (r"^embeddings\.(cls_token|register_tokens)$", r"embeddings.\1"),
    (r"^embeddings\.patch_embeddings\.(?:projection\.)?(weight|bias)$", r"embeddings.patch_embeddings.projection.\1"),
    (r"^(?:layernorm|norm)\.(weight|bias)$", r"layernorm.\1"),
]
_HF_BLOCK = [
    (r"^attention\.(?:o_proj|output\.dense)\.", "attention.out_proj."),
    (r"^attention\.attention\.query\.", "attention.q_proj."),
    (r"^attention\.attention\.key\.", "attention.k_proj."),
    (r"^attention\.attention\.value\.", "attention.v_proj."),
    (r"^mlp\.weights_out\.", "mlp.down_proj."),
]


def _apply(rules: list[tuple[str, str]], key: str) -> str | None:
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def _split_gate_up(out: dict[str, Tensor], prefix: str, kind: str, value: Tensor) -> None:
    gate, up = value.chunk(2, dim=0)
    out[f"{prefix}mlp.gate_proj.{kind}"] = gate
    out[f"{prefix}mlp.up_proj.{kind}"] = up


def _timm_is_swiglu(entries: dict[str, Tensor]) -> bool:
    if any(re.match(r"^blocks\.\d+\.mlp\.w12\.", k) for k in entries):
        return True
    fc1, fc2 = entries.get("blocks.0.mlp.fc1.weight"), entries.get("blocks.0.mlp.fc2.weight")
    return fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]


def _from_timm(entries: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
    out: dict[str, Tensor] = {}
    swiglu = _timm_is_swiglu(entries)
    for key, value in entries.items():
        if key == "pos_embed":
            continue
        block = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if block is None:
            if (new := _apply(_TIMM_TOP, key)) is not None:
                out[new] = value
            continue  # mask_token, classifier heads and the like
        prefix, rest = f"layers.{block[1]}.", block[2]
        if m := re.match(r"^attn\.qkv\.(weight|bias)$", rest):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}attention.{name}.{m[1]}"] = part
        elif swiglu and (m := re.match(r"^mlp\.(?:fc1|w12)\.(weight|bias)$", rest)):
            _split_gate_up(out, prefix, m[1], value)
        elif swiglu and (m := re.match(r"^mlp\.(?:fc2|w3)\.(weight|bias)$", rest)):
            out[f"{prefix}mlp.down_proj.{m[1]}"] = value
        else:
            out[prefix + (_apply(_TIMM_BLOCK, rest) or rest)] = value
    return out, entries.get("pos_embed")


def _from_transformers(entries: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
    out: dict[str, Tensor] = {}
    position = None
    for key, value in entries.items():
        if re.match(r"^embeddings\.position_embeddings(\.weight)?$", key):
            position = value
            continue
        block = re.match(r"^(?:encoder\.|model\.)?layer\.(\d+)\.(.+)$", key)
        if block is None:
            if (new := _apply(_HF_TOP, key)) is not None:
                out[new] = value
            continue  # mask_token, rope buffers, pooler, classifier heads
        prefix, rest = f"layers.{block[1]}.", block[2]
        if m := re.match(r"^mlp\.weights_in\.(weight|bias)$", rest):
            _split_gate_up(out, prefix, m[1], value)
        else:
            out[prefix + (_apply(_HF_BLOCK, rest) or rest)] = value
    return out, position


# ---- checks and embedding adaptation ----------------------------------------------------------


def _check_architecture(tensors: dict[str, Tensor], has_positions: bool, config: EomtConfig, source: str) -> None:
    hidden = tensors["embeddings.cls_token"].shape[-1]
    if hidden != config.hidden_size:
        raise CheckpointError(
            f"{source}: backbone hidden size is {hidden}, the config has hidden_size={config.hidden_size}")
    depth = 1 + max((int(m[1]) for k in tensors if (m := re.match(r"^layers\.(\d+)\.", k))), default=-1)
    if depth != config.num_hidden_layers:
        raise CheckpointError(
            f"{source}: backbone has {depth} blocks, the config has num_hidden_layers={config.num_hidden_layers}")
    if has_positions and config.is_dinov3:
        raise CheckpointError(
            f"{source}: a DINOv2 backbone (absolute position embeddings) cannot initialise model_type "
            "'eomt_dinov3'; use model_type 'eomt'")
    if not has_positions and not config.is_dinov3:
        raise CheckpointError(
            f"{source}: backbone has no position embeddings (a DINOv3/RoPE backbone?) but the config has "
            f"model_type {config.model_type!r}; use 'eomt_dinov3'")
    registers = tensors["embeddings.register_tokens"].shape[1] if "embeddings.register_tokens" in tensors else 0
    if registers != config.num_register_tokens:
        raise CheckpointError(f"{source}: backbone has {registers} register tokens, the config has "
                              f"num_register_tokens={config.num_register_tokens}")


def _split_positions(position: Tensor, transformers_layout: bool, source: str) -> tuple[Tensor | None, Tensor]:
    """(CLS position or None, patch positions (N, C)); timm files may or may not hold a CLS position."""
    position = position.reshape(-1, position.shape[-1])
    count = position.shape[0]
    has_cls = transformers_layout or math.isqrt(count) ** 2 != count
    patches = position[1:] if has_cls else position
    if math.isqrt(patches.shape[0]) ** 2 != patches.shape[0]:
        raise CheckpointError(f"{source}: position embeddings with {count} entries do not form a square grid")
    return (position[:1] if has_cls else None), patches


def _adapt_embeddings(tensors: dict[str, Tensor], position: Tensor | None, transformers_layout: bool,
                      config: EomtConfig, source: str) -> None:
    if position is not None:
        cls_position, patches = _split_positions(position, transformers_layout, source)
        if cls_position is not None:  # DINOv2 adds pos[0] to the CLS token; we keep them summed
            tensors["embeddings.cls_token"] = tensors["embeddings.cls_token"] + cls_position.reshape(1, 1, -1)
        side = math.isqrt(patches.shape[0])
        tensors["embeddings.position_embeddings.weight"] = resample_position_embeddings(
            patches, (side, side), config.grid_size)
    kernel = "embeddings.patch_embeddings.projection.weight"
    if kernel in tensors and tensors[kernel].shape[-1] != config.patch_size:
        tensors[kernel] = resample_patch_embed(tensors[kernel], config.patch_size)
    if "embeddings.register_tokens" not in tensors and config.num_register_tokens == 0:
        tensors["embeddings.register_tokens"] = tensors["embeddings.cls_token"].new_zeros(1, 0, config.hidden_size)


def convert_backbone_state_dict(state_dict: dict[str, Tensor], config: EomtConfig,
                                source: str = "checkpoint") -> dict[str, Tensor]:
    """A DINOv2 (timm or transformers naming) or DINOv3 (transformers) backbone in our names, fitted to `config`."""
    entries = _backbone_scope(state_dict, source)
    transformers_layout = "embeddings.cls_token" in entries
    tensors, position = _from_transformers(entries) if transformers_layout else _from_timm(entries)
    _check_architecture(tensors, position is not None, config, source)
    _adapt_embeddings(tensors, position, transformers_layout, config, source)
    return tensors


# ---- loading ----------------------------------------------------------------------------------


def _mlp_parts(keys, layer: str = "layers.0.mlp.") -> list[str]:
    return sorted({k[len(layer):].split(".")[0] for k in keys if k.startswith(layer)})


def load_backbone(model: EomtForUniversalSegmentation, tensors: dict[str, Tensor], source: str) -> None:
    """Copy the backbone tensors into `model`; every backbone tensor must be given, with the right shape."""
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIXES)}
    given, wanted = _mlp_parts(tensors), _mlp_parts(expected)
    if given != wanted:
        raise CheckpointError(
            f"{source}: backbone MLP has {given}, the config builds {wanted} (check use_swiglu_ffn / use_gated_mlp)")
    check_tensors(expected, tensors, f"{source} (backbone)")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[key].to(target.dtype))


# The LayerNorm eps each family's backbones were trained with (timm DINOv2: 1e-6; DINOv3ViTConfig: 1e-5).
LAYER_NORM_EPS = {"eomt": 1e-6, "eomt_dinov3": 1e-5}


def backbone_layer_norm_eps(source: str | os.PathLike, config: EomtConfig) -> float:
    """The eps of the backbone's LayerNorms: from its config.json when it has one, else the family's."""
    import json

    from .resolve import resolve_file

    path = Path(source)
    try:
        found = (path.parent / "config.json" if path.is_file() else resolve_file(source, "config.json", required=False))
    except CheckpointError:
        found = None
    if found is not None and Path(found).is_file():
        try:
            value = json.loads(Path(found).read_text()).get("layer_norm_eps")
        except (OSError, ValueError, AttributeError):
            value = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            return float(value)
    return LAYER_NORM_EPS[config.model_type]


def build_from_backbone(config: EomtConfig, source: str | os.PathLike,
                        **overrides: Any) -> EomtForUniversalSegmentation:
    """A fresh EoMT for `config` (fields in `overrides` replaced) whose backbone comes from `source`.

    `source` is a weight file (.safetensors, .pth, .bin, .pt), a directory or a hub id. The queries and
    heads keep their random initialisation; the model is returned in training mode. The LayerNorm eps is
    the backbone's (`backbone_layer_norm_eps`: DINOv3 uses 1e-5, DINOv2 1e-6), whatever `config` says.
    """
    if overrides:
        config = dataclasses.replace(config, **overrides)
    eps = backbone_layer_norm_eps(source, config)
    if eps != config.layer_norm_eps:
        config = dataclasses.replace(config, layer_norm_eps=eps)
    tensors = convert_backbone_state_dict(read_backbone_tensors(source), config, str(source))
    model = EomtForUniversalSegmentation(config)
    load_backbone(model, tensors, str(source))
    return model
