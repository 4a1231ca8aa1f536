"""`eomt export` to ONNX: onnxruntime equals eager PyTorch; bad inputs are one-line errors with nothing written."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import make_reference, save_task_model

from eomt import EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.processing.image_processor import EomtImageProcessor
from eomt.runtimes.export import ONNX_FILE, export_onnx, read_export_info


def _saved(tmp_path_factory, kind: str):
    directory = tmp_path_factory.mktemp(kind)
    reference = make_reference(kind, seed=3)
    reference.attn_mask_probs.zero_()
    reference.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("kind", ["eomt", "eomt_dinov3"])
def test_one_dynamic_file_equals_eager_at_three_sizes(tmp_path_factory, kind):
    model = EomtForUniversalSegmentation.from_pretrained(_saved(tmp_path_factory, kind))
    out = tmp_path_factory.mktemp("export") / "onnx"
    export_onnx(model, EomtImageProcessor(), out, dynamic=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [ONNX_FILE, "config.json", "preprocessor_config.json", "export.json"])
    assert read_export_info(out)["dynamic"] is True
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    for batch, height, width in [(1, 64, 64), (2, 48, 96), (1, 128, 80)]:  # native, smaller and larger grids
        pixels = torch.randn(batch, 3, height, width)
        with torch.inference_mode():
            expected = model(pixels)
        class_logits, mask_logits = session.run(None, {"pixel_values": pixels.numpy()})
        assert mask_logits.shape == (batch, model.config.num_queries, height // 4, width // 4)
        assert np.abs(class_logits - expected.class_queries_logits.numpy()).max() <= 1e-4
        assert np.abs(mask_logits - expected.masks_queries_logits.numpy()).max() <= 1e-4


def test_cli_static_export_at_the_model_size(tmp_path, capsys):
    model_dir = save_task_model(tmp_path / "model", "panoptic")
    out = tmp_path / "exported"
    assert main(["export", str(model_dir), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    info = read_export_info(out)
    assert (info["height"], info["width"], info["dynamic"], info["dtype"]) == (64, 64, False, "float32")
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [d for d in session.get_inputs()[0].shape[1:]] == [3, 64, 64]
    assert EomtImageProcessor.from_pretrained(out).to_dict() == EomtImageProcessor.from_pretrained(
        model_dir).to_dict()


def _fails(args, capsys) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    model_dir = save_task_model(tmp_path / "model", "panoptic")
    capsys.readouterr()  # transformers' saving progress
    out = tmp_path / "out"
    assert "missing" in _fails(["export", str(tmp_path / "missing"), str(out)], capsys)
    assert "multiple of the patch size 16" in _fails(
        ["export", str(model_dir), str(out), "--height", "60", "--width", "64"], capsys)
    assert "--dynamic, not both" in _fails(
        ["export", str(model_dir), str(out), "--height", "64", "--width", "64", "--dynamic"], capsys)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert "cannot write here" in _fails(["export", str(model_dir), str(blocker / "out")], capsys)
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "--overwrite" in _fails(["export", str(model_dir), str(out)], capsys)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "model", "out"]  # no temporary left behind
