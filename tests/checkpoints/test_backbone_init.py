"""Initialising EoMT from DINOv2 / DINOv3 backbones, checked against transformers' own backbone models."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

from eomt import CheckpointError, EomtConfig, EomtForUniversalSegmentation
from eomt.checkpoints import build_from_backbone, resample_patch_embed
from eomt.modeling.embeddings import resample_position_embeddings

HIDDEN, HEADS, DEPTH, REGISTERS = 32, 2, 2, 4
# Every comparison of backbone features (float32, a few layers, O(1) activations) allows 1e-4.
ATOL = 1e-4


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Move every weight off its init, so that norms, layer scales and biases are not trivially 1 or 0."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lambda1" in name or re.search(r"norm\d?\.weight$", name):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def dinov2_reference(swiglu: bool = False, seed: int = 0) -> transformers.Dinov2WithRegistersModel:
    torch.manual_seed(seed)
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=HIDDEN, num_hidden_layers=DEPTH, num_attention_heads=HEADS, mlp_ratio=4, image_size=56,
        patch_size=14, num_register_tokens=REGISTERS, use_swiglu_ffn=swiglu, layer_norm_eps=1e-6)
    return perturb(transformers.Dinov2WithRegistersModel(config))


def dinov3_reference(gated: bool = False, seed: int = 0) -> transformers.DINOv3ViTModel:
    torch.manual_seed(seed)
    config = transformers.DINOv3ViTConfig(
        hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=96, image_size=64,
        patch_size=16, num_register_tokens=REGISTERS, use_gated_mlp=gated,  # layer_norm_eps: DINOv3's 1e-5
        hidden_act="silu" if gated else "gelu")
    return perturb(transformers.DINOv3ViTModel(config))


def eomt_config(**overrides) -> EomtConfig:
    values = dict(hidden_size=HIDDEN, num_hidden_layers=DEPTH, num_attention_heads=HEADS, image_size=56,
                  patch_size=14, num_register_tokens=REGISTERS, num_blocks=1, num_queries=5, num_labels=3,
                  layer_norm_eps=1e-6, num_upscale_blocks=1)
    values.update(overrides)
    return EomtConfig(**values)


def backbone_features(model: EomtForUniversalSegmentation, pixels: torch.Tensor) -> torch.Tensor:
    """[CLS | registers | patches] after every block and the final norm, without queries."""
    x = model.embeddings(pixels)
    rope = model.rope_embeddings(*pixels.shape[-2:], x.dtype) if model.rope_embeddings is not None else None
    for block in model.layers:
        x = block(x, None, rope)
    return model.layernorm(x)


def assert_same_features(model: EomtForUniversalSegmentation, reference, size: int) -> None:
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(pixel_values=pixels).last_hidden_state
        ours = backbone_features(model.eval(), pixels)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


def to_timm(state_dict: dict, cls_position: bool = True, mlp_names: tuple[str, str] = ("fc1", "fc2"),
            register_name: str = "reg_token") -> dict:
    """transformers DINOv2 names -> timm names (fused qkv), written out plainly as the test's own oracle."""
    sd = {k: v.clone() for k, v in state_dict.items()}
    out = {"cls_token": sd["embeddings.cls_token"], register_name: sd["embeddings.register_tokens"],
           "mask_token": sd["embeddings.mask_token"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    position = sd["embeddings.position_embeddings"]
    if cls_position:
        out["pos_embed"] = position
    else:  # timm's no_embed_class layout: the CLS position is already summed into the CLS token
        out["pos_embed"] = position[:, 1:]
        out["cls_token"] = out["cls_token"] + position[:, :1]
    for i in range(DEPTH):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}norm1.{kind}"] = sd[f"{src}norm1.{kind}"]
            out[f"{dst}norm2.{kind}"] = sd[f"{src}norm2.{kind}"]
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(
                [sd[f"{src}attention.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
            out[f"{dst}attn.proj.{kind}"] = sd[f"{src}attention.o_proj.{kind}"]
            if f"{src}mlp.gate_proj.{kind}" in sd:
                out[f"{dst}mlp.{mlp_names[0]}.{kind}"] = torch.cat(
                    [sd[f"{src}mlp.gate_proj.{kind}"], sd[f"{src}mlp.up_proj.{kind}"]], dim=0)
                out[f"{dst}mlp.{mlp_names[1]}.{kind}"] = sd[f"{src}mlp.down_proj.{kind}"]
            else:
                out[f"{dst}mlp.fc1.{kind}"] = sd[f"{src}mlp.fc1.{kind}"]
                out[f"{dst}mlp.fc2.{kind}"] = sd[f"{src}mlp.fc2.{kind}"]
        out[f"{dst}ls1.gamma"] = sd[f"{src}layer_scale1.lambda1"]
        out[f"{dst}ls2.gamma"] = sd[f"{src}layer_scale2.lambda1"]
    return out


def to_transformers_4x(state_dict: dict) -> dict:
    """transformers 5 names -> the 4.x names of the hub files (attention.attention.query, mlp.weights_in)."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace("attention.q_proj", "attention.attention.query")
        key = key.replace("attention.k_proj", "attention.attention.key")
        key = key.replace("attention.v_proj", "attention.attention.value")
        key = key.replace("attention.o_proj", "attention.output.dense")
        if ".mlp.gate_proj." in key:
            up = state_dict[key.replace("gate_proj", "up_proj")]
            out[key.replace("gate_proj", "weights_in")] = torch.cat([value, up], dim=0)
        elif ".mlp.up_proj." not in key:
            out[key.replace("mlp.down_proj", "mlp.weights_out")] = value.clone()
    return out


# ---- FlexiViT resampling ----------------------------------------------------------------------


def test_resampled_kernel_embeds_resized_patches_like_the_original():
    g = torch.Generator().manual_seed(0)
    w14 = torch.randn(16, 3, 14, 14, generator=g)
    patches = torch.randn(64, 3, 14, 14, generator=g)
    w16 = resample_patch_embed(w14, 16)
    assert w16.shape == (16, 3, 16, 16) and w16.dtype == w14.dtype
    resized = F.interpolate(patches, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    original = torch.einsum("nchw,dchw->nd", patches, w14)
    flexi = torch.einsum("nchw,dchw->nd", resized, w16)
    # Enlarging the kernel, the pseudo-inverse solves B^T w16 = w14 exactly; what is left is float32
    # rounding of sums of 588 products (embeddings reach ~90, error ~5e-5): 1e-3 absolute is ~1e-5 relative.
    torch.testing.assert_close(flexi, original, atol=1e-3, rtol=0)
    naive = F.interpolate(w14, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    naive_error = (torch.einsum("nchw,dchw->nd", resized, naive) - original).abs().max()
    assert naive_error > 100 * (flexi - original).abs().max()  # resizing the kernel itself is far off


def test_resample_to_the_same_size_is_the_identity():
    w = torch.randn(8, 3, 14, 14)
    assert resample_patch_embed(w, 14) is w


# ---- DINOv2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("swiglu", [False, True], ids=["mlp", "swiglu"])
def test_transformers_directory_gives_transformers_features(tmp_path, swiglu):
    reference = dinov2_reference(swiglu)
    reference.save_pretrained(tmp_path)
    config = eomt_config(use_swiglu_ffn=swiglu)
    torch.manual_seed(7)
    model = build_from_backbone(config, tmp_path)
    assert model.training
    assert_same_features(model, reference, 56)

    torch.manual_seed(7)
    fresh = EomtForUniversalSegmentation(config).state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(("query.", "class_predictor.", "mask_head.", "upscale_block.", "attn_mask_probs")):
            assert torch.equal(value, fresh[key]), key  # heads keep their fresh initialisation


@pytest.mark.parametrize(
    ("swiglu", "cls_position", "mlp_names", "register_name", "suffix", "prefix"),
    [
        (False, True, ("fc1", "fc2"), "reg_token", ".pth", ""),
        (False, False, ("fc1", "fc2"), "reg_token", ".safetensors", "module."),
        (True, True, ("fc1", "fc2"), "reg_token", ".safetensors", ""),
        (True, False, ("w12", "w3"), "register_tokens", ".pth", "backbone."),
    ],
    ids=["mlp-pth", "no-cls-pos-prefixed", "swiglu-fc", "swiglu-w12-original-dinov2"],
)
def test_timm_names_give_transformers_features(tmp_path, swiglu, cls_position, mlp_names, register_name,
                                               suffix, prefix):
    reference = dinov2_reference(swiglu, seed=1)
    timm = to_timm(reference.state_dict(), cls_position, mlp_names, register_name)
    timm = {prefix + k: v.contiguous() for k, v in timm.items()}
    timm["head.weight"] = torch.zeros(10, HIDDEN)  # a classifier outside the backbone is ignored
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        save_file(timm, path)
    else:
        torch.save({"model": timm}, path)
    model = build_from_backbone(eomt_config(use_swiglu_ffn=swiglu), path)
    assert_same_features(model, reference, 56)


@pytest.mark.parametrize("swiglu", [False, True], ids=["mlp", "swiglu"])
def test_transformers_4x_names_with_prefix(tmp_path, swiglu):
    reference = dinov2_reference(swiglu, seed=2)
    state_dict = {f"dinov2.{k}": v for k, v in to_transformers_4x(reference.state_dict()).items()}
    state_dict["classifier.weight"] = torch.zeros(10, 2 * HIDDEN)
    torch.save(state_dict, tmp_path / "pytorch_model.bin")
    model = build_from_backbone(eomt_config(), tmp_path / "pytorch_model.bin", use_swiglu_ffn=swiglu)
    assert model.config.use_swiglu_ffn == swiglu
    assert_same_features(model, reference, 56)


def test_patch_14_checkpoint_initialises_a_patch_16_model_on_another_grid(tmp_path):
    reference = dinov2_reference(seed=3)
    reference.save_pretrained(tmp_path)
    config = eomt_config(patch_size=16, image_size=96, num_upscale_blocks=2)
    model = build_from_backbone(config, tmp_path)

    source = reference.state_dict()
    position = source["embeddings.position_embeddings"][0]
    embeddings = model.embeddings
    assert embeddings.patch_embeddings.projection.weight.shape == (HIDDEN, 3, 16, 16)
    assert embeddings.position_embeddings.weight.shape == (36, HIDDEN)
    torch.testing.assert_close(embeddings.position_embeddings.weight.data,
                               resample_position_embeddings(position[1:], (4, 4), (6, 6)))
    torch.testing.assert_close(embeddings.patch_embeddings.projection.weight.data,
                               resample_patch_embed(source["embeddings.patch_embeddings.projection.weight"], 16))
    torch.testing.assert_close(embeddings.cls_token.data, source["embeddings.cls_token"] + position[:1])

    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 96, 96))
    assert out.masks_queries_logits.shape == (2, 5, 24, 24)
    assert out.class_queries_logits.shape == (2, 5, 4)
    assert torch.isfinite(out.masks_queries_logits).all()


# ---- DINOv3 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("gated", "layer_prefix"), [(False, "model.layer."), (True, "layer.")],
                         ids=["mlp", "gated-short-prefix"])
def test_dinov3_gives_transformers_features(tmp_path, gated, layer_prefix):
    reference = dinov3_reference(gated)
    state_dict = {k.replace("model.layer.", layer_prefix): v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state_dict, tmp_path / "dinov3.safetensors")
    config = EomtConfig(model_type="eomt_dinov3", hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=2,
                        intermediate_size=96, image_size=64, patch_size=16, num_register_tokens=REGISTERS,
                        num_blocks=1, num_queries=5, num_labels=3, use_gated_mlp=gated,
                        hidden_act="silu" if gated else "gelu")
    model = build_from_backbone(config, tmp_path / "dinov3.safetensors")
    # a lone weight file carries no eps: DINOv3's own 1e-5 (not EomtConfig's default 1e-6)
    assert reference.config.layer_norm_eps == 1e-5 and model.config.layer_norm_eps == 1e-5
    assert model.layernorm.eps == 1e-5 and all(layer.norm1.eps == 1e-5 for layer in model.layers)
    assert_same_features(model, reference, 64)
    assert_same_features(model, reference, 96)  # RoPE: another grid needs nothing resampled


def test_backbone_eps_comes_from_its_config_json(tmp_path):
    reference = dinov3_reference()
    reference.config.layer_norm_eps = 3e-5
    reference.save_pretrained(tmp_path)
    config = EomtConfig(model_type="eomt_dinov3", hidden_size=64, num_hidden_layers=DEPTH, num_attention_heads=2,
                        intermediate_size=96, image_size=64, patch_size=16, num_register_tokens=REGISTERS,
                        num_blocks=1, num_queries=5, num_labels=3)
    assert build_from_backbone(config, tmp_path).config.layer_norm_eps == 3e-5
    dinov2 = build_from_backbone(eomt_config(layer_norm_eps=1e-5), _dinov2_file(tmp_path))
    assert dinov2.config.layer_norm_eps == 1e-6  # timm DINOv2 backbones use 1e-6


def _dinov2_file(tmp_path):
    (tmp_path / "timm").mkdir()
    path = tmp_path / "timm" / "dinov2.safetensors"
    save_file({k: v.contiguous() for k, v in dinov2_reference().state_dict().items()}, path)
    return path


# ---- bad inputs -------------------------------------------------------------------------------


def _one_line_error(config: EomtConfig, source) -> str:
    with pytest.raises(CheckpointError) as info:
        build_from_backbone(config, source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_block_tensor_is_named(tmp_path):
    state_dict = dinov2_reference().state_dict()
    del state_dict["encoder.layer.1.mlp.fc2.weight"]
    save_file(state_dict, tmp_path / "model.safetensors")
    assert "'layers.1.mlp.fc2.weight'" in _one_line_error(eomt_config(), tmp_path)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (dict(hidden_size=64), "hidden size is 32, the config has hidden_size=64"),
        (dict(num_hidden_layers=3), "2 blocks, the config has num_hidden_layers=3"),
        (dict(num_register_tokens=0), "4 register tokens"),
        (dict(use_swiglu_ffn=True), "use_swiglu_ffn"),
        (dict(model_type="eomt_dinov3", hidden_act="gelu", intermediate_size=128), "eomt_dinov3"),
    ],
    ids=["hidden", "depth", "registers", "mlp-kind", "variant"],
)
def test_architecture_mismatch_is_one_clear_line(tmp_path, overrides, expected):
    dinov2_reference().save_pretrained(tmp_path)
    assert expected in _one_line_error(eomt_config(**overrides), tmp_path)


def test_file_without_a_backbone_is_refused(tmp_path):
    save_file({"weight": torch.zeros(3)}, tmp_path / "other.safetensors")
    assert "no cls_token" in _one_line_error(eomt_config(), tmp_path / "other.safetensors")
