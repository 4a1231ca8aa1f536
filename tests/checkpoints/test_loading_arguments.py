"""The `from_pretrained` arguments transformers users pass: dtype, device_map, hub location, loading info.

Hub arguments are shown on caches laid out as huggingface_hub lays them out, read with
`local_files_only=True` (no network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import transformers
from helpers import make_reference, save_reference, write_hub_cache
from safetensors.torch import load_file, save_file

from eomt import CheckpointError, EomtConfig, EomtForUniversalSegmentation
from eomt.checkpoints import placement


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    save_reference(make_reference("eomt"), directory, probs=0.0)
    return directory


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argument, value, expected", [
    ("dtype", torch.bfloat16, torch.bfloat16),
    ("torch_dtype", torch.float16, torch.float16),
    ("dtype", "bfloat16", torch.bfloat16),
    ("torch_dtype", "float16", torch.float16),
    ("dtype", None, torch.float32),
])
def test_dtype_is_applied_like_transformers(saved, argument, value, expected):
    ours = EomtForUniversalSegmentation.from_pretrained(saved, **{argument: value})
    theirs = transformers.EomtForUniversalSegmentation.from_pretrained(saved, **{argument: value})
    assert {p.dtype for p in ours.parameters()} == {expected} == {p.dtype for p in theirs.parameters()}
    assert ours.dtype == expected
    pixels = torch.randn(1, 3, 64, 64, dtype=expected)
    with torch.inference_mode():
        a, b = ours(pixels).class_queries_logits, theirs(pixel_values=pixels).class_queries_logits
    assert a.dtype == b.dtype == expected
    torch.testing.assert_close(a.float(), b.float(), atol=0.05 if expected != torch.float32 else 1e-4, rtol=0)


def test_dtype_auto_is_the_stored_dtype(tmp_path, saved):
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
             for k, v in load_file(saved / "model.safetensors").items()}
    (tmp_path / "config.json").write_bytes((saved / "config.json").read_bytes())
    save_file(state, tmp_path / "model.safetensors")
    assert EomtForUniversalSegmentation.from_pretrained(tmp_path, dtype="auto").dtype == torch.bfloat16
    assert EomtForUniversalSegmentation.from_pretrained(tmp_path).dtype == torch.float32


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="float8"), "dtype 'float8' is not one of"),
    (dict(dtype=torch.int64), "floating-point torch dtype"),
    (dict(dtype=torch.float16, torch_dtype=torch.bfloat16), "disagree"),
    (dict(device_map="gpu"), "device_map 'gpu' is not a device"),
    (dict(device_map={"layers": "cpu", "query": "meta"}), "one device"),
])
def test_bad_placement_is_a_one_line_error_before_reading(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as err:  # tmp_path holds no model: nothing is read before the check
        EomtForUniversalSegmentation.from_pretrained(tmp_path, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_misspelled_keyword_is_a_type_error_and_changes_no_file(tmp_path, saved):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for file in saved.iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    before = _snapshot(tmp_path)
    for typo in ("devcie_map", "torch_dtpye", "num_label"):
        with pytest.raises(TypeError, match=repr(typo)):
            EomtForUniversalSegmentation.from_pretrained(model_dir, **{typo: "cpu"})
    with pytest.raises(TypeError, match="'attn_implementation'"):  # a transformers argument eomt has no use for
        EomtForUniversalSegmentation.from_pretrained(model_dir, attn_implementation="eager")
    with pytest.raises(TypeError, match="'hiden_size'"):
        EomtConfig.from_pretrained(model_dir, hiden_size=8)
    assert _snapshot(tmp_path) == before
    # a real override still applies and is saved; loading arguments are never written into config.json,
    # but the dtype the file recorded (transformers writes one) now says what the saved weights are
    model = EomtForUniversalSegmentation.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cpu",
                                                         local_files_only=True, num_queries=6)
    model.save_pretrained(tmp_path / "saved")
    written = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "device_map" not in written and "local_files_only" not in written
    assert written["num_queries"] == 6 and written["dtype"] == "bfloat16"


def test_device_map_on_this_machine(saved):
    for device_map in ("cpu", "auto", {"": "cpu"}, torch.device("cpu")):
        model = EomtForUniversalSegmentation.from_pretrained(saved, device_map=device_map)
        if device_map == "auto" and torch.cuda.is_available():
            assert model.device.type == "cuda"
        else:
            assert model.device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            EomtForUniversalSegmentation.from_pretrained(saved, device_map="cuda:0")


def test_device_map_resolves_to_one_cuda_device(monkeypatch):
    """The CPU twin of the CUDA placement: what each device_map resolves to on a 2-GPU machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert placement.parse_device_map("auto") == torch.device("cuda", 0)
    assert placement.parse_device_map("balanced") == torch.device("cuda", 0)
    assert placement.parse_device_map("cuda") == torch.device("cuda")
    assert placement.parse_device_map("cuda:1") == torch.device("cuda", 1)
    assert placement.parse_device_map(1) == torch.device("cuda", 1)
    assert placement.parse_device_map({"": 0}) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="2 CUDA device"):
        placement.parse_device_map("cuda:2")
    with pytest.raises(ValueError, match="one device"):
        placement.parse_device_map({"layers.0": 0, "layers.1": 1})


