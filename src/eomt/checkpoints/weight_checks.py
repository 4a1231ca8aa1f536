"""Cheap checks of a config against the weights it is meant to describe, before any model is built.

Building a model from an absurd config.json (`num_hidden_layers: 100000`) would allocate for minutes
before strict loading said "missing tensors"; the shapes of a few tensors tell at once. Weights must
be floating point: integer or boolean tensors are refused, not cast.
"""

from __future__ import annotations

import re

from torch import Tensor

from .errors import CheckpointError

_LAYER = re.compile(r"^layers\.(\d+)\.")
_UPSCALE = re.compile(r"^upscale_block\.block\.(\d+)\.")


def check_dtypes(state_dict: dict[str, Tensor], source: str) -> None:
    for key, value in state_dict.items():
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: tensor {key!r} has dtype {str(value.dtype).removeprefix('torch.')}; "
                                  "weights must be floating point")


def check_config_against_weights(config, state_dict: dict[str, Tensor], source: str,
                                 class_head: bool = True) -> None:
    """Depth, width, patch, queries, registers, upscale blocks (and classes, with `class_head`) of `config`
    must match the tensors of `state_dict` (in this package's naming)."""
    check_dtypes(state_dict, source)

    def differ(what: str, in_config, in_weights) -> None:
        raise CheckpointError(f"{source}: the config says {what} {in_config}, the weights have {in_weights}")

    layers = {int(m[1]) for k in state_dict if (m := _LAYER.match(k))}
    if layers and len(layers) != config.num_hidden_layers:
        differ("num_hidden_layers", config.num_hidden_layers, len(layers))
    patch = state_dict.get("embeddings.patch_embeddings.projection.weight")
    if patch is not None and patch.ndim == 4:
        if patch.shape[0] != config.hidden_size:
            differ("hidden_size", config.hidden_size, patch.shape[0])
        if patch.shape[1] != config.num_channels:
            differ("num_channels", config.num_channels, patch.shape[1])
        if tuple(patch.shape[2:]) != (config.patch_size, config.patch_size):
            differ("patch_size", config.patch_size, tuple(patch.shape[2:]))
    query = state_dict.get("query.weight")
    if query is not None and query.shape[0] != config.num_queries:
        differ("num_queries", config.num_queries, query.shape[0])
    registers = state_dict.get("embeddings.register_tokens")
    if registers is not None and registers.ndim == 3 and registers.shape[1] != config.num_register_tokens:
        differ("num_register_tokens", config.num_register_tokens, registers.shape[1])
    upscale = {int(m[1]) for k in state_dict if (m := _UPSCALE.match(k))}
    if upscale and len(upscale) != config.num_upscale_blocks:
        differ("num_upscale_blocks", config.num_upscale_blocks, len(upscale))
    probs = state_dict.get("attn_mask_probs")
    if probs is not None and probs.shape != (config.num_blocks,):
        differ("num_blocks", config.num_blocks, tuple(probs.shape))
    classes = state_dict.get("class_predictor.weight")
    if class_head and classes is not None and classes.shape[0] != config.num_labels + 1:
        differ("num_labels", config.num_labels, f"{classes.shape[0] - 1} (+ no-object)")
