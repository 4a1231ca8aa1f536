"""EomtConfig: the typed, validated description of an EoMT network.

Field names and defaults follow the transformers `EomtConfig` / `EomtDinov3Config`, so a
hub `config.json` reads and writes without translation. One dataclass serves both backbones;
`model_type` ("eomt" for DINOv2 with registers, "eomt_dinov3" for DINOv3) selects the variant.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

MODEL_TYPES = ("eomt", "eomt_dinov3")
ACTIVATIONS = ("gelu", "relu", "silu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu")

# Fields that only one of the two variants writes to config.json.
_DINOV2_ONLY = ("mlp_ratio", "use_swiglu_ffn")
_DINOV3_ONLY = (
    "intermediate_size", "rope_theta", "query_bias", "key_bias", "value_bias", "proj_bias", "mlp_bias",
    "use_gated_mlp", "pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale", "rope_parameters",
)
# Keys that transformers writes or reads but that do not describe the network.
_HOUSEKEEPING = {
    "transformers_version", "torch_dtype", "use_return_dict", "_name_or_path",
    "is_encoder_decoder", "tie_word_embeddings", "pruned_heads", "_attn_implementation", "tf_legacy_loss",
    "use_bfloat16", "num_labels",
}


class ConfigError(ValueError):
    """A configuration value is invalid or a config file cannot be read."""


@dataclass
class EomtConfig:
    """Architecture, loss constants and label names of an EoMT model."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    mlp_ratio: float = 4
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: int | tuple[int, int] = 640
    patch_size: int = 16
    num_channels: int = 3
    layerscale_value: float = 1.0
    drop_path_rate: float = 0.0
    num_upscale_blocks: int = 2
    attention_dropout: float = 0.0
    use_swiglu_ffn: bool = False
    num_blocks: int = 4
    no_object_weight: float = 0.1
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    num_queries: int = 200
    num_register_tokens: int = 4
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    model_type: str = "eomt"
    # DINOv3 backbone ("eomt_dinov3"); None means "the variant's default".
    intermediate_size: int | None = None
    rope_theta: float = 100.0
    # transformers 5's spelling of rope_theta ({"rope_theta": ..., "rope_type": "default"}); kept equal to it
    rope_parameters: dict[str, Any] | None = None
    query_bias: bool = True
    key_bias: bool | None = None
    value_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    use_gated_mlp: bool = False
    pos_embed_shift: float | None = None
    pos_embed_jitter: float | None = None
    pos_embed_rescale: float | None = 2.0
    # What forward returns by default (transformers' PretrainedConfig attributes of the same names).
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    # transformers' PretrainedConfig attributes that EoMT's network does not read, kept (and written to
    # config.json when set) so that code and files made for transformers keep them: `dtype` (a torch dtype
    # or its name; the model's dtype after `from_pretrained`), `architectures`, `problem_type`,
    # `chunk_size_feed_forward` (transformers' EoMT does not chunk either).
    dtype: Any = None
    architectures: list[str] | None = None
    problem_type: str | None = None
    chunk_size_feed_forward: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    # the model_type values this class reads (a subclass narrows them: VideomtConfig)
    model_types: ClassVar[tuple[str, ...]] = MODEL_TYPES
    # transformers' config machinery that generic code reads: EoMT has no nested configs and no decoder.
    sub_configs: ClassVar[dict[str, type]] = {}
    is_encoder_decoder: ClassVar[bool] = False

    def __post_init__(self) -> None:
        from .config_checks import check_field_types

        problem = check_field_types({f.name: getattr(self, f.name) for f in fields(self)})
        if problem is not None:
            raise ConfigError(problem)
        if self.model_type not in self.model_types:
            raise ConfigError(_wrong_model_type(self.model_type, self.model_types))
        if self.key_bias is None:
            self.key_bias = not self.is_dinov3
        if self.intermediate_size is None and self.is_dinov3:
            self.intermediate_size = 4096
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.dtype is not None:
            self.dtype = _torch_dtype(self.dtype)
        if self.rope_parameters is not None and not self.is_dinov3:
            raise ConfigError("rope_parameters is a DINOv3 setting (model_type 'eomt_dinov3'): DINOv2 has no RoPE")
        if self.rope_parameters is not None:
            self.rope_theta = _rope_theta(self.rope_parameters)
        self.rope_parameters = {"rope_theta": self.rope_theta, "rope_type": "default"} if self.is_dinov3 else None
        self._init_labels()
        self.validate()
        self._ready = True  # from here on, label fields stay consistent (see __setattr__)

    def __setattr__(self, name: str, value: Any) -> None:
        """Setting `num_labels` after construction resizes `id2label` / `label2id` (as in transformers);
        setting `id2label` sets `num_labels` and `label2id` to match; `rope_theta` and `rope_parameters`
        follow each other."""
        if getattr(self, "_ready", False) and name in ("rope_theta", "rope_parameters") and self.is_dinov3:
            theta = _rope_theta(value) if name == "rope_parameters" else value
            super().__setattr__("rope_theta", theta)
            super().__setattr__("rope_parameters", {"rope_theta": theta, "rope_type": "default"})
            return
        if not getattr(self, "_ready", False) or name not in ("num_labels", "id2label"):
            super().__setattr__(name, value)
            return
        if name == "num_labels":
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"num_labels must be a positive integer, got {value!r}")
            super().__setattr__("num_labels", value)
            if len(self.id2label) != value:
                super().__setattr__("id2label", {i: f"LABEL_{i}" for i in range(value)})
        else:
            id2label = {int(k): str(v) for k, v in dict(value).items()}
            if not id2label:
                raise ConfigError("id2label must name at least one class")
            super().__setattr__("id2label", id2label)
            super().__setattr__("num_labels", len(id2label))
        super().__setattr__("label2id", {label: i for i, label in self.id2label.items()})

    def _init_labels(self) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.num_labels is None:
                self.num_labels = len(self.id2label)
        if self.num_labels is None:
            self.num_labels = 2
        if self.id2label is None or len(self.id2label) != self.num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        inverse = {name: i for i, name in self.id2label.items()}
        given = self.label2id
        # a given label2id that says the same (ids possibly as strings, as transformers allows) is kept as given
        if given is None or {k: int(v) for k, v in given.items()} != inverse:
            self.label2id = inverse

    def __iter__(self):
        """The attribute names, as iterating a transformers config yields them (`for key in config`)."""
        return (f.name for f in fields(self) if f.name != "extra")

    def __contains__(self, name: object) -> bool:
        return any(name == key for key in self)

    def get_text_config(self, *args: Any, **kwargs: Any) -> EomtConfig:
        """The config itself: EoMT has no separate text / decoder config (transformers' accessor)."""
        return self

    def architecture(self) -> str:
        """The transformers class name written to config.json's `architectures`."""
        return f"{'EomtDinov3' if self.is_dinov3 else 'Eomt'}ForUniversalSegmentation"

    @property
    def is_dinov3(self) -> bool:
        return self.model_type == "eomt_dinov3"

    @property
    def image_hw(self) -> tuple[int, int]:
        """The (height, width) the position embeddings were trained at."""
        size = self.image_size
        return size if isinstance(size, tuple) else (size, size)

    @property
    def grid_size(self) -> tuple[int, int]:
        h, w = self.image_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def mlp_hidden_size(self) -> int:
        if self.is_dinov3:
            return int(self.intermediate_size)
        hidden = int(self.hidden_size * self.mlp_ratio)
        if self.use_swiglu_ffn:  # SwiGLU keeps 2/3 of the width, rounded up to a multiple of 8
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_channels",
                     "num_queries", "num_labels", "train_num_points"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        need(self.hidden_size % self.num_attention_heads == 0,
             f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        need(1 <= self.num_blocks <= self.num_hidden_layers,
             f"num_blocks must be between 1 and num_hidden_layers ({self.num_hidden_layers}), got {self.num_blocks}")
        need(self.num_register_tokens >= 0, f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        need(self.num_upscale_blocks >= 0, f"num_upscale_blocks must be >= 0, got {self.num_upscale_blocks}")
        need(self.hidden_act in ACTIVATIONS, f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        for h in self.image_hw:
            need(h > 0 and h % self.patch_size == 0,
                 f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("hidden_dropout_prob", "attention_dropout", "drop_path_rate", "importance_sample_ratio"):
            value = getattr(self, name)
            need(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value}")
        need(self.oversample_ratio >= 1.0, f"oversample_ratio must be >= 1, got {self.oversample_ratio}")
        need(self.problem_type in PROBLEM_TYPES,
             f"problem_type must be one of {', '.join(map(str, PROBLEM_TYPES[1:]))}, got {self.problem_type!r}")
        if self.is_dinov3:
            head_dim = self.hidden_size // self.num_attention_heads
            need(head_dim % 4 == 0, f"DINOv3 RoPE needs a head dimension divisible by 4, got {head_dim}")
            need(self.intermediate_size > 0, f"intermediate_size must be positive, got {self.intermediate_size}")
        else:
            need(self.mlp_ratio > 0, f"mlp_ratio must be positive, got {self.mlp_ratio}")

    # ---- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every attribute, as the config.json dictionary transformers writes for this variant."""
        skip = {"extra"} | set(_DINOV2_ONLY if self.is_dinov3 else _DINOV3_ONLY)
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        for name in ("dtype", "architectures", "problem_type", "chunk_size_feed_forward"):  # written when set
            if not data[name]:
                del data[name]
        if "dtype" in data:
            data["dtype"] = str(data["dtype"]).removeprefix("torch.")
        data = json.loads(json.dumps(data))  # deep copy, JSON types
        if isinstance(self.image_size, tuple):
            data["image_size"] = list(self.image_size)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data.setdefault("architectures", [self.architecture()])
        data.pop("num_labels")  # transformers derives it from id2label
        return {**self.extra, **dict(sorted(data.items()))}

    def to_json_string(self, use_diff: bool = True) -> str:
        """config.json text; `use_diff` leaves out the output attributes (`output_hidden_states`,
        `output_attentions`, `return_dict`) that have their default value, as transformers does."""
        data = self.to_dict()
        if use_diff:
            data = {k: v for k, v in data.items() if k not in _OUTPUT_DEFAULTS or v != _OUTPUT_DEFAULTS[k]}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        """Write `to_json_string` to a file (atomically: never a half-written file)."""
        from .outputs.atomic import write_bytes_atomic

        write_bytes_atomic(Path(json_file_path), self.to_json_string(use_diff).encode())

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> EomtConfig:
        """Build from a config.json dictionary; keys that do not describe the network are kept aside.

        `overrides` must name fields (anything else is a TypeError naming it): unlike file keys, they
        are what the caller typed, so a misspelling is never stored.
        """
        check_overrides(overrides, f"{cls.__name__}.from_dict()")
        data = {**data, **overrides}
        model_type = data.get("model_type", cls._default_model_type())
        if model_type not in cls.model_types:
            raise ConfigError(_wrong_model_type(model_type, cls.model_types))
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        if model_type != "eomt_dinov3":
            kwargs.pop("rope_parameters", None)
        if "num_labels" in data and "id2label" not in data:
            kwargs["num_labels"] = data["num_labels"]
        if kwargs.get("dtype") is None and data.get("torch_dtype") is not None:  # the name before transformers 4.56
            kwargs["dtype"] = data["torch_dtype"]
        extra = {k: v for k, v in data.items() if k not in known and k not in _HOUSEKEEPING}
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as exc:  # a value of the wrong type, e.g. a string for an int
            raise ConfigError(f"invalid config: {exc}") from None

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> EomtConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: config must be a JSON object")
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs: Any) -> EomtConfig:
        """Read `config.json` from a hub id or a local directory.

        `kwargs`: field overrides and transformers' location arguments (revision, cache_dir,
        local_files_only, token, subfolder, force_download). A missing directory or file is an
        OSError (`CheckpointNotFoundError`), as in transformers.
        """
        from .checkpoints.resolve import HubOptions, resolve_file

        options = HubOptions.pop_from(kwargs)
        check_overrides(kwargs, f"{cls.__name__}.from_pretrained()")
        return cls.from_json_file(resolve_file(source, "config.json", options=options), **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write `save_directory/config.json`; returns its path."""
        path = Path(save_directory) / "config.json"
        self.to_json_file(path)
        return path

    @classmethod
    def _default_model_type(cls) -> str:
        return next(f.default for f in fields(cls) if f.name == "model_type")


def _wrong_model_type(model_type: Any, expected: tuple[str, ...]) -> str:
    if model_type == "videomt":
        return ("model_type 'videomt' is a VidEoMT (video) checkpoint: load it with VideomtForUniversalSegmentation, "
                "or run `eomt predict VIDEO`")
    if "videomt" in expected and model_type in MODEL_TYPES:
        return f"model_type {model_type!r} is an image EoMT checkpoint, not VidEoMT ('videomt')"
    return f"unknown model_type {model_type!r} (expected one of {', '.join(expected)})"


PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")


def _rope_theta(rope_parameters: Any) -> float:
    """rope_theta from transformers' `rope_parameters`; only the default RoPE exists in EoMT."""
    if not isinstance(rope_parameters, dict):
        raise ConfigError(f"rope_parameters must be a JSON object, got {rope_parameters!r}")
    if rope_parameters.get("rope_type", "default") != "default":
        raise ConfigError(f"rope_type {rope_parameters.get('rope_type')!r} is not supported (only 'default')")
    theta = rope_parameters.get("rope_theta", 100.0)
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
        raise ConfigError(f"rope_parameters rope_theta must be a positive number, got {theta!r}")
    return float(theta)


def _torch_dtype(value: Any) -> Any:
    """A torch dtype from itself or its name (`"float16"`, `"torch.float16"`); torch is imported only here."""
    import torch

    if isinstance(value, torch.dtype):
        return value
    found = getattr(torch, value.removeprefix("torch."), None) if isinstance(value, str) else None
    if not isinstance(found, torch.dtype):
        raise ConfigError(f"dtype must be a torch dtype or its name (e.g. 'float32'), got {value!r}")
    return found


_OUTPUT_DEFAULTS = {f.name: f.default for f in fields(EomtConfig)
                    if f.name in ("output_hidden_states", "output_attentions", "return_dict")}


def check_overrides(overrides: dict[str, Any], caller: str) -> None:
    """Keyword arguments meant as config fields must name fields: a TypeError names the others."""
    known = {f.name for f in fields(EomtConfig)} - {"extra"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{caller} got unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
                        "(not a loading argument nor an EomtConfig field)")


@dataclass
class EomtDinov3Config(EomtConfig):
    """EomtConfig for the DINOv3 backbone (`model_type` "eomt_dinov3"), named as in transformers."""

    model_type: str = "eomt_dinov3"

    def __post_init__(self) -> None:
        if self.model_type != "eomt_dinov3":
            raise ConfigError(f"EomtDinov3Config has model_type 'eomt_dinov3', got {self.model_type!r}")
        super().__post_init__()


@dataclass
class VideomtConfig(EomtConfig):
    """The config of VidEoMT (`model_type` "videomt"), as transformers' `VideomtConfig`: EoMT's fields on a
    DINOv2 backbone; the last `num_blocks` blocks carry queries that follow their objects from frame to frame."""

    model_type: str = "videomt"
    model_types: ClassVar[tuple[str, ...]] = ("videomt",)

    def architecture(self) -> str:
        return "VideomtForUniversalSegmentation"
