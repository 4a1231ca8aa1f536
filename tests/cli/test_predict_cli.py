"""`eomt predict`: result files per task, bad inputs reported while the rest completes, help texts."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from helpers import fail_overlay_writes, save_task_model
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.cli.commands import build_parser, main
from eomt.outputs.coco_formats import rgb_to_panoptic
from eomt.predictor import Segmenter


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {task: save_task_model(root / f"tiny_{task}", task) for task in ("semantic", "instance", "panoptic")}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy("examples/coffee.png", folder / "coffee.png")
    Image.open("examples/chelsea.png").save(folder / "chelsea.jpg", quality=95)
    return folder


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_writes_standard_files(models, images, tmp_path, task):
    out = tmp_path / "out"
    assert main(["predict", str(images), "--model", str(models[task]), "--out", str(out), "-q"]) == 0
    expected = {"semantic": {"png"}, "instance": {"json"}, "panoptic": {"png", "json"}}[task]
    for stem in ("coffee", "chelsea"):
        assert {p.suffix[1:] for p in out.glob(f"{stem}.*")} == expected
        overlay = Image.open(out / f"{stem}_overlay.jpg")
        assert overlay.size == Image.open(next(images.glob(f"{stem}.*"))).size
    reference = Segmenter.from_pretrained(models[task]).predict(str(images / "coffee.png"))
    if task == "semantic":
        assert np.array_equal(np.array(Image.open(out / "coffee.png")), reference.segmentation.numpy())
    elif task == "panoptic":
        ids = rgb_to_panoptic(Image.open(out / "coffee.png"))
        assert np.array_equal(ids, reference.segmentation.numpy())
        info = json.loads((out / "coffee.json").read_text())["segments_info"]
        assert [s["category_id"] for s in info] == [s.label_id for s in reference.segments]
    else:
        results = json.loads((out / "coffee.json").read_text())
        decoded = np.stack([mask_utils.decode(r["segmentation"]) for r in results]).astype(bool)
        assert np.array_equal(decoded, reference.masks.numpy())
        assert [r["score"] for r in results] == pytest.approx([s.score for s in reference.segments])


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b"")


def test_bad_inputs_are_reported_and_the_rest_completes(models, images, tmp_path, capsys):
    (images / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    Image.open("examples/coffee.png").save(buffer, format="JPEG")
    (images / "truncated.jpg").write_bytes(buffer.getvalue()[:3000])
    (images / "notes.png").write_text("this is text, not a PNG\n")
    Image.new("RGB", (1, 1)).save(images / "dot.png")
    (images / "huge.png").write_bytes(_bomb_png(20000, 20000))
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    code = main(["predict", str(images), str(missing), "--model", str(models["panoptic"]), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    reasons = {
        "empty.jpg": "file is empty", "truncated.jpg": "truncated or corrupt", "notes.png": "not an image",
        "dot.png": "too small", "huge.png": "too large", "missing.jpg": "no such file",
    }
    for name, reason in reasons.items():
        line = next((ln for ln in err.splitlines() if name in ln), "")
        assert reason in line, (name, err)
    assert "segmented 2 image(s)" in err and "6 failed" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["coffee.png", "coffee.json", "coffee_overlay.jpg", "chelsea.png", "chelsea.json", "chelsea_overlay.jpg",
         "summary.json"])
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"], summary["files_written"]) == (2, 0, 6, 6)
    assert {f["reason"] for f in summary["failures"]} >= {"no such file or directory"}


def test_a_failed_write_leaves_no_partial_files(models, images, tmp_path, monkeypatch, capsys):
    fail_overlay_writes(monkeypatch, "coffee")
    out = tmp_path / "out"
    assert main(["predict", str(images), "--model", str(models["panoptic"]), "--out", str(out), "-q"]) == 1
    assert "coffee.png: cannot write results (disk full)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.json", "chelsea.png", "chelsea_overlay.jpg",
                                                     "summary.json"]


def test_same_stem_in_two_formats_gets_two_names(models, images, tmp_path):
    shutil.copy(images / "coffee.png", images / "chelsea.png")
    out = tmp_path / "out"
    assert main(["predict", str(images), "--model", str(models["semantic"]), "--out", str(out), "-q"]) == 0
    assert {"chelsea_jpg.png", "chelsea_png.png", "coffee.png"} <= {p.name for p in out.iterdir()}


def test_default_model_without_network_says_how_to_pass_a_path(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "eomt", "predict", "examples/coffee.png", "-q",
                             "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "tue-mps/coco_panoptic_eomt_large_640" in line and "--model PATH" in line
    assert "HF_HUB_OFFLINE=1 forbids downloads" in line and "set HF_HUB_OFFLINE" not in line


def test_help_is_complete(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--task", "--out", "--device", "--batch-size", "--threshold", "--dtype", "--devices",
                   "--num-nodes", "--num-workers", "--skip-existing", "--overwrite", "summary.json",
                   "<stem>_overlay.jpg", "segments_info", "RLE"):
        assert option in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    top = capsys.readouterr().out
    assert all(command in top for command in ("predict", "info", "convert"))


def test_batch_size_does_not_change_results(models, images, tmp_path):
    for batch in (1, 2):
        assert main(["predict", str(images), "--model", str(models["panoptic"]), "--out",
                     str(tmp_path / f"b{batch}"), "-q", "--batch-size", str(batch)]) == 0
    for name in ("coffee.png", "chelsea.png"):
        a = np.array(Image.open(tmp_path / "b1" / name))
        b = np.array(Image.open(tmp_path / "b2" / name))
        assert np.array_equal(a, b)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(models, images, tmp_path, capsys):
    assert main(["predict", str(images), "--model", str(models["panoptic"]), "--device", "cuda", "-q",
                 "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "CUDA is not available" in err and "\n" not in err


def _semantic_files(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "summary.json")


def test_same_names_in_different_folders_each_get_their_files(models, tmp_path):
    """Data loss (issue 10): a/IMG_1.jpg and b/IMG_1.jpg used to share one result set."""
    for folder, source in (("a", "examples/coffee.png"), ("b", "examples/chelsea.png")):
        (tmp_path / folder).mkdir()
        Image.open(source).convert("RGB").save(tmp_path / folder / "IMG_1.jpg", quality=95)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a" / "IMG_1.jpg"), str(tmp_path / "b" / "IMG_1.jpg"),
                 "--model", str(models["semantic"]), "--out", str(out), "-q"]) == 0
    assert _semantic_files(out) == ["a/IMG_1.png", "a/IMG_1_overlay.jpg", "b/IMG_1.png", "b/IMG_1_overlay.jpg"]
    assert Image.open(out / "a" / "IMG_1.png").size == Image.open("examples/coffee.png").size
    assert Image.open(out / "b" / "IMG_1.png").size == Image.open("examples/chelsea.png").size
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["files_written"]) == (2, 4)


def test_two_folders_with_shared_names_mirror_their_layout(models, tmp_path):
    for split in ("val2017", "train2017"):
        (tmp_path / split / "sub").mkdir(parents=True)
        shutil.copy("examples/coffee.png", tmp_path / split / "x.png")
        Image.open("examples/chelsea.png").save(tmp_path / split / "x.jpg")  # same stem, other extension
        shutil.copy("examples/chelsea.png", tmp_path / split / "sub" / "x.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "val2017"), str(tmp_path / "train2017"), "--model",
                 str(models["semantic"]), "--out", str(out), "-q"]) == 0
    expected = [f"{split}/{name}" for split in ("train2017", "val2017")
                for name in ("sub/x.png", "sub/x_overlay.jpg", "x_jpg.png", "x_jpg_overlay.jpg", "x_png.png",
                             "x_png_overlay.jpg")]
    assert _semantic_files(out) == sorted(expected)
    assert json.loads((out / "summary.json").read_text())["files_written"] == 12
    # one folder: its own layout, no extra level
    assert main(["predict", str(tmp_path / "val2017"), "--model", str(models["semantic"]), "--out",
                 str(tmp_path / "one"), "-q"]) == 0
    assert _semantic_files(tmp_path / "one") == sorted(e.removeprefix("val2017/") for e in expected
                                                       if e.startswith("val2017/"))


def test_existing_results_are_refused_unless_asked(models, images, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(images), "--model", str(models["semantic"]), "--out", str(out), "-q"]
    assert main(args) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--skip-existing" in err and "\n" not in err
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main(args + ["--skip-existing"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["files_written"]) == (0, 2, 0)
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["done"] == 2


def test_redirected_progress_is_plain_lines(models, images, tmp_path, capsys):
    code = main(["predict", str(images), "--model", str(models["panoptic"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0 and "\r" not in err
    assert any(line.startswith("eomt predict (panoptic") and "img (100%)" in line for line in err.splitlines()), err
