"""Type and size checks of EomtConfig fields, run before anything else reads them.

A config.json is user input: `hidden_size: true`, `image_size: [640]`, `num_register_tokens: 1.5` or
`id2label` as a list must be a one-line ConfigError naming the field, not a TypeError deep inside the
model; absurd sizes (`num_hidden_layers: 100000`) are refused before minutes of allocation.
"""

from __future__ import annotations

import math
from typing import Any

# Upper bounds far above any published EoMT / ViT (ViT-7B: hidden 4096, 40 layers), to refuse absurd files.
LIMITS = {
    "hidden_size": 16384, "num_hidden_layers": 512, "num_attention_heads": 1024, "patch_size": 1024,
    "num_channels": 64, "num_queries": 100_000, "num_labels": 1_000_000, "num_register_tokens": 1024,
    "num_blocks": 512, "num_upscale_blocks": 16, "train_num_points": 100_000_000, "intermediate_size": 1 << 20,
    "image_size": 1 << 16,
}
INT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_channels",
              "num_upscale_blocks", "num_blocks", "train_num_points", "num_queries", "num_register_tokens")
OPTIONAL_INT_FIELDS = ("num_labels", "intermediate_size")
FLOAT_FIELDS = ("mlp_ratio", "hidden_dropout_prob", "initializer_range", "layer_norm_eps", "layerscale_value",
                "drop_path_rate", "attention_dropout", "no_object_weight", "class_weight", "mask_weight",
                "dice_weight", "oversample_ratio", "importance_sample_ratio", "rope_theta")
OPTIONAL_FLOAT_FIELDS = ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")
BOOL_FIELDS = ("use_swiglu_ffn", "query_bias", "value_bias", "proj_bias", "mlp_bias", "use_gated_mlp",
               "output_hidden_states", "output_attentions", "return_dict")
OPTIONAL_BOOL_FIELDS = ("key_bias",)
STR_FIELDS = ("hidden_act", "model_type")


class _Bad(Exception):
    pass


def _int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{name} must be a whole number, got {value!r}")
    limit = LIMITS.get(name)
    if limit is not None and value > limit:
        raise _Bad(f"{name} {value} is absurdly large (at most {limit})")


def _float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{name} must be a finite number, got {value!r}")


def _image_size(value: Any) -> None:
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and len(sides) != 2:
        raise _Bad(f"image_size must be one whole number or [height, width], got {value!r}")
    for side in sides:
        _int("image_size", side)


def _is_class_id(item: Any) -> bool:
    """A whole number, or its decimal string (transformers keeps label2id values such as "0" as given)."""
    if isinstance(item, str):
        return item.isdecimal()
    return isinstance(item, int) and not isinstance(item, bool)


def _labels(name: str, value: Any, key_kind: type, value_kind: type) -> None:
    if not isinstance(value, dict):
        raise _Bad(f"{name} must be a JSON object ({'{'}\"0\": \"person\", ...{'}'}), got {type(value).__name__}")
    for key, item in value.items():
        if key_kind is int:
            try:
                int(key)
            except (TypeError, ValueError):
                raise _Bad(f"{name} key {key!r} is not a class id") from None
        elif not isinstance(key, str):
            raise _Bad(f"{name} key {key!r} is not a label name")
        if value_kind is int and not _is_class_id(item):
            raise _Bad(f"{name}[{key!r}] must be a class id, got {item!r}")
        if value_kind is str and not isinstance(item, (str, int, float)):
            raise _Bad(f"{name}[{key!r}] must be a label name, got {item!r}")
    if len(value) > LIMITS["num_labels"]:
        raise _Bad(f"{name} holds {len(value)} labels, absurdly many")


def check_field_types(values: dict[str, Any]) -> str | None:
    """The first problem with the config `values` (field -> value), as a message; None when all are fine."""
    try:
        for name in INT_FIELDS:
            if name in values:
                _int(name, values[name])
        for name in OPTIONAL_INT_FIELDS:
            if values.get(name) is not None:
                _int(name, values[name])
        for name in FLOAT_FIELDS:
            if name in values:
                _float(name, values[name])
        for name in OPTIONAL_FLOAT_FIELDS:
            if values.get(name) is not None:
                _float(name, values[name])
        for name in BOOL_FIELDS + OPTIONAL_BOOL_FIELDS:
            value = values.get(name)
            if name in values and not (value is None and name in OPTIONAL_BOOL_FIELDS) and not isinstance(value, bool):
                raise _Bad(f"{name} must be true or false, got {value!r}")
        for name in STR_FIELDS:
            if name in values and not isinstance(values[name], str):
                raise _Bad(f"{name} must be a string, got {values[name]!r}")
        if "image_size" in values:
            _image_size(values["image_size"])
        if "chunk_size_feed_forward" in values:
            _int("chunk_size_feed_forward", values["chunk_size_feed_forward"])
        architectures = values.get("architectures")
        if architectures is not None and (not isinstance(architectures, list)
                                          or not all(isinstance(a, str) for a in architectures)):
            raise _Bad(f"architectures must be a list of class names, got {architectures!r}")
        if values.get("id2label") is not None:
            _labels("id2label", values["id2label"], int, str)
        if values.get("label2id") is not None:
            _labels("label2id", values["label2id"], str, int)
    except _Bad as exc:
        return str(exc)
    return None
