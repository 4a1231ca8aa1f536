"""A static export at a size other than the model's is usable by `eomt predict --model E`: its processor config
fits the file, and a non-square file takes the processor's padded squares (padded further, as the processor pads)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import save_task_model
from PIL import Image

from eomt import EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.processing.image_processor import EomtImageProcessor
from eomt.runtimes.export import read_export_info
from eomt.runtimes.onnx_runtime import OnnxRuntimeModel


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name, size in (("coffee", (120, 80)), ("chelsea", (70, 110))):  # landscape and portrait
        Image.open(f"examples/{name}.png").convert("RGB").resize(size).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize(("task", "height", "width"), [("panoptic", 96, 64), ("semantic", 48, 80)])
def test_static_export_at_another_size_then_predict(task, height, width, images, tmp_path, capsys):
    model_dir = save_task_model(tmp_path / "model", task)  # trained at 64x64
    exported = tmp_path / "exported"
    assert main(["export", str(model_dir), str(exported), "--height", str(height), "--width", str(width)]) == 0
    info = read_export_info(exported)
    assert (info["height"], info["width"], info["dynamic"]) == (height, width, False)
    processor = json.loads((exported / "preprocessor_config.json").read_text())
    side = min(height, width)
    assert processor["size"] == ({"shortest_edge": side} if task == "semantic" else
                                 {"shortest_edge": side, "longest_edge": side})
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["predict", str(images), "--model", str(exported), "-o", str(out), "-q", "-d", "cpu"]) == 0  # no flag
    assert "2 image(s)" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 2 and summary["failed"] == 0
    for name in ("coffee", "chelsea"):
        assert Image.open(out / f"{name}.png").size == Image.open(images / f"{name}.png").size


def test_a_smaller_input_runs_as_if_padded_to_the_file_size(tmp_path):
    """The runtime pads bottom and right with the normalised black value and crops the mask logits back."""
    model_dir = save_task_model(tmp_path / "model", "panoptic")
    exported = tmp_path / "exported"
    assert main(["export", str(model_dir), str(exported), "--height", "96", "--width", "64"]) == 0
    runtime = OnnxRuntimeModel(exported)
    torch.manual_seed(0)
    processor = EomtImageProcessor.from_pretrained(exported)
    pixels = processor(torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8))["pixel_values"]
    assert tuple(pixels.shape[-2:]) == (64, 64)
    ours = runtime(pixels)
    black = (-torch.tensor(processor.image_mean) / torch.tensor(processor.image_std)).view(1, 3, 1, 1)
    canvas = black.expand(1, 3, 96, 64).clone()
    canvas[..., :64, :64] = pixels
    model = EomtForUniversalSegmentation.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        expected = model(canvas)
    assert ours.masks_queries_logits.shape[-2:] == (16, 16)
    assert (ours.class_queries_logits - expected.class_queries_logits).abs().max() <= 1e-4
    assert (ours.masks_queries_logits - expected.masks_queries_logits[..., :16, :16]).abs().max() <= 1e-4
