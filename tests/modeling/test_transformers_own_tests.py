"""transformers' own EoMT model tests, run on eomt: the test methods of tests/models/eomt/test_modeling_eomt.py
and tests/models/eomt_dinov3/test_modeling_eomt_dinov3.py (transformers 5.x) that do not need hub weights.

Each test here does what its namesake there does, through the same machinery a user's transformers code
touches: `Model._from_config(config, attn_implementation="eager")`, `config.is_encoder_decoder`,
`config.sub_configs`, `for key in config` / `key in config` (transformers' `_config_zero_init` zeroes every
`*initializer_range*` / `*_std*` attribute it finds that way), `config.get_text_config()`, and ConfigTester's
common checks (PretrainedConfig's common keyword arguments included). Running transformers' files
themselves needs their test utilities (tests/test_modeling_common.py, ...), which are not installed; the
README says how they were run with only the imports swapped.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from eomt import EomtConfig, EomtDinov3Config, EomtDinov3ForUniversalSegmentation, EomtForUniversalSegmentation

# the two model testers: 20x20 patches of 2 px, 19 registers, 5 queries in one query block, 4 labels
COMMON = dict(image_size=40, patch_size=2, num_queries=5, num_register_tokens=19, num_labels=4, hidden_size=8,
              num_attention_heads=2, num_blocks=1)
TESTERS = {
    "eomt": (EomtConfig, EomtForUniversalSegmentation, dict(COMMON, num_hidden_layers=4)),
    "eomt_dinov3": (EomtDinov3Config, EomtDinov3ForUniversalSegmentation,
                    dict(COMMON, num_hidden_layers=2, rope_parameters={"rope_theta": 100.0})),
}
# ConfigTester.check_config_arguments_init: PretrainedConfig keywords every config must take and keep
CONFIG_COMMON_KWARGS = {
    "return_dict": False, "output_hidden_states": True, "output_attentions": True, "dtype": "float16",
    "chunk_size_feed_forward": 5, "architectures": ["BertModel"], "id2label": {0: "label"},
    "label2id": {"label": "0"}, "problem_type": "regression",
}


@pytest.fixture(params=list(TESTERS))
def tester(request):
    config_class, model_class, kwargs = TESTERS[request.param]
    return config_class, model_class, config_class(**kwargs)


def _zero_init(config):
    """What transformers' `_config_zero_init` does: a copy whose init ranges, found by iterating it, are ~0."""
    zeroed = copy.deepcopy(config)
    for key in list(zeroed):
        if any(part in key for part in ("init_range", "initializer_range", "_std", "initializer_factor")) or (
                "layer_scale" in key and key != "use_layer_scale"):
            setattr(zeroed, key, 1e-10)
        if key in zeroed.sub_configs:
            setattr(zeroed, key, _zero_init(getattr(zeroed, key)))
    return zeroed


def test_config(tmp_path, tester):
    config_class, _, _ = tester
    assert config_class.sub_configs == {} and config_class().is_encoder_decoder is False
    config = config_class()
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers"):  # no sub_configs: the common three
        assert hasattr(config, name) and name in config
    assert "vocab_size" not in config and config.get_text_config() is config
    config.to_json_file(tmp_path / "config.json")
    assert config_class.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved" / "test")
    assert config_class.from_pretrained(tmp_path / "saved" / "test").to_dict() == config.to_dict()
    assert config_class.from_pretrained(tmp_path / "saved", subfolder="test").to_dict() == config.to_dict()
    with pytest.raises(OSError):
        config_class.from_pretrained(tmp_path / "missing")
    labelled = config_class(num_labels=5)
    assert len(labelled.id2label) == len(labelled.label2id) == 5
    labelled.num_labels = 3
    assert len(labelled.id2label) == len(labelled.label2id) == 3
    # check_config_arguments_init: every common keyword is taken and kept as given (dtype as a torch dtype)
    common = config_class(**copy.deepcopy(CONFIG_COMMON_KWARGS))
    wrong = {key: getattr(common, key) for key, value in CONFIG_COMMON_KWARGS.items()
             if key != "dtype" and getattr(common, key) != value}
    assert wrong == {} and common.dtype == torch.float16
    # ... and written to and read from config.json
    common.save_pretrained(tmp_path / "common")
    written = json.loads((tmp_path / "common" / "config.json").read_text())
    assert written["dtype"] == "float16" and written["problem_type"] == "regression"
    assert written["chunk_size_feed_forward"] == 5 and written["architectures"] == ["BertModel"]
    assert config_class.from_pretrained(tmp_path / "common").to_dict() == common.to_dict()


