"""int8 ONNX export: only the encoder blocks before the queries are quantized, and the result still segments."""

from __future__ import annotations

import shutil

import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import make_reference, save_task_model

from eomt import EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.predictor import Segmenter
from eomt.processing.image_processor import EomtImageProcessor
from eomt.runtimes.export import ONNX_FILE, export_onnx, read_export_info


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    reference = make_reference(seed=5, num_hidden_layers=4, num_blocks=2)
    reference.attn_mask_probs.zero_()
    reference.save_pretrained(directory)
    model = EomtForUniversalSegmentation.from_pretrained(directory)
    out = tmp_path_factory.mktemp("export") / "int8"
    export_onnx(model, EomtImageProcessor(), out, dynamic=True, dtype="int8")
    return model, out


def test_only_the_blocks_before_the_queries_have_int8_linear_layers(int8_export):
    model, out = int8_export
    graph = onnx.load(str(out / ONNX_FILE)).graph
    integer = [n for n in graph.node if n.op_type == "MatMulInteger"]
    scopes = [next(p.value for p in n.metadata_props if p.key == "pkg.torch.onnx.name_scopes") for n in graph.node
              if n.op_type == "MatMul" and any(i in {t.name for t in graph.initializer} for i in n.input)]
    # blocks 0 and 1 (q, k, v, out, fc1, fc2 each) are int8; blocks 2 and 3 (with queries) and the heads are not
    assert len(integer) == 6 * (model.config.num_hidden_layers - model.config.num_blocks)
    assert not any("'model.layers.0'" in s or "'model.layers.1'" in s for s in scopes)
    assert any("'model.layers.3'" in s for s in scopes) and any("mask_head" in s for s in scopes)
    assert read_export_info(out)["dtype"] == "int8"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [ONNX_FILE, "config.json", "preprocessor_config.json", "export.json"])


def test_int8_logits_stay_close_to_float32_at_two_sizes(int8_export):
    model, out = int8_export
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    for height, width in [(64, 64), (48, 96)]:
        pixels = torch.randn(1, 3, height, width)
        with torch.inference_mode():
            expected = model(pixels).masks_queries_logits.numpy()
        _, masks = session.run(None, {"pixel_values": pixels.numpy()})
        assert masks.shape == expected.shape
        # quantization error, not a broken graph: a few percent of the logits' range
        assert abs(masks - expected).max() < 0.05 * abs(expected).max()


def test_predict_with_int8_onnxruntime_writes_results(tmp_path, monkeypatch):
    monkeypatch.setenv("EOMT_CACHE", str(tmp_path / "cache"))
    model_dir = save_task_model(tmp_path / "model", "panoptic")
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy("examples/coffee.png", folder)
    assert main(["predict", str(folder), "--model", str(model_dir), "--backend", "onnxruntime", "--dtype", "int8",
                 "--out", str(tmp_path / "out"), "-q"]) == 0
    assert (tmp_path / "out" / "coffee.png").is_file() and (tmp_path / "out" / "coffee.json").is_file()
    (cached,) = (tmp_path / "cache" / "onnx").glob(f"*/{ONNX_FILE}")
    assert read_export_info(cached.parent)["dtype"] == "int8"


def test_int8_without_onnxruntime_backend_is_refused_before_loading(tmp_path, capsys):
    assert main(["predict", "examples/coffee.png", "--model", str(tmp_path / "missing"), "--dtype", "int8",
                 "--out", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--backend onnxruntime" in err and err.count("\n") == 0
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="onnxruntime"):
        Segmenter.from_pretrained(tmp_path / "missing", device="cpu", dtype="int8")
