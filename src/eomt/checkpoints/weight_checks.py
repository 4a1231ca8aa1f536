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

    def count_differs(what: str, in_config, in_weights) -> None:
        raise CheckpointError(f"{source}: the weights have {in_weights}, the config says {what} {in_config}")

    def check(key: str, expected: tuple[int, ...], what: str) -> None:
        tensor = state_dict.get(key)
        if tensor is not None and tuple(tensor.shape) != expected:
            raise CheckpointError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects "
                                  f"{expected} (the config says {what})")

    hidden = config.hidden_size
    layers = {int(m[1]) for k in state_dict if (m := _LAYER.match(k))}
    if layers and len(layers) != config.num_hidden_layers:
        count_differs("num_hidden_layers", config.num_hidden_layers, f"{len(layers)} layers")
    check("embeddings.patch_embeddings.projection.weight",
          (hidden, config.num_channels, config.patch_size, config.patch_size),
          f"hidden_size {hidden}, num_channels {config.num_channels}, patch_size {config.patch_size}")
    check("query.weight", (config.num_queries, hidden), f"num_queries {config.num_queries}, hidden_size {hidden}")
    check("embeddings.register_tokens", (1, config.num_register_tokens, hidden),
          f"num_register_tokens {config.num_register_tokens}")
    upscale = {int(m[1]) for k in state_dict if (m := _UPSCALE.match(k))}
    if upscale and len(upscale) != config.num_upscale_blocks:
        count_differs("num_upscale_blocks", config.num_upscale_blocks, f"{len(upscale)} upscale blocks")
    check("attn_mask_probs", (config.num_blocks,), f"num_blocks {config.num_blocks}")
    if class_head:
        check("class_predictor.weight", (config.num_labels + 1, hidden), f"num_labels {config.num_labels}")
