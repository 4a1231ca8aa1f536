"""The custom layout: images/ + masks/ (+ instances/) + classes.json / classes.yaml."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from fixture_files import encode, write

from eomt.data import DatasetError, open_dataset

H, W = 24, 32


def class_maps() -> dict[str, np.ndarray]:
    a = np.zeros((H, W), np.uint8)  # background
    a[:, 16:] = 2  # cat
    a[0] = 255
    b = np.full((H, W), 1, np.uint8)  # grass
    b[10:20, 10:20] = 2
    return {"a": a, "sub/b": b}


def files(split_dir: str = "", maps=None, classes=None) -> dict[str, bytes]:
    out = {"classes.json": json.dumps(classes or {"names": ["background", "grass", "cat"],
                                                  "things": ["cat"]}).encode()}
    for k, (stem, label) in enumerate((maps or class_maps()).items()):
        rgb = np.random.default_rng(k).integers(0, 255, (H, W, 3), dtype=np.uint8)
        out[f"images{split_dir}/{stem}.{'jpg' if k == 0 else 'png'}"] = encode(rgb, "JPEG" if k == 0 else "PNG")
        out[f"masks{split_dir}/{stem}.png"] = encode(label)
    out[f"images{split_dir}/notes.txt"] = b"ignored"
    return out


def check_semantic(ds):
    assert len(ds) == 2 and ds.info.task == "semantic" and ds.info.name == "custom"
    assert ds.info.class_names == ["background", "grass", "cat"] and ds.info.thing_classes == {2}
    a = class_maps()["a"]
    s = ds[0]
    assert s.file_name == "a.jpg" and s.image_id == "a"
    assert s.labels.tolist() == [0, 2]
    assert torch.equal(s.semantic_map(), torch.from_numpy(a.astype(np.int64)))
    assert ds[1].file_name == "b.png" and ds[1].labels.tolist() == [1, 2] and ds.index_of("b") == 1


def test_custom_flat_split_and_zip(tmp_path):
    write(tmp_path / "flat", files())
    check_semantic(open_dataset("custom", tmp_path / "flat"))
    write(tmp_path / "split", files("/val"))
    check_semantic(open_dataset("custom", tmp_path / "split", split="val"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files().items():
            z.writestr(f"mydata/{name}", data)
    (tmp_path / "mydata.zip").write_bytes(buffer.getvalue())
    check_semantic(open_dataset("custom", tmp_path / "mydata.zip"))


def test_custom_yaml_classes(tmp_path):
    pytest.importorskip("yaml")
    f = files()
    del f["classes.json"]
    f["classes.yaml"] = b"names: [background, grass, cat]\nthings: [2]\nignore_index: 255\n"
    write(tmp_path, f)
    check_semantic(open_dataset("custom", tmp_path))


def test_custom_panoptic(tmp_path):
    f = files()
    instances = np.zeros((H, W), np.uint8)
    instances[:, 16:24] = 1
    instances[5:, 24:] = 2  # the rest of the cat pixels ([1:5, 24:]) have no instance: crowd
    f["instances/a.png"] = encode(instances)
    b = np.zeros((H, W, 3), np.uint8)
    b[10:20, 10:20] = (1, 1, 0)  # RGB instance id 257
    f["instances/sub/b.png"] = encode(b)
    write(tmp_path, f)
    ds = open_dataset("custom", tmp_path)
    assert ds.info.task == "panoptic"
    s = ds[0]
    a = class_maps()["a"]
    assert s.labels.tolist() == [2, 2, 0, 2] and s.iscrowd.tolist() == [False, False, False, True]
    expected = np.stack([instances == 1, instances == 2, a == 0, (a == 2) & (instances == 0)])
    assert torch.equal(s.masks, torch.from_numpy(expected))
    assert s.masks[3].sum() == 4 * 8
    s = ds[1]
    assert s.labels.tolist() == [2, 1] and s.iscrowd.tolist() == [False, False]


def test_custom_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"expected file missing: classes\.json or classes\.yaml or classes\.yml"):
        open_dataset("custom", tmp_path)
    maps = class_maps()
    maps["sub/b"][3, 3] = 7
    f = files(maps=maps)
    del f["masks/a.png"]
    write(tmp_path, f)
    with pytest.raises(DatasetError, match=r"images/a\.jpg: image without its annotation .*masks/a\.png$"):
        open_dataset("custom", tmp_path)
    (tmp_path / "images/a.jpg").unlink()
    ds = open_dataset("custom", tmp_path)
    with pytest.raises(DatasetError, match=r"masks/sub/b\.png: label id 7 out of range \(0\.\.2, ignore 255\)$"):
        ds[0]
    (tmp_path / "classes.json").write_text(json.dumps({"labels": ["x"]}))
    with pytest.raises(DatasetError, match=r"classes\.json: missing field 'names' in the class file$"):
        open_dataset("custom", tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["x", "y"], "things": ["z"]}))
    with pytest.raises(DatasetError, match=r"classes\.json: 'things' entry 'z' is neither"):
        open_dataset("custom", tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["x", "y"], "ignore_index": 1}))
    with pytest.raises(DatasetError, match=r"classes\.json: 'ignore_index' must be an integer outside"):
        open_dataset("custom", tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["background", "grass", "cat"]}))
    (tmp_path / "instances").mkdir()
    with pytest.raises(DatasetError, match=r"classes\.json: missing field 'things' \(required with the folder"):
        open_dataset("custom", tmp_path)


def test_custom_yaml_error_keeps_line_and_column(tmp_path):
    content = files()
    del content["classes.json"]
    content["classes.yaml"] = b"names:\n\t- background\n"
    write(tmp_path / "tabbed", content)
    with pytest.raises(DatasetError) as info:
        open_dataset("custom", tmp_path / "tabbed")
    message = str(info.value)
    assert "classes.yaml" in message and "line 2, column 1" in message and "not tabs" in message, message
