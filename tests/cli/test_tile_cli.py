"""`eomt predict --tile` / `eomt eval --tile` through the real command line: bad values are one line (exit 2 for
option values, as the other options; nothing written), good ones give full-resolution results."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training.synthetic import make_synthetic_dataset

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4, image_size=32,
            num_labels=7, train_num_points=64)  # patch size 16


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tile_world")
    torch.manual_seed(0)
    EomtForUniversalSegmentation(EomtConfig(**TINY)).save_pretrained(root / "model")
    EomtImageProcessor(size=32, do_pad=True, task="panoptic", stuff_classes=[4, 5, 6]).save_pretrained(root / "model")
    data = make_synthetic_dataset(root / "data", num_train=2, num_val=3, size=32, seed=1)
    pixels = np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "photo.png")
    return {"root": root, "model": root / "model", "data": data, "img": root / "photo.png"}


PREDICT = ["predict", "{img}", "--model", "{model}", "--out", "{d}/out", "-q"]
EVAL = ["eval", "--model", "{model}", "--data", "{data}", "--dataset", "coco_panoptic", "-q"]

CASES = [
    ("tile-0", PREDICT + ["--tile", "0"], 2, ["--tile", "at least 1, got 0"]),
    ("tile-neg", PREDICT + ["--tile", "-5"], 2, ["--tile", "got -5"]),
    ("tile-float", PREDICT + ["--tile", "2.5"], 2, ["--tile", "'2.5'"]),
    ("tile-word", PREDICT + ["--tile", "big"], 2, ["--tile", "'big'"]),
    ("overlap-0.9", PREDICT + ["--tile", "64", "--tile-overlap", "0.9"], 2, ["--tile-overlap", "[0, 0.9)", "'0.9'"]),
    ("overlap-neg", PREDICT + ["--tile", "64", "--tile-overlap", "-0.1"], 2, ["--tile-overlap", "'-0.1'"]),
    ("overlap-nan", PREDICT + ["--tile", "64", "--tile-overlap", "nan"], 2, ["--tile-overlap", "'nan'"]),
    ("overlap-without-tile", PREDICT + ["--tile-overlap", "0.5"], 2, ["eomt predict: error:", "needs --tile"]),
    ("tile-below-patch", PREDICT + ["--tile", "8"], 1, ["tile 8", "patch size 16"]),
    ("tile-task-unknown", PREDICT + ["--tile", "64", "--task", "depth"], 2, ["--task", "'depth'"]),
    ("eval-tile-0", EVAL + ["--tile", "0"], 2, ["--tile", "got 0"]),
    ("eval-overlap-1", EVAL + ["--tile", "64", "--tile-overlap", "1"], 2, ["--tile-overlap", "'1'"]),
    ("eval-tile-below-patch", EVAL + ["--tile", "15", "--out", "{d}/ev"], 1, ["tile 15", "patch size 16"]),
    ("eval-tile-predictions", ["eval", "-p", "{d}", "--data", "{data}", "--dataset", "coco_panoptic", "--tile", "64"],
     2, ["eomt eval: error:", "--tile", "--predictions"]),
]


def _snapshot(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for root in roots for p in sorted(root.rglob("*"))}


def _fill(text: str, d: Path, world) -> str:
    return text.format(d=d, model=world["model"], data=world["data"], img=world["img"])


@pytest.mark.parametrize("case_id, argv, code, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_tiling_values_are_one_line_and_write_nothing(case_id, argv, code, expected, world, tmp_path,
                                                          monkeypatch, capsys):
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.delenv("EOMT_DEBUG", raising=False)
    before = _snapshot(d, world["root"])
    try:
        exit_code = main([_fill(a, d, world) for a in argv])
    except SystemExit as exc:
        exit_code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_code == code, err
    assert len(lines) == 1 and "Traceback" not in err + out, err
    assert lines[0].startswith("eomt") and ": error: " in lines[0], lines[0]
    for word in expected:
        assert _fill(word, d, world) in lines[0], lines[0]
    assert _snapshot(d, world["root"]) == before, "files were created or changed"


def test_the_console_command_refuses_tile_0_in_one_line(world, tmp_path):
    run = subprocess.run([sys.executable, "-m", "eomt", "predict", str(world["img"]), "--tile", "0"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "--tile" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_predict_with_tiles_writes_full_resolution_results(world, tmp_path, capsys):
    code = main(_fill_all(PREDICT + ["--tile", "32", "--tile-overlap", "0.5"], tmp_path, world))
    assert code == 0, capsys.readouterr().err
    png, info = tmp_path / "out" / "photo.png", json.loads((tmp_path / "out" / "photo.json").read_text())
    with Image.open(png) as image:
        assert image.size == (100, 70)
    assert (tmp_path / "out" / "photo_overlay.jpg").exists() and isinstance(info["segments_info"], list)


def test_eval_with_a_tile_larger_than_the_images_scores_as_without(world, tmp_path, capsys):
    """Images no larger than the tile are one window, predicted as without tiling: the same PQ."""
    assert main(_fill_all(EVAL + ["--out", "{d}/plain"], tmp_path, world)) == 0
    assert main(_fill_all(EVAL + ["--tile", "64", "--out", "{d}/tiled"], tmp_path, world)) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    tiled = json.loads((tmp_path / "tiled" / "metrics.json").read_text())
    assert tiled["metrics"] == plain["metrics"] and tiled["num_images"] == 3
    pngs = sorted((tmp_path / "plain").glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert png.read_bytes() == (tmp_path / "tiled" / png.name).read_bytes()


def _fill_all(argv: list[str], d: Path, world) -> list[str]:
    return [_fill(a, d, world) for a in argv]
