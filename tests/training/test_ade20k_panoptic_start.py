"""The ADE20K-panoptic presets start from a COCO-panoptic EoMT: offline, from a local copy."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from ade20k_fixture import write_ade20k_panoptic

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import main

FAST = ["train.max_steps=2", "train.devices=1", "train.accelerator=cpu", "train.precision=32-true",
        "train.batch_size=2", "data.num_workers=0", "data.crop_size=64", "model.config.image_size=64",
        "train.eval_limit=1", "train.warmup=1", "train.backbone_warmup=1", "train.lr=1.0e-12"]


def _coco_checkpoint(directory):
    """A tiny stand-in for tue-mps/coco_panoptic_eomt_large_640: 133 classes, 4 query blocks, finished."""
    torch.manual_seed(0)
    config = EomtConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, num_blocks=4, num_queries=6,
                        image_size=64, num_labels=133)
    model = EomtForUniversalSegmentation(config)
    model.attn_mask_probs.zero_()
    model.save_pretrained(directory)
    return model


def test_ade20k_panoptic_recipe_fine_tunes_a_local_coco_checkpoint(tmp_path, capsys):
    data = write_ade20k_panoptic(tmp_path / "ade", {"train": 4, "val": 1})
    coco = _coco_checkpoint(tmp_path / "coco")
    code = main(["train", "--recipe", "ade20k_panoptic_large_640", "--data", str(data), "--out",
                 str(tmp_path / "run"), "-q", f"model.pretrained={tmp_path / 'coco'}", *FAST])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    fresh = "class_predictor.weight, class_predictor.bias, criterion.empty_weight"
    loaded = len(coco.state_dict()) - 3
    assert f"initialised from {tmp_path / 'coco'}: loaded {loaded} tensors; re-initialised {fresh} (150 classes)" in out
    final = EomtForUniversalSegmentation.from_pretrained(tmp_path / "run" / "final")
    assert final.config.num_labels == 150 and final.class_predictor.weight.shape[0] == 151
    assert final.config.num_blocks == 4 and final.config.hidden_size == 32  # the COCO model's architecture
    for name in ("query.weight", "layers.3.mlp.fc1.weight", "mask_head.fc1.weight", "embeddings.cls_token"):
        torch.testing.assert_close(final.state_dict()[name], coco.state_dict()[name], atol=1e-6, rtol=0)


def test_unreachable_hub_names_the_local_file_override(tmp_path):
    data = write_ade20k_panoptic(tmp_path / "ade", {"train": 4, "val": 1})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "eomt", "train", "--recipe", "ade20k_panoptic_large_640",
                             "--data", str(data), "--out", str(tmp_path / "run"), "-q", *FAST],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "tue-mps/coco_panoptic_eomt_large_640" in error and "model.pretrained=PATH" in error, result.stderr
    assert "Traceback" not in result.stderr
