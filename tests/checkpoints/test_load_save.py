"""Loading and saving every checkpoint format, against transformers as the reference loader."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from helpers import make_reference, save_reference, to_authors_format, write_hub_cache
from safetensors.torch import load_file, save_file

from eomt import CheckpointError, EomtForUniversalSegmentation


def _outputs(model, pixels):
    with torch.inference_mode():
        out = model(pixel_values=pixels) if isinstance(model, transformers.PreTrainedModel) else model(pixels)
    return out.class_queries_logits, out.masks_queries_logits


def _assert_same(a, b, atol=1e-5):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("kind, overrides", [
    ("eomt", {}),
    ("eomt", dict(use_swiglu_ffn=True, hidden_size=48, num_attention_heads=3)),
    ("eomt_dinov3", dict(hidden_size=64, num_attention_heads=4)),
    ("eomt_dinov3", dict(hidden_size=64, num_attention_heads=4, use_gated_mlp=True)),
])
def test_transformers_dir_round_trip(tmp_path, kind, overrides):
    """transformers dir -> ours -> save_pretrained -> transformers loads -> same outputs."""
    ref = make_reference(kind, **overrides)
    ours = EomtForUniversalSegmentation.from_pretrained(save_reference(ref, tmp_path / "ref", probs=0.0))
    ours.save_pretrained(tmp_path / "ours")
    cls = type(ref)
    reloaded = cls.from_pretrained(tmp_path / "ours").eval()
    pixels = torch.randn(2, 3, 64, 64)
    _assert_same(_outputs(reloaded, pixels), _outputs(ref, pixels))
    _assert_same(_outputs(ours, pixels), _outputs(ref, pixels), atol=1e-4)
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["model_type"] == kind
    assert sorted(load_file(tmp_path / "ours" / "model.safetensors")) == sorted(
        load_file(tmp_path / "ref" / "model.safetensors"))


def test_sharded_directory_loads(tmp_path):
    ref = make_reference("eomt")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ours = EomtForUniversalSegmentation.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    ours.attn_mask_probs.fill_(1.0)
    _assert_same(_outputs(ours, pixels), _outputs(ref, pixels), atol=1e-4)


def test_transformers_5_0_swiglu_names_load(tmp_path):
    """transformers 5.0 stored SwiGLU as mlp.weights_in ([gate; up]) and mlp.weights_out."""
    ref = make_reference("eomt", use_swiglu_ffn=True, hidden_size=48, num_attention_heads=3)
    save_reference(ref, tmp_path, probs=0.0)
    state = load_file(tmp_path / "model.safetensors")
    old = {}
    for key, value in state.items():
        if m := re.match(r"(layers\.\d+\.mlp)\.gate_proj\.(weight|bias)", key):
            old[f"{m[1]}.weights_in.{m[2]}"] = torch.cat([value, state[f"{m[1]}.up_proj.{m[2]}"]])
        elif ".mlp.up_proj." not in key:
            old[key.replace(".mlp.down_proj.", ".mlp.weights_out.")] = value
    save_file(old, tmp_path / "model.safetensors")
    ours = EomtForUniversalSegmentation.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    _assert_same(_outputs(ours, pixels), _outputs(ref, pixels), atol=1e-4)


@pytest.mark.parametrize("container", ["bin", "lightning_ckpt", "compiled_ckpt"])
@pytest.mark.parametrize("overrides", [dict(hidden_size=128, num_attention_heads=2),
                                       dict(use_swiglu_ffn=True, hidden_size=128, num_attention_heads=2),
                                       dict(num_register_tokens=0, num_blocks=3, num_queries=9,
                                            hidden_size=128, num_attention_heads=2)])
def test_authors_checkpoint_loads_with_inferred_config(tmp_path, container, overrides):
    ref = make_reference("eomt", **overrides)
    ref.attn_mask_probs.zero_()
    state = to_authors_format(ref.state_dict())
    if container == "bin":
        path = tmp_path / "pytorch_model.bin"
        torch.save(state, path)
    else:
        if container == "compiled_ckpt":
            state = {k.replace("network.", "network._orig_mod.", 1): v for k, v in state.items()}
        path = tmp_path / "last.ckpt"
        torch.save({"state_dict": state, "epoch": 3, "global_step": 100}, path)
    ours = EomtForUniversalSegmentation.from_pretrained(path)  # 64-wide heads, as DINOv2's, are inferred
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_queries", "num_labels",
                  "num_blocks", "num_register_tokens", "use_swiglu_ffn", "image_size", "patch_size"):
        assert getattr(ours.config, field) == getattr(ref.config, field), field
    pixels = torch.randn(2, 3, 64, 64)
    _assert_same(_outputs(ours, pixels), _outputs(ref, pixels), atol=1e-4)


def _run_offline(cache: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_hub_id_loads_from_cache_offline(tmp_path):
    ref = make_reference("eomt")
    save_reference(ref, tmp_path / "src", probs=0.0)
    write_hub_cache(tmp_path / "hub", "tue-mps/tiny-test-eomt", tmp_path / "src")
    pixels = torch.randn(1, 3, 64, 64)
    torch.save(pixels, tmp_path / "pixels.pt")
    code = f"""
