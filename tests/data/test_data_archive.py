"""eomt.data.archive: one read-only namespace over folders, zips and zips inside zips."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
from fixture_files import encode as png_bytes
from fixture_files import zip_bytes

from eomt.data import DatasetError, open_tree

RGB = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)


def test_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.txt").write_bytes(b"x")
    (tmp_path / "a" / "y.png").write_bytes(png_bytes(RGB))
    tree = open_tree(tmp_path)
    assert tree.exists("a") and tree.exists("a/b") and tree.exists("a/b/x.txt") and not tree.exists("a/c")
    assert tree.list("a") == ["a/b/x.txt", "a/y.png"]
    assert tree.list("a", ".png") == ["a/y.png"]
    assert tree.read_bytes("./a/b/x.txt") == b"x"
    assert np.array_equal(np.asarray(tree.open_image("a/y.png")), RGB)
    assert tree.location("a/y.png") == str(tmp_path / "a" / "y.png")
    with pytest.raises(DatasetError, match=r"c\.txt: no such file"):
        tree.read_bytes("a/c.txt")


def test_zip_file_folder_of_zips_and_nested(tmp_path):
    inner_stored = zip_bytes({"p_val/1.png": png_bytes(RGB)}, zipfile.ZIP_STORED)
    inner_deflated = zip_bytes({"p_train/2.png": png_bytes(RGB[::-1].copy())})
    outer = zip_bytes({"ann/p_val.json": b"{}", "ann/p_val.zip": inner_stored, "ann/p_train.zip": inner_deflated,
                       "__MACOSX/ann/._junk": b"", "ann/": b""})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "outer.zip").write_bytes(outer)
    (tmp_path / "d" / "imgs.zip").write_bytes(zip_bytes({"imgs/1.txt": b"one"}))
    (tmp_path / "d" / "imgs").mkdir()
    (tmp_path / "d" / "imgs" / "1.txt").write_bytes(b"extracted wins")

    tree = open_tree(tmp_path / "d")
    assert tree.read_bytes("imgs/1.txt") == b"extracted wins"
    assert tree.read_json("ann/p_val.json") == {}
    assert np.array_equal(np.asarray(tree.open_image("ann/p_val/1.png")), RGB)
    # the stored inner zip is read in place and the unrelated compressed one is not opened
    sources = {s.display.rpartition("/")[2]: s for s in tree._zips}
    assert sources["p_train.zip"]._members is None
    assert np.array_equal(np.asarray(tree.open_image("ann/p_train/2.png")), RGB[::-1])
    assert tree.location("ann/p_val/1.png") == f"{tmp_path / 'd' / 'outer.zip'}/ann/p_val.zip/p_val/1.png"
    assert tree.list("ann") == ["ann/p_train.zip", "ann/p_train/2.png", "ann/p_val.json", "ann/p_val.zip",
                                "ann/p_val/1.png"]
    assert tree.list("", ".png") == ["ann/p_train/2.png", "ann/p_val/1.png"]
    assert tree.exists("ann/p_val") and not tree.exists("__MACOSX")
    assert tree.top_dirs() == ["ann", "imgs"]

    # a zip given directly is mounted at the root
    direct = open_tree(tmp_path / "d" / "outer.zip")
    assert direct.list("ann", ".png") == ["ann/p_train/2.png", "ann/p_val/1.png"]


def test_reopens_after_fork_and_pickles(tmp_path):
    (tmp_path / "x.zip").write_bytes(zip_bytes({"x/a.txt": b"a"}))
    tree = open_tree(tmp_path)
    assert tree.read_bytes("x/a.txt") == b"a"
    source = tree._zips[0]
    first = source._zip
    source._pid = -1  # what a forked worker sees: another pid
    assert tree.read_bytes("x/a.txt") == b"a"
    assert source._zip is not first
    clone = pickle.loads(pickle.dumps(tree))
    assert clone._zips[0]._zip is None and clone.read_bytes("x/a.txt") == b"a"


def test_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: dataset path does not exist$"):
        open_tree(tmp_path / "nowhere")
    (tmp_path / "f.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"f\.txt: not a folder or a zip archive"):
        open_tree(tmp_path / "f.txt")
    (tmp_path / "bad.json").write_text('{"a": 1,}')
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "cut.png").write_bytes(png_bytes(RGB)[:60])
    tree = open_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"bad\.json: invalid JSON \(.* line 1 column 9\)$"):
        tree.read_json("bad.json")
    with pytest.raises(DatasetError, match=r"bad\.png: not an image"):
        tree.open_image("bad.png")
    with pytest.raises(DatasetError, match=r"cut\.png: truncated or corrupt image"):
        tree.open_image("cut.png")
    with pytest.raises(DatasetError, match=r"expected file missing: thing; tried a/b, c"):
        tree.find(["a/b", "c"], "thing")
    with pytest.raises(ValueError, match="leaves the dataset root"):
        tree.exists("../x")