def test_local_subfolder(tmp_path, saved):
    (tmp_path / "sub").mkdir()
    for file in saved.iterdir():
        (tmp_path / "sub" / file.name).write_bytes(file.read_bytes())
    model = EomtForUniversalSegmentation.from_pretrained(tmp_path, subfolder="sub")
    assert EomtConfig.from_pretrained(tmp_path, subfolder="sub").num_queries == model.config.num_queries
    with pytest.raises(OSError, match="no config.json"):
        EomtForUniversalSegmentation.from_pretrained(tmp_path, subfolder="elsewhere")


def test_hub_cache_dir_revision_and_subfolder(tmp_path, saved):
    """cache_dir, revision (a branch or a commit), subfolder and local_files_only reach huggingface_hub."""
    cache = tmp_path / "cache"
    write_hub_cache(cache, "org/eomt-tiny", saved)
    other = tmp_path / "other"
    save_reference(make_reference("eomt", seed=5, num_queries=8), other, probs=0.0)
    commit = write_hub_cache(cache, "org/eomt-tiny", other, revision="v2")
    write_hub_cache(cache, "org/eomt-tiny", other, revision="v2", subfolder="nested")
    hub = dict(cache_dir=cache, local_files_only=True)

    main = EomtForUniversalSegmentation.from_pretrained("org/eomt-tiny", **hub)
    v2 = EomtForUniversalSegmentation.from_pretrained("org/eomt-tiny", revision="v2", **hub)
    by_commit = EomtForUniversalSegmentation.from_pretrained("org/eomt-tiny", revision=commit, **hub)
    nested = EomtForUniversalSegmentation.from_pretrained("org/eomt-tiny", revision="v2", subfolder="nested", **hub)
    assert main.config.num_queries == 6 and v2.config.num_queries == 8
    for model in (by_commit, nested):
        assert torch.equal(model.query.weight, v2.query.weight)
    assert EomtConfig.from_pretrained("org/eomt-tiny", revision="v2", **hub).num_queries == 8
    with pytest.raises(OSError, match="local_files_only=True forbids downloads"):
        EomtForUniversalSegmentation.from_pretrained("org/eomt-tiny", revision="v3", **hub)
    with pytest.raises(OSError):
        EomtForUniversalSegmentation.from_pretrained("org/not-cached", **hub)


def test_token_and_force_download_are_passed_to_huggingface_hub(tmp_path, saved, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append(kwargs)
        path = saved / filename
        if not path.exists():
            raise huggingface_hub.errors.EntryNotFoundError(filename)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    EomtForUniversalSegmentation.from_pretrained("org/private", token="hf_secret", force_download=True)
    assert calls and all(c["token"] == "hf_secret" and c["force_download"] is True for c in calls)


def test_output_loading_info(tmp_path, saved):
    model, info = EomtForUniversalSegmentation.from_pretrained(saved, output_loading_info=True)
    assert isinstance(model, EomtForUniversalSegmentation)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    _, theirs = transformers.EomtForUniversalSegmentation.from_pretrained(saved, output_loading_info=True)
    assert set(info) <= set(theirs) and not theirs["missing_keys"] and not theirs["unexpected_keys"]

    state = load_file(saved / "model.safetensors")
    del state["attn_mask_probs"]
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_bytes((saved / "config.json").read_bytes())
    _, info = EomtForUniversalSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == ["attn_mask_probs"]

    _, info = EomtForUniversalSegmentation.from_pretrained(saved, output_loading_info=True, num_labels=9,
                                                           reinit_class_head=True)
    assert set(info["missing_keys"]) == {"class_predictor.weight", "class_predictor.bias", "criterion.empty_weight"}
    assert ("class_predictor.weight", (5, 32), (10, 32)) in info["mismatched_keys"]


def test_missing_directory_is_an_os_error_and_a_checkpoint_error(tmp_path):
    for load in (EomtForUniversalSegmentation.from_pretrained, EomtConfig.from_pretrained):
        with pytest.raises(OSError) as err:
            load(tmp_path / "nowhere")
        assert isinstance(err.value, CheckpointError) and "no such file or directory" in str(err.value)
    with pytest.raises(OSError):  # transformers raises OSError for the same call
        transformers.EomtConfig.from_pretrained(tmp_path / "nowhere")


def test_loading_skips_random_initialisation_and_restores_torch_init(saved, tmp_path):
    """The file's weights replace every parameter, so none is drawn first: the global random stream is
    untouched by loading (and a ViT-L loads seconds faster); nn.init works normally afterwards, also
    after a failed load."""
    init_uniform = torch.nn.init.uniform_
    state = torch.random.get_rng_state()
    model = EomtForUniversalSegmentation.from_pretrained(saved)
    assert torch.equal(torch.random.get_rng_state(), state)
    reference = load_file(saved / "model.safetensors")
    assert torch.equal(model.query.weight, reference["query.weight"])
    with pytest.raises(CheckpointError):
        EomtForUniversalSegmentation.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((saved / "config.json").read_text())
    save_file({"query.weight": reference["query.weight"]}, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(CheckpointError):
        EomtForUniversalSegmentation.from_pretrained(tmp_path / "bad")
    assert torch.nn.init.uniform_ is init_uniform
    assert torch.nn.init.uniform_(torch.zeros(1000), 1.0, 2.0).min() >= 1.0
