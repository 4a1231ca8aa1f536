"""Cityscapes semantic reader: label ids -> the 19 train ids, extracted and zipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixture_files import encode as png
from fixture_files import write, zip_bytes

from eomt.data import DatasetError, open_dataset
from eomt.data.cityscapes import CITYSCAPES_CLASSES, label_to_train_table

H, W = 24, 32


NAMES = [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")]


def label_ids() -> list[np.ndarray]:
    a = np.zeros((H, W), np.uint8)  # 0 unlabeled -> ignore
    a[:6] = 7  # road -> 0
    a[6:12] = 26  # car -> 13
    a[12:18] = 33  # bicycle -> 18
    a[18:, :8] = 4  # static -> ignore
    a[18:, 8:] = 23  # sky -> 10
    b = np.full((H, W), 24, np.uint8)  # person -> 11
    b[0] = 30  # trailer -> ignore
    return [a, b]


def files(labels=None) -> dict[str, bytes]:
    out = {"README": b"cityscapes"}
    for (city, name), label in zip(NAMES, labels or label_ids(), strict=True):
        rgb = np.random.default_rng(len(out)).integers(0, 255, (H, W, 3), dtype=np.uint8)
        out[f"leftImg8bit/val/{city}/{name}_leftImg8bit.png"] = png(rgb)
        out[f"gtFine/val/{city}/{name}_gtFine_labelIds.png"] = png(label)
        out[f"gtFine/val/{city}/{name}_gtFine_color.png"] = png(rgb)
    return out


def check(ds):
    assert len(ds) == 2 and ds.info.class_names == CITYSCAPES_CLASSES and ds.info.num_classes == 19
    assert ds.info.thing_classes == set(range(11, 19)) and ds.info.to_contiguous(26) == 13
    a = label_ids()[0].astype(np.int64)
    expected = np.full((H, W), 255)
    for label_id, train_id in [(7, 0), (26, 13), (33, 18), (23, 10)]:
        expected[a == label_id] = train_id
    s = ds[0]
    assert s.image_id == "frankfurt_000000_000294" and s.file_name == "frankfurt_000000_000294_leftImg8bit.png"
    assert s.labels.tolist() == [0, 10, 13, 18]
    assert torch.equal(s.semantic_map(), torch.from_numpy(expected))
    assert torch.equal(ds[1].semantic_map()[1:], torch.full((H - 1, W), 11)) and ds[1].semantic_map()[0, 0] == 255
    assert ds.index_of("lindau_000001_000019_leftImg8bit.png") == 1 and ds.index_of("lindau_000001_000019") == 1


def test_train_id_table():
    table = label_to_train_table()
    assert table[[7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]].tolist() == list(range(19))
    assert (np.delete(table, [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]) == 255).all()


def test_cityscapes_layouts(tmp_path):
    f = files()
    write(tmp_path / "extracted" / "cityscapes", f)
    check(open_dataset("cityscapes_semantic", tmp_path / "extracted"))
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "leftImg8bit_trainvaltest.zip").write_bytes(
        zip_bytes({k: v for k, v in f.items() if k.startswith("leftImg8bit")}))
    (tmp_path / "zips" / "gtFine_trainvaltest.zip").write_bytes(
        zip_bytes({k: v for k, v in f.items() if not k.startswith("leftImg8bit")}))
    check(open_dataset("cityscapes_semantic", tmp_path / "zips"))


def test_cityscapes_errors(tmp_path):
    labels = label_ids()
    labels[1][5, 5] = 34
    f = files(labels)
    del f["gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"]
    write(tmp_path, f)
    with pytest.raises(DatasetError, match=r"frankfurt_000000_000294_leftImg8bit\.png: image without its annotation "
                                           r".*frankfurt_000000_000294_gtFine_labelIds\.png$"):
        open_dataset("cityscapes_semantic", tmp_path)
    (tmp_path / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png").unlink()
    ds = open_dataset("cityscapes_semantic", tmp_path)
    with pytest.raises(DatasetError, match=r"lindau_000001_000019_gtFine_labelIds\.png: label id 34 out of range "
                                           r"\(0\.\.33\)$"):
        ds[0]
    with pytest.raises(DatasetError, match=r"expected file missing: gtFine/train/"):
        (tmp_path / "leftImg8bit/train").mkdir()
        open_dataset("cityscapes_semantic", tmp_path, "train")