import torch
from eomt import EomtForUniversalSegmentation
model = EomtForUniversalSegmentation.from_pretrained("tue-mps/tiny-test-eomt")
with torch.inference_mode():
    out = model(torch.load({str(tmp_path / 'pixels.pt')!r}))
torch.save(out.class_queries_logits, {str(tmp_path / 'out.pt')!r})
"""
    result = _run_offline(tmp_path / "hub", code)
    assert result.returncode == 0, result.stderr
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), _outputs(ref, pixels)[0], atol=1e-4, rtol=0)


def test_hub_id_missing_offline_says_so(tmp_path):
    (tmp_path / "hub").mkdir()
    code = """
from eomt import EomtForUniversalSegmentation, CheckpointError
try:
    EomtForUniversalSegmentation.from_pretrained("tue-mps/not-downloaded")
except CheckpointError as exc:
    print(exc)
"""
    result = _run_offline(tmp_path / "hub", code)
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "HF_HUB_OFFLINE=1 forbids downloads" in message and "local directory" in message and "\n" not in message
    assert "--model" not in message


# ---- bad input: one line naming the file and the problem ------------------------------------------------


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_unknown_model_type(tmp_path):
    save_reference(make_reference("eomt"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "maskformer"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(tmp_path)
    assert "unknown model_type 'maskformer'" in _one_line(err)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.ckpt"])
def test_truncated_checkpoint(tmp_path, name):
    ref = make_reference("eomt")
    path = tmp_path / name
    torch.save(to_authors_format(ref.state_dict()), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(path)
    message = _one_line(err)
    assert str(path) in message and "truncated or not a checkpoint" in message


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(path)
    assert "not a checkpoint" in _one_line(err)


def test_truncated_safetensors(tmp_path):
    save_reference(make_reference("eomt"), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(tmp_path)
    assert "model.safetensors" in _one_line(err)


def test_missing_tensor_is_named(tmp_path):
    save_reference(make_reference("eomt"), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["layers.1.mlp.fc1.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(tmp_path)
    assert "missing tensor(s) 'layers.1.mlp.fc1.weight'" in _one_line(err)


def test_misshaped_tensor_is_named(tmp_path):
    save_reference(make_reference("eomt"), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["query.weight"] = torch.zeros(3, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(tmp_path)
    assert "'query.weight' has shape (3, 32), the model expects (6, 32)" in _one_line(err)


def test_unexpected_tensor_is_named(tmp_path):
    save_reference(make_reference("eomt"), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["decoder.extra"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(tmp_path)
    assert "unexpected tensor(s) 'decoder.extra'" in _one_line(err)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"network.q.weight": torch.zeros(2, 2), "evil": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(path)
    assert "refused" in _one_line(err) and str(path) in _one_line(err)
    assert not marker.exists()


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError) as err:
        EomtForUniversalSegmentation.from_pretrained(tmp_path / "nowhere" / "model")
    assert "no such file or directory" in _one_line(err)


def test_loaded_model_without_probs_is_inference_ready(tmp_path):
    save_reference(make_reference("eomt"), tmp_path, probs=1.0)
    state = load_file(tmp_path / "model.safetensors")
    del state["attn_mask_probs"], state["criterion.empty_weight"]
    save_file(state, tmp_path / "model.safetensors")
    model = EomtForUniversalSegmentation.from_pretrained(tmp_path)
    assert model.attn_mask_probs.tolist() == [0.0, 0.0]
    assert not model.training


def test_authors_checkpoint_with_narrow_heads_takes_an_override(tmp_path):
    ref = make_reference("eomt")  # 16-wide heads: shapes cannot tell the head count
    ref.attn_mask_probs.zero_()
    torch.save(to_authors_format(ref.state_dict()), tmp_path / "pytorch_model.bin")
    ours = EomtForUniversalSegmentation.from_pretrained(tmp_path / "pytorch_model.bin", num_attention_heads=2)
    pixels = torch.randn(1, 3, 64, 64)
    _assert_same(_outputs(ours, pixels), _outputs(ref, pixels), atol=1e-4)
