"""ADE20K semantic (ADEChallengeData2016) and panoptic readers, extracted and zipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixture_files import encode, write, zip_bytes

from eomt.data import DatasetError, open_dataset
from eomt.data.ade20k import ADE20K_CLASSES

H, W = 24, 32


def jpg(seed: int) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8), "JPEG")


def semantic_labels() -> dict[str, np.ndarray]:
    a = np.zeros((H, W), np.uint8)
    a[:8] = 1  # wall -> 0
    a[8:16] = 150  # flag -> 149
    a[16:, :4] = 13  # person -> 12
    b = np.full((H, W), 3, np.uint8)  # sky -> 2
    return {"ADE_val_00000001": a, "ADE_val_00000002": b}


def semantic_files(labels=None) -> dict[str, bytes]:
    files = {}
    for k, (stem, label) in enumerate((labels or semantic_labels()).items()):
        files[f"ADEChallengeData2016/images/validation/{stem}.jpg"] = jpg(k)
        files[f"ADEChallengeData2016/annotations/validation/{stem}.png"] = encode(label)
    files["ADEChallengeData2016/images/training/ADE_train_00000001.jpg"] = jpg(9)
    files["ADEChallengeData2016/annotations/training/ADE_train_00000001.png"] = encode(np.zeros((H, W), np.uint8))
    files["ADEChallengeData2016/objectInfo150.csv"] = b"Idx,Name\n"
    return files


def check_semantic(ds):
    assert len(ds) == 2 and ds.info.task == "semantic" and ds.info.num_classes == 150
    assert ds.info.class_names[0] == "wall" and ds.info.class_names[149] == "flag" and ds.info.to_contiguous(13) == 12
    a = semantic_labels()["ADE_val_00000001"].astype(np.int64)
    s = ds[0]
    assert s.image_id == "ADE_val_00000001" and s.file_name == "ADE_val_00000001.jpg" and s.image.size == (W, H)
    assert s.labels.tolist() == [0, 12, 149] and not s.iscrowd.any()
    assert torch.equal(s.masks, torch.from_numpy(np.stack([a == 1, a == 13, a == 150])))
    assert torch.equal(s.semantic_map(), torch.from_numpy(np.where(a == 0, 255, a - 1)))
    assert ds[1].labels.tolist() == [2]
    assert ds.index_of("ADE_val_00000002") == 1


def test_ade20k_semantic_layouts(tmp_path):
    files = semantic_files()
    write(tmp_path / "extracted", files)
    check_semantic(open_dataset("ade20k_semantic", tmp_path / "extracted"))
    check_semantic(open_dataset("ade20k_semantic", tmp_path / "extracted" / "ADEChallengeData2016", "validation"))
    assert len(open_dataset("ade20k_semantic", tmp_path / "extracted", split="train")) == 1
    (tmp_path / "zipped").mkdir()
    (tmp_path / "zipped" / "ADEChallengeData2016.zip").write_bytes(zip_bytes(files))
    ds = open_dataset("ade20k_semantic", tmp_path / "zipped")
    check_semantic(ds)
    assert ds.image_path(0).endswith("ADEChallengeData2016.zip/ADEChallengeData2016/images/validation/"
                                      "ADE_val_00000001.jpg")
    check_semantic(open_dataset("ade20k_semantic", tmp_path / "zipped" / "ADEChallengeData2016.zip"))


def test_ade20k_semantic_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"expected file missing: images/validation/"):
        open_dataset("ade20k_semantic", tmp_path)
    labels = semantic_labels()
    labels["ADE_val_00000002"][0, 0] = 151
    files = semantic_files(labels)
    del files["ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"]
    write(tmp_path, files)
    with pytest.raises(DatasetError, match=r"images/validation/ADE_val_00000001\.jpg: image without its annotation "
                                           r".*annotations/validation/ADE_val_00000001\.png$"):
        open_dataset("ade20k_semantic", tmp_path)
    (tmp_path / "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg").unlink()
    ds = open_dataset("ade20k_semantic", tmp_path)
    with pytest.raises(DatasetError, match=r"ADE_val_00000002\.png: label id 151 out of range \(0\.\.150"):
        ds[0]
    with pytest.raises(DatasetError, match="unknown ADE20K split 'test'"):
        open_dataset("ade20k_semantic", tmp_path, split="test")


# ---------------------------------------------------------------------------------------------- panoptic

def panoptic_doc():
    categories = [{"id": i + 1, "name": name, "isthing": int(i >= 50)} for i, name in enumerate(ADE20K_CLASSES)]
    return {
        "images": [{"id": "ADE_val_00000001", "file_name": "ADE_val_00000001.jpg", "height": H, "width": W}],
        "annotations": [{"image_id": "ADE_val_00000001", "file_name": "ADE_val_00000001.png", "segments_info": [
            {"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 513, "category_id": 150, "iscrowd": 0},
            {"id": 514, "category_id": 150, "iscrowd": 0}]}],
        "categories": categories,
    }


def panoptic_ids() -> np.ndarray:
    ids = np.ones((H, W), np.int64)
    ids[:5, :5] = 513
    ids[10:, 10:] = 514
    ids[-1, -1] = 0
    return ids


def panoptic_files(ids=None) -> dict[str, bytes]:
    ids = panoptic_ids() if ids is None else ids
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    return {"ADEChallengeData2016/ade20k_panoptic_val.json": json.dumps(panoptic_doc()).encode(),
            "ADEChallengeData2016/ade20k_panoptic_val/ADE_val_00000001.png": encode(rgb),
            "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg": jpg(0)}


def check_panoptic(ds):
    assert len(ds) == 1 and ds.info.name == "ade20k_panoptic" and ds.info.num_classes == 150
    assert len(ds.info.thing_classes) == 100 and ds.info.thing_classes == set(range(50, 150))
    s = ds[0]
    ids = panoptic_ids()
    assert torch.equal(s.masks, torch.from_numpy(np.stack([ids == 1, ids == 513, ids == 514])))
    assert s.labels.tolist() == [0, 149, 149] and s.iscrowd.tolist() == [False] * 3
    assert s.image_id == "ADE_val_00000001"


def test_ade20k_panoptic_layouts(tmp_path):
    files = panoptic_files()
    write(tmp_path / "extracted", files)
    check_panoptic(open_dataset("ade20k_panoptic", tmp_path / "extracted"))
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "ade.zip").write_bytes(zip_bytes(files))
    check_panoptic(open_dataset("ade20k_panoptic", tmp_path / "z"))


def test_ade20k_panoptic_errors(tmp_path):
    ids = panoptic_ids()
    ids[0, 0] = 77
    write(tmp_path, panoptic_files(ids))
    with pytest.raises(DatasetError, match=r"ade20k_panoptic_val/ADE_val_00000001\.png: segment ids 77 are not in"):
        open_dataset("ade20k_panoptic", tmp_path)[0]
    with pytest.raises(DatasetError, match=r"expected file missing: ade20k_panoptic_train\.json"):
        open_dataset("ade20k_panoptic", tmp_path, "train")