def test_model_with_labels(tester):
    _, model_class, config = tester
    inputs = dict(pixel_values=torch.randn(2, 3, 40, 40), mask_labels=torch.randn(2, 10, 40, 40),
                  class_labels=torch.zeros(2, 10, dtype=torch.long))
    assert model_class(config)(**inputs).loss is not None


def test_attention_outputs(tester):
    _, model_class, config = tester
    layers = config.num_hidden_layers
    pixels = torch.rand(2, 3, 40, 40)
    config.return_dict = True
    model = model_class._from_config(config, attn_implementation="eager")
    assert model.config is not config and model.config == config  # a copy, as transformers makes
    config = model.config
    with torch.no_grad():
        assert len(model.eval()(pixels, output_attentions=True, output_hidden_states=False).attentions) == layers
    config.output_attentions = True  # now through the config
    with torch.no_grad():
        outputs = model_class(config).eval()(pixels)
    assert len(outputs.attentions) == layers
    with torch.no_grad():
        both = model_class(config).eval()(pixels, output_attentions=True, output_hidden_states=True)
    assert len(both) == len(outputs) + 1 and len(both.attentions) == layers  # attentions stay last


def test_hidden_states_output(tester):
    _, model_class, config = tester
    pixels = torch.rand(2, 3, 40, 40)
    for through_config in (False, True):
        config.output_hidden_states = through_config
        with torch.no_grad():
            outputs = model_class(config).eval()(pixels, **({} if through_config else {"output_hidden_states": True}))
        hidden_states = outputs.encoder_hidden_states if config.is_encoder_decoder else outputs.hidden_states
        assert len(hidden_states) == config.num_hidden_layers + 1


def test_training(tester):
    _, model_class, config = tester
    config.return_dict = True
    model = model_class(config).train()
    masks = (torch.rand(2, 4, 40, 40) > 0.5).float()
    classes = (torch.rand(2, 4) > 0.5).long()
    model(torch.rand(2, 3, 40, 40), mask_labels=masks, class_labels=classes).loss.backward()
    assert all(p.grad is not None for p in model.class_predictor.parameters())


NON_UNIFORM = ("layernorm.bias", "layernorm.weight", "norm1.bias", "norm1.weight", "norm2.bias", "norm2.weight",
               "layer_scale1.lambda1", "layer_scale2.lambda1", "register_tokens", "cls_token")


def test_initialization(tester):
    _, model_class, config = tester
    zeroed = _zero_init(config)
    assert zeroed.initializer_range == 1e-10 and config.initializer_range == 0.02
    for name, param in model_class(config=zeroed).named_parameters():
        mean = ((param.data.mean() * 1e9).round() / 1e9).item()
        if any(part in name for part in NON_UNIFORM):
            assert mean in (0.0, 1.0), name
        else:
            assert -1.0 <= mean <= 1.0, name


# ---- the machinery itself ------------------------------------------------------------------------------

def test_from_config_arguments():
    config = EomtConfig(**TESTERS["eomt"][2])
    model = EomtForUniversalSegmentation._from_config(config, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.config.dtype == torch.bfloat16 and config.dtype is None
    with pytest.raises(ValueError, match="'flash_attention_2' is not supported"):
        EomtForUniversalSegmentation._from_config(config, attn_implementation="flash_attention_2")
    with pytest.raises(TypeError):
        EomtForUniversalSegmentation._from_config(config, unknown=1)


def test_iteration_lists_the_attributes_and_rope_parameters_follow_rope_theta():
    config = EomtDinov3Config(rope_parameters={"rope_theta": 50.0})
    keys = list(config)
    assert "rope_theta" in keys and "extra" not in keys and "extra" not in config
    assert config.rope_theta == 50.0
    config.rope_theta = 25.0
    assert config.rope_parameters == {"rope_theta": 25.0, "rope_type": "default"}
    with pytest.raises(ValueError, match="rope_type 'linear' is not supported"):
        EomtDinov3Config(rope_parameters={"rope_type": "linear"})
    with pytest.raises(ValueError, match="DINOv3 setting"):
        EomtConfig(rope_parameters={"rope_theta": 100.0})
    with pytest.raises(ValueError, match="dtype must be a torch dtype"):
        EomtConfig(dtype="float17")
