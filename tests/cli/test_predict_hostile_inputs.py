"""`eomt predict` on inputs that are legal but unusual: any file name the file system takes, extreme aspect
ratios; and on inputs that are broken in quiet ways: a JPEG cut short, a model whose outputs are not finite.
Each is either segmented or one failed image with a line saying why; the others complete."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_task_model
from PIL import Image

from eomt.cli.commands import main
from eomt.outputs.atomic import write_bytes_atomic


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_task_model(tmp_path_factory.mktemp("model") / "m", "panoptic")


def _photo(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_names_that_are_not_utf8_or_as_long_as_the_file_system_allows(model_dir, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    latin1 = os.fsencode(images) + b"/caf\xe9.png"  # a Latin-1 name from an old camera or a Windows share
    try:
        _photo(1).save(latin1)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    longest = "L" * 251 + ".png"  # 255 bytes: the longest name ext4 takes
    _photo(2).save(images / longest)
    _photo(3).save(images / ("M" * 240 + ".png"))
    _photo(4).save(images / "plain.png")
    out = tmp_path / "out"
    assert main(["predict", str(images), "-m", str(model_dir), "-o", str(out), "-q", "-j", "0"]) == 0, (
        capsys.readouterr().err)
    summary = _summary(out)
    assert (summary["done"], summary["failed"]) == (4, 0)
    names = os.listdir(os.fsencode(out))
    assert b"caf\xe9.png" in names and b"caf\xe9_overlay.jpg" in names and b"caf\xe9.json" in names
    segments = json.loads((out / os.fsdecode(b"caf\xe9.json")).read_text(encoding="utf-8"))
    assert os.fsencode(segments["image"]) == latin1  # the JSON names the very file (escaped, valid UTF-8)
    assert all(len(n) <= 255 for n in names) and not any(n.startswith(b".") for n in names)
    shortened = [n for n in names if n.startswith(b"LLLL")]
    assert len(shortened) == 3 and len({n.rsplit(b".", 1)[0].removesuffix(b"_overlay") for n in shortened}) == 1

    # --skip-existing finds the shortened names again: nothing is redone
    assert main(["predict", str(images), "-m", str(model_dir), "-o", str(out), "-q", "-j", "0",
                 "--skip-existing"]) == 0
    assert (_summary(out)["done"], _summary(out)["skipped"]) == (0, 4)


def test_a_file_name_of_255_bytes_gets_a_temporary_that_fits(tmp_path):
    target = tmp_path / ("x" * 255)
    write_bytes_atomic(target, b"data")
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == [target.name]


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_extreme_aspect_ratios_are_segmented(model_dir, tmp_path, task, capsys):
    sizes = [(4000, 9), (9, 5000), (2000, 8)] if task != "semantic" else [(600, 9), (9, 700)]
    for width, height in sizes:
        _photo(width, (width, height)).save(tmp_path / f"{width}x{height}.png")
    out = tmp_path / "out"
    code = main(["predict", *[str(tmp_path / f"{w}x{h}.png") for w, h in sizes], "-m", str(model_dir), "-o",
                 str(out), "-q", "-j", "0", "-t", task])
    assert code == 0, capsys.readouterr().err
    assert _summary(out)["done"] == len(sizes)
    for width, height in sizes:
        assert Image.open(out / f"{width}x{height}_overlay.jpg").size == (width, height)
        if task != "instance":
            assert Image.open(out / f"{width}x{height}.png").size == (width, height)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_jpeg_cut_short_is_one_failed_image_not_grey(model_dir, tmp_path, capsys):
    """A file cut short and closed with an end marker decodes without an error: libjpeg fills the rest with
    grey and Pillow drops its warning. It must not be segmented as if it were whole."""
    data = _jpeg(_photo(5, (96, 80)))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    (tmp_path / "in" / "whole.jpg").write_bytes(data)
    (tmp_path / "in" / "grey.jpg").write_bytes(_jpeg(Image.new("RGB", (64, 64), (128, 128, 128))))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-m", str(model_dir), "-o", str(out), "-q", "-j", "0"]) == 1
    summary = _summary(out)
    assert summary["done"] == 2 and [Path(f["image"]).name for f in summary["failures"]] == ["cut.jpg"]
    assert "JPEG data ends early" in summary["failures"][0]["reason"]
    err = capsys.readouterr().err
    assert any("cut.jpg" in line and "JPEG data ends early" in line for line in err.splitlines()), err
    assert not (out / "cut.png").exists() and (out / "whole.png").exists() and (out / "grey.png").exists()


def test_outputs_that_are_not_finite_fail_the_image(model_dir, tmp_path, capsys):
    from eomt import EomtForUniversalSegmentation

    model = EomtForUniversalSegmentation.from_pretrained(model_dir)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "class_predictor" in n).fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan")
    (tmp_path / "nan" / "preprocessor_config.json").write_bytes((model_dir / "preprocessor_config.json").read_bytes())
    _photo(6).save(tmp_path / "a.png")
    _photo(7).save(tmp_path / "b.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-m", str(tmp_path / "nan"), "-o",
                 str(out), "-q", "-b", "2", "-j", "0"]) == 1
    summary = _summary(out)
    assert summary["done"] == 0 and len(summary["failures"]) == 2
    assert all("outputs are not finite" in f["reason"] for f in summary["failures"])
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
