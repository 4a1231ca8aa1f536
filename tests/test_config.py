"""EomtConfig against transformers' EomtConfig / EomtDinov3Config and its own validation."""

from __future__ import annotations

import json

import pytest
import transformers

from eomt import ConfigError, EomtConfig, EomtDinov3Config

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


# ---- transformers' ConfigTester, ported: json string / file, save / from_pretrained, num_labels -------------

TESTER_INPUTS = dict(image_size=40, patch_size=2, num_labels=4, hidden_size=8, num_attention_heads=2,
                     num_hidden_layers=4, num_register_tokens=19, num_queries=5, num_blocks=1)


@pytest.fixture(params=["eomt", "eomt_dinov3"])
def config_classes(request):
    """(our class, transformers' class) of one variant."""
    if request.param == "eomt_dinov3":
        return EomtDinov3Config, transformers.EomtDinov3Config
    return EomtConfig, transformers.EomtConfig


def test_config_common_tests(tmp_path, config_classes):
    ours_cls, theirs_cls = config_classes
    config = ours_cls(**TESTER_INPUTS)
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
        assert hasattr(config, name)
    written = json.loads(config.to_json_string())
    assert all(written[key] == value for key, value in TESTER_INPUTS.items() if key != "num_labels")
    assert len(written["id2label"]) == 4
    config.to_json_file(tmp_path / "config.json")
    assert ours_cls.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    assert ours_cls.from_pretrained(tmp_path / "saved").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "nested" / "sub")
    assert ours_cls.from_pretrained(tmp_path / "nested", subfolder="sub").to_dict() == config.to_dict()
    assert ours_cls().to_dict() == ours_cls.from_dict(ours_cls().to_dict()).to_dict()  # init without params
    # transformers reads what we write, and we read what it writes
    theirs = theirs_cls.from_json_file(tmp_path / "config.json")
    assert all(getattr(theirs, key) == value for key, value in TESTER_INPUTS.items())
    theirs_cls(**TESTER_INPUTS).to_json_file(tmp_path / "theirs.json")
    assert ours_cls.from_json_file(tmp_path / "theirs.json").to_dict() == config.to_dict()


def test_setting_num_labels_resizes_the_label_maps_as_in_transformers(config_classes):
    ours_cls, theirs_cls = config_classes
    inputs = {**TESTER_INPUTS, "num_labels": 5}
    ours, theirs = ours_cls(**inputs), theirs_cls(**inputs)
    assert len(ours.id2label) == len(ours.label2id) == 5
    ours.num_labels, theirs.num_labels = 3, 3
    assert ours.id2label == theirs.id2label and ours.label2id == theirs.label2id and ours.num_labels == 3
    ours.id2label = {0: "cat", 1: "dog"}
    assert ours.num_labels == 2 and ours.label2id == {"cat": 0, "dog": 1}
    with pytest.raises(ConfigError, match="num_labels must be a positive integer"):
        ours.num_labels = 0


def test_output_attributes_round_trip_with_transformers(tmp_path):
    ours = EomtConfig(output_hidden_states=True, output_attentions=True, return_dict=False)
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.EomtConfig.from_pretrained(tmp_path / "ours")
    assert theirs.output_hidden_states and theirs.output_attentions and theirs.return_dict is False
    transformers.EomtConfig(return_dict=False).save_pretrained(tmp_path / "theirs")
    back = EomtConfig.from_pretrained(tmp_path / "theirs")
    assert back.return_dict is False and back.output_hidden_states is False
    # defaults are left out of the file (as transformers does), unless use_diff=False
    assert "return_dict" not in json.loads(EomtConfig().to_json_string())
    assert json.loads(EomtConfig().to_json_string(use_diff=False))["return_dict"] is True


def test_dinov3_config_is_the_dinov3_variant(tmp_path):
    import eomt

    assert eomt.EomtDinov3Config is EomtDinov3Config
    config = EomtDinov3Config(hidden_size=64, num_attention_heads=4)
    assert config.model_type == "eomt_dinov3" and config.is_dinov3 and isinstance(config, EomtConfig)
    assert config.to_dict()["architectures"] == ["EomtDinov3ForUniversalSegmentation"]
    with pytest.raises(ConfigError, match="model_type 'eomt_dinov3'"):
        EomtDinov3Config(model_type="eomt")
    EomtConfig().save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="model_type 'eomt_dinov3'"):
        EomtDinov3Config.from_pretrained(tmp_path)


def test_unknown_keywords_are_type_errors_naming_them(tmp_path):
    with pytest.raises(TypeError, match="hiden_size"):
        EomtConfig(hiden_size=8)
    with pytest.raises(TypeError, match="'hiden_size'"):
        EomtConfig.from_dict({}, hiden_size=8)
    EomtConfig().save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="'device_map'"):
        EomtConfig.from_pretrained(tmp_path, device_map="cpu")
    # keys written by other tools into a config.json are kept (not a typing mistake of the caller)
    data = json.loads((tmp_path / "config.json").read_text())
    assert EomtConfig.from_dict({**data, "task": "panoptic"}).to_dict()["task"] == "panoptic"


def test_missing_config_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        EomtConfig.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(OSError, match="no config.json"):
        EomtConfig.from_pretrained(tmp_path)
