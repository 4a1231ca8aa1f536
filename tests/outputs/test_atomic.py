import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from eomt.outputs import atomic as io_utils
from eomt.outputs.atomic import (
    label_map_to_image,
    write_bytes_atomic,
    write_jpeg_atomic,
    write_json_atomic,
    write_png_atomic,
)


def _listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_write_bytes_atomic_creates_and_replaces(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    assert write_bytes_atomic(target, b"hello") == target
    assert target.read_bytes() == b"hello"
    write_bytes_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert _listing(target.parent) == ["data.bin"]
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~io_utils._UMASK  # not mkstemp's 0o600


def test_write_json_atomic_round_trip_with_numpy_and_torch(tmp_path):
    target = tmp_path / "out.json"
    obj = {"a": [1, 2], "b": np.float32(0.5), "c": np.arange(3), "d": torch.tensor([1, 2]), "e": "é"}
    write_json_atomic(target, obj)
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": [1, 2], "b": 0.5, "c": [0, 1, 2], "d": [1, 2],
                                                              "e": "é"}
    write_json_atomic(target, {"x": 1}, indent=2)
    assert target.read_text() == '{\n  "x": 1\n}\n'


def test_json_failure_midway_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"old": True})
    # json.dump streams chunks: the list is written before the unserialisable object is reached.
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": list(range(5000)), "b": object()})
    assert json.loads(target.read_text()) == {"old": True}
    assert _listing(tmp_path) == ["out.json"]


def test_json_failure_without_previous_file(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "new.json", [1, 2, object()])
    assert _listing(tmp_path) == []


def test_png_failure_midway(tmp_path, monkeypatch):
    target = tmp_path / "map.png"
    write_png_atomic(target, np.zeros((4, 4), dtype=np.uint8))
    before = target.read_bytes()
    seen = {}

    def broken_save(self, fp, format=None, **kwargs):
        fp.write(b"\x89PNG partial")
        fp.flush()
        seen["listing"] = _listing(tmp_path)
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(target, np.ones((4, 4), dtype=np.uint8))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _listing(tmp_path) == ["map.png"]
    # while writing, the data went to a dot-prefixed temp file in the same directory
    temps = [name for name in seen["listing"] if name != "map.png"]
    assert len(temps) == 1 and temps[0].startswith(".map.png.")


def test_keyboard_interrupt_cleans_up(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io_utils.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(tmp_path / "x.bin", b"abc")
    assert _listing(tmp_path) == []


def test_label_map_png_modes(tmp_path):
    small = np.array([[0, 1], [254, 255]], dtype=np.int64)
    write_png_atomic(tmp_path / "small.png", torch.from_numpy(small))
    with Image.open(tmp_path / "small.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), small)
    large = np.array([[0, 256], [1000, 65535]], dtype=np.int64)
    write_png_atomic(tmp_path / "large.png", large)
    with Image.open(tmp_path / "large.png") as im:
        assert im.mode.startswith("I")  # 16-bit grayscale
        np.testing.assert_array_equal(np.asarray(im).astype(np.int64), large)
    assert label_map_to_image(np.array([[True, False]])).getpixel((0, 0)) == 255
    for bad in (np.array([[-1, 0]]), np.array([[65536]]), np.zeros((2, 2), dtype=np.float32)):
        with pytest.raises(ValueError):
            write_png_atomic(tmp_path / "bad.png", bad)
    assert not (tmp_path / "bad.png").exists()


def test_rgb_png_and_jpeg(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(16, 24, 3), dtype=np.uint8)
    write_png_atomic(tmp_path / "rgb.png", rgb)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
    write_png_atomic(tmp_path / "pil.png", Image.fromarray(rgb))
    assert (tmp_path / "pil.png").read_bytes() == (tmp_path / "rgb.png").read_bytes()
    write_jpeg_atomic(tmp_path / "img.jpg", Image.fromarray(rgb).convert("RGBA"), quality=95)
    with Image.open(tmp_path / "img.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (24, 16)
    assert _listing(tmp_path) == ["img.jpg", "pil.png", "rgb.png"]
