"""Runtimes behind one switch: onnxruntime and torch.compile give the segmentations of the eager torch model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers import fail_overlay_writes, save_task_model
from PIL import Image

from eomt.cli.commands import main
from eomt.predictor import Segmenter
from eomt.runtimes.export import ONNX_FILE
from eomt.runtimes.onnx_runtime import OnnxRuntimeModel, providers_for

IMAGES = ["examples/coffee.png", "examples/chelsea.png"]


@pytest.fixture(scope="module")
def panoptic_model(tmp_path_factory):
    return save_task_model(tmp_path_factory.mktemp("models") / "tiny_panoptic", "panoptic")


@pytest.fixture(scope="module")
def exported(panoptic_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "onnx"
    assert main(["export", str(panoptic_model), str(out)]) == 0  # static, at the model's 64x64
    return out


def _same(a, b) -> None:
    assert torch.equal(a.segmentation, b.segmentation)
    assert [(s.label_id, s.area) for s in a.segments] == [(s.label_id, s.area) for s in b.segments]
    assert np.allclose([s.score for s in a.segments], [s.score for s in b.segments], atol=1e-4)


def test_onnxruntime_backend_segments_like_torch(panoptic_model, exported):
    eager = Segmenter.from_pretrained(panoptic_model, device="cpu").predict(IMAGES, batch_size=2)
    runtime = Segmenter.from_pretrained(exported, device="cpu", backend="onnxruntime")
    assert runtime.task == "panoptic"
    got = runtime.predict(IMAGES, batch_size=2)
    assert any(r.segments for r in eager)
    for a, b in zip(got, eager, strict=True):
        _same(a, b)


def test_onnxruntime_backend_runs_sliding_windows_like_torch(tmp_path):
    from eomt.modeling.eomt import EomtForUniversalSegmentation
    from eomt.processing.image_processor import EomtImageProcessor
    from eomt.runtimes.export import export_onnx

    model_dir = save_task_model(tmp_path / "semantic", "semantic")
    export_onnx(EomtForUniversalSegmentation.from_pretrained(model_dir), EomtImageProcessor.from_pretrained(model_dir),
                tmp_path / "onnx")
    runtime = Segmenter.from_pretrained(tmp_path / "onnx", device="cpu", backend="onnxruntime")
    eager = Segmenter.from_pretrained(model_dir, device="cpu")
    assert runtime.task == eager.task == "semantic"
    for a, b in zip(runtime.predict(IMAGES), eager.predict(IMAGES), strict=True):
        assert torch.equal(a.segmentation, b.segmentation)


def test_onnxruntime_backend_exports_on_the_fly_once_into_the_cache(panoptic_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EOMT_CACHE", str(tmp_path / "cache"))
    first = Segmenter.from_pretrained(panoptic_model, device="cpu", backend="onnxruntime")
    files = list((tmp_path / "cache" / "onnx").glob(f"*/{ONNX_FILE}"))
    assert len(files) == 1 and first.model.info["dynamic"] is True
    stamp = files[0].stat().st_mtime_ns
    second = Segmenter.from_pretrained(panoptic_model, device="cpu", backend="onnxruntime")
    assert files[0].stat().st_mtime_ns == stamp  # reused, not exported again
    eager = Segmenter.from_pretrained(panoptic_model, device="cpu")
    _same(second.predict(IMAGES[0]), eager.predict(IMAGES[0]))


def test_predict_cli_with_onnxruntime_writes_the_same_files(panoptic_model, exported, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in IMAGES:
        shutil.copy(path, folder)
    assert main(["predict", str(folder), "--model", str(panoptic_model), "--out", str(tmp_path / "a"), "-q"]) == 0
    assert main(["predict", str(folder), "--model", str(exported), "--backend", "onnxruntime",
                 "--out", str(tmp_path / "b"), "-q"]) == 0
    for name in ("coffee.png", "chelsea.png"):
        assert np.array_equal(np.array(Image.open(tmp_path / "a" / name)), np.array(Image.open(tmp_path / "b" / name)))


def test_a_corrupt_onnx_file_is_a_one_line_error(exported, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    data = (broken / ONNX_FILE).read_bytes()
    (broken / ONNX_FILE).write_bytes(data[: len(data) // 3])
    assert main(["predict", "examples/coffee.png", "--model", str(broken), "--backend", "onnxruntime",
                 "--out", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not a usable ONNX model" in err and str(broken / ONNX_FILE) in err
    assert err.count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_a_static_file_refuses_a_larger_size_in_one_line(exported):
    model = OnnxRuntimeModel(exported)
    with pytest.raises(ValueError, match="exported for at most 64x64"):
        model(torch.zeros(1, 3, 80, 64))


def test_cuda_uses_tensorrt_then_cuda_providers_when_installed():
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert providers_for(torch.device("cuda"), available) == available[::-1]
    assert providers_for(torch.device("cpu"), available) == ["CPUExecutionProvider"]


def test_compiled_segmenter_segments_like_eager(panoptic_model):
    torch._dynamo.reset()
    eager = Segmenter.from_pretrained(panoptic_model, device="cpu")
    compiled = Segmenter.from_pretrained(panoptic_model, device="cpu", compile=True)
    for a, b in zip(compiled.predict(IMAGES, batch_size=2), eager.predict(IMAGES, batch_size=2), strict=True):
        _same(a, b)


@pytest.mark.cuda
def test_compiled_segmenter_on_cuda_segments_like_eager(panoptic_model):
    """compile=True on a GPU: max-autotune with CUDA graphs; other kernels than eager's, so a pixel may move."""
    pytest.importorskip("pycocotools")  # segment areas and boxes (eomt.outputs.coco_formats)
    torch._dynamo.reset()
    eager = Segmenter.from_pretrained(panoptic_model, device="cuda")
    compiled = Segmenter.from_pretrained(panoptic_model, device="cuda", compile=True)
    for a, b in zip(compiled.predict(IMAGES, batch_size=2), eager.predict(IMAGES, batch_size=2), strict=True):
        assert [s.label_id for s in a.segments] == [s.label_id for s in b.segments]
        assert (a.segmentation == b.segmentation).float().mean().item() > 0.999


def test_with_onnxruntime_files_are_written_beside_the_next_forward_and_failures_still_counted(
        exported, tmp_path, monkeypatch, capsys):
    """The onnxruntime backend writes in a background thread: a failed write is still one reported image
    with no partial files, and the other images' files are complete."""
    fail_overlay_writes(monkeypatch, "coffee")
    folder = tmp_path / "images"
    folder.mkdir()
    for path in IMAGES:
        shutil.copy(path, folder)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(exported), "--backend", "onnxruntime", "--out", str(out),
                 "-q"]) == 1
    assert "coffee.png: cannot write results (disk full)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.json", "chelsea.png", "chelsea_overlay.jpg",
                                                     "summary.json"]
