"""EomtConfig against transformers' EomtConfig / EomtDinov3Config and its own validation."""

from __future__ import annotations

import json

import pytest
import transformers

from eomt import ConfigError, EomtConfig

SEED_FIELDS = [
    "hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "hidden_act", "hidden_dropout_prob",
    "initializer_range", "layer_norm_eps", "image_size", "patch_size", "num_channels", "layerscale_value",
    "drop_path_rate", "num_upscale_blocks", "attention_dropout", "use_swiglu_ffn", "num_blocks", "no_object_weight",
    "class_weight", "mask_weight", "dice_weight", "train_num_points", "oversample_ratio", "importance_sample_ratio",
    "num_queries", "num_register_tokens",
]
DINOV3_FIELDS = ["intermediate_size", "query_bias", "key_bias", "value_bias", "proj_bias", "mlp_bias",
                 "use_gated_mlp", "pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale"]


def test_defaults_equal_the_seed():
    ours, theirs = EomtConfig(), transformers.EomtConfig()
    for name in SEED_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.num_labels == theirs.num_labels


def test_dinov3_defaults_equal_transformers():
    ours, theirs = EomtConfig(model_type="eomt_dinov3"), transformers.EomtDinov3Config()
    for name in [n for n in SEED_FIELDS if n not in ("mlp_ratio", "use_swiglu_ffn")] + DINOV3_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] == 100.0


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_config_json_reads_and_writes_both_ways(tmp_path, kind):
    cls = transformers.EomtDinov3Config if kind == "eomt_dinov3" else transformers.EomtConfig
    theirs = cls(hidden_size=96, num_hidden_layers=5, num_attention_heads=3, num_blocks=3, num_queries=50,
                 image_size=512, id2label={0: "cat", 1: "dog", 2: "sky"}, layer_norm_eps=1e-5)
    theirs.save_pretrained(tmp_path / "theirs")
    ours = EomtConfig.from_pretrained(tmp_path / "theirs")
    assert ours.model_type == kind and ours.num_labels == 3 and ours.id2label == {0: "cat", 1: "dog", 2: "sky"}
    assert ours.label2id == {"cat": 0, "dog": 1, "sky": 2}
    ours.save_pretrained(tmp_path / "ours")
    back = cls.from_pretrained(tmp_path / "ours")
    names = SEED_FIELDS if kind == "eomt" else [n for n in SEED_FIELDS if n not in ("mlp_ratio", "use_swiglu_ffn")]
    for name in names + (DINOV3_FIELDS if kind == "eomt_dinov3" else []):
        assert getattr(back, name) == getattr(theirs, name), name
    assert back.id2label == theirs.id2label and back.model_type == kind
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert ("rope_parameters" in written) == (kind == "eomt_dinov3")
    assert ("mlp_ratio" in written) == (kind == "eomt")


def test_overrides_apply_on_read(tmp_path):
    EomtConfig(num_labels=5).save_pretrained(tmp_path)
    config = EomtConfig.from_pretrained(tmp_path, num_queries=10)
    assert config.num_queries == 10 and config.num_labels == 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=100, num_attention_heads=3), "not divisible by num_attention_heads"),
    (dict(num_blocks=30), "num_blocks must be between 1 and num_hidden_layers (24)"),
    (dict(image_size=650), "not a multiple of patch_size 16"),
    (dict(model_type="mask2former"), "unknown model_type 'mask2former'"),
    (dict(hidden_act="swish2"), "hidden_act 'swish2'"),
    (dict(drop_path_rate=1.5), "drop_path_rate must be in [0, 1]"),
])
def test_invalid_values_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        EomtConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_broken_config_file_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        EomtConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)
