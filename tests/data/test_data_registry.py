"""open_dataset kinds, Sample maps and DatasetInfo."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from eomt.data import DATASET_KINDS, DatasetError, DatasetInfo, Sample, open_dataset


def test_unknown_kind_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset kind 'coco'; expected one of coco_panoptic, "
                                         r"coco_instance, ade20k_semantic, ade20k_panoptic, cityscapes_semantic, "
                                         r"custom$"):
        open_dataset("coco", tmp_path)
    for kind in DATASET_KINDS:
        with pytest.raises(DatasetError, match=r"missing: dataset path does not exist$"):
            open_dataset(kind, tmp_path / "missing")


def test_sample_maps_overlap_and_crowd():
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 1:3] = True  # overlaps mask 0 on row 1: the later mask wins
    masks[2, 3, :2] = True  # crowd
    s = Sample(image_id=1, file_name="x.jpg", image=Image.new("RGB", (5, 4)), masks=masks,
               labels=torch.tensor([4, 7, 9]), iscrowd=torch.tensor([False, False, True]))
    assert (s.height, s.width, len(s)) == (4, 5, 3)
    semantic = s.semantic_map(ignore_index=200)
    assert semantic[:, 0].tolist() == [4, 7, 7, 200]
    seg, segments = s.panoptic_map()
    assert seg[:, 0].tolist() == [0, 1, 1, 2] and seg[3, 4] == -1
    assert segments[2] == {"id": 2, "label_id": 9, "iscrowd": True}


def test_dataset_info():
    info = DatasetInfo(name="d", task="panoptic", class_names=["a", "b", "c"], thing_classes={0},
                       category_ids=[10, 20, 5])
    assert info.to_contiguous(5) == 2 and info.num_classes == 3 and info.stuff_classes == {1, 2}
    with pytest.raises(DatasetError, match="category id 6 is not one of"):
        info.to_contiguous(6)
    assert DatasetInfo(name="s", task="semantic", class_names=["x", "y"]).category_ids == [0, 1]
    with pytest.raises(ValueError, match="task must be one of"):
        DatasetInfo(name="s", task="detection", class_names=["x"])
