"""Datasets are checked when they are opened, with messages naming the image and the field; a segment id
listed twice in the ground truth counts once, as panopticapi counts it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixture_files import encode, write

from eomt.cli.commands import main
from eomt.data import DatasetError, open_dataset
from eomt.training.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), num_train=1, num_val=3, size=48, seed=4)


def _perfect_predictions(data: Path, out: Path) -> Path:
    """The ground truth of the val split as prediction files (dataset category ids)."""
    out.mkdir()
    doc = json.loads((data / "annotations" / "panoptic_val2017.json").read_text())
    for ann in doc["annotations"]:
        stem = Path(ann["file_name"]).stem
        shutil.copy(data / "annotations" / "panoptic_val2017" / ann["file_name"], out / f"{stem}.png")
        (out / f"{stem}.json").write_text(json.dumps({"segments_info": ann["segments_info"]}))
    return out


def _pq(data: Path, predictions: Path, out: Path) -> float:
    assert main(["eval", "-p", str(predictions), "--data", str(data), "--dataset", "coco_panoptic", "-o",
                 str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())["metrics"]["PQ"]


def test_a_segment_listed_twice_alike_counts_once(shapes, tmp_path):
    """panopticapi keys ground-truth segments by id: a repeated entry is one segment. Counted twice, the
    copy would be a segment without pixels, a false negative, and perfect predictions would score below 100."""
    predictions = _perfect_predictions(shapes, tmp_path / "preds")
    assert _pq(shapes, predictions, tmp_path / "m0") == pytest.approx(100.0)
    data = tmp_path / "ds"
    shutil.copytree(shapes, data)
    path = data / "annotations" / "panoptic_val2017.json"
    doc = json.loads(path.read_text())
    segments = doc["annotations"][0]["segments_info"]
    segments.append(dict(segments[0]))
    path.write_text(json.dumps(doc))
    assert _pq(data, predictions, tmp_path / "m1") == pytest.approx(100.0)
    sample = open_dataset("coco_panoptic", data, "val")[0]
    assert len(sample) == len(segments) - 1


def test_two_images_of_one_name_in_a_custom_dataset(tmp_path):
    label = np.zeros((16, 16), np.uint8)
    rgb = np.full((16, 16, 3), 90, np.uint8)
    write(tmp_path, {"classes.json": json.dumps({"names": ["a", "b"]}).encode(),
                     "images/x.jpg": encode(rgb, "JPEG"), "images/x.png": encode(rgb),
                     "masks/x.png": encode(label)})
    with pytest.raises(DatasetError) as info:
        open_dataset("custom", tmp_path)
    message = str(info.value)
    assert "x.jpg" in message and "x.png" in message and "masks/x.png" in message and "\n" not in message


def test_an_instance_json_with_an_image_id_twice(tmp_path):
    rgb = np.full((16, 16, 3), 90, np.uint8)
    doc = {"images": [{"id": 7, "file_name": "a.jpg", "height": 16, "width": 16},
                      {"id": 7, "file_name": "b.jpg", "height": 16, "width": 16}],
           "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    write(tmp_path, {"annotations/instances_val2017.json": json.dumps(doc).encode(),
                     "val2017/a.jpg": encode(rgb, "JPEG"), "val2017/b.jpg": encode(rgb, "JPEG")})
    with pytest.raises(DatasetError, match=r"images\[1\] \(b\.jpg\) has id 7, which images\[0\] \(a\.jpg\)"):
        open_dataset("coco_instance", tmp_path)
