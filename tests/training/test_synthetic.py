"""The synthetic panoptic dataset: written in the COCO panoptic layout, valid, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eomt.data import open_dataset
from eomt.outputs.coco_formats import rgb_to_panoptic
from eomt.training.synthetic import (
    STUFF_CLASSES,
    SYNTHETIC_CATEGORIES,
    THING_CLASSES,
    make_synthetic_dataset,
    render_synthetic_image,
)

H, W = 48, 64
NUM_THINGS, NUM_STUFF = len(THING_CLASSES), len(STUFF_CLASSES)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=6, num_val=3, size=(H, W), seed=0)


def test_layout(dataset_root):
    for split, count in (("train", 6), ("val", 3)):
        data = json.loads((dataset_root / "annotations" / f"panoptic_{split}2017.json").read_text())
        assert len(data["images"]) == len(data["annotations"]) == count
        assert data["categories"] == SYNTHETIC_CATEGORIES
        for image, ann in zip(data["images"], data["annotations"], strict=True):
            assert image["file_name"].endswith(".png") and ann["file_name"].endswith(".png")
            assert (image["height"], image["width"]) == (H, W)
            assert (dataset_root / f"{split}2017" / image["file_name"]).is_file()
            png = np.asarray(Image.open(dataset_root / "annotations" / f"panoptic_{split}2017" / ann["file_name"]))
            ids = rgb_to_panoptic(png, raw=True)
            for segment in ann["segments_info"]:
                mask = ids == segment["id"]
                assert segment["area"] == int(mask.sum()) > 0
                ys, xs = np.nonzero(mask)
                assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@pytest.mark.parametrize("split,count", [("train", 6), ("val", 3)])
def test_read_back(dataset_root, split, count):
    ds = open_dataset("coco_panoptic", dataset_root, split)
    assert len(ds) == count
    info = ds.info
    assert info.class_names == list(THING_CLASSES) + list(STUFF_CLASSES)
    assert info.thing_classes == set(range(NUM_THINGS))
    assert info.stuff_classes == set(range(NUM_THINGS, NUM_THINGS + NUM_STUFF))
    for i in range(len(ds)):
        sample = ds[i]
        assert sample.image.size == (W, H) and sample.image.mode == "RGB"
        assert sample.masks.shape[1:] == (H, W) and sample.masks.dtype == torch.bool
        assert int(sample.masks.sum(0).max()) <= 1  # no overlaps
        assert bool(sample.masks.flatten(1).any(1).all())  # no empty segment
        assert not bool(sample.iscrowd.any())
        labels = sample.labels.tolist()
        assert all(0 <= c < info.num_classes for c in labels)
        assert any(c in info.thing_classes for c in labels)
        assert any(c in info.stuff_classes for c in labels)
        stuff = [c for c in labels if c in info.stuff_classes]
        assert len(stuff) == len(set(stuff))  # one segment per stuff class


def test_deterministic(dataset_root, tmp_path):
    again = make_synthetic_dataset(tmp_path / "again", num_train=6, num_val=3, size=(H, W), seed=0)
    assert tree_bytes(again) == tree_bytes(dataset_root)
    other = make_synthetic_dataset(tmp_path / "other", num_train=6, num_val=3, size=(H, W), seed=1)
    other_files = tree_bytes(other)
    reference = tree_bytes(dataset_root)
    assert other_files.keys() == reference.keys()
    for name in reference:
        if name.endswith(".png"):
            assert other_files[name] != reference[name], name


def test_prefix_stable(dataset_root, tmp_path):
    """Image i depends only on (seed, split, i), not on how many images are written."""
    fewer = make_synthetic_dataset(tmp_path, num_train=2, num_val=1, size=(H, W), seed=0)
    for rel in ("train2017/000000000001.png", "train2017/000000000002.png", "val2017/000000000001.png",
                "annotations/panoptic_train2017/000000000002.png"):
        assert (fewer / rel).read_bytes() == (dataset_root / rel).read_bytes()


def test_render_many():
    """Over many draws: every class appears, things are big enough, ids are consistent."""
    rng = np.random.default_rng(123)
    seen = set()
    for _ in range(40):
        image, ids, segments = render_synthetic_image(rng, 64, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert sorted(np.unique(ids[ids > 0]).tolist()) == [s["id"] for s in segments]
        assert 1 <= sum(s["category_id"] <= NUM_THINGS for s in segments) <= 4
        assert min(s["area"] for s in segments) >= 20
        seen.update(s["category_id"] for s in segments)
    assert seen == {c["id"] for c in SYNTHETIC_CATEGORIES}


def test_square_images_and_int_size(tmp_path):
    root = make_synthetic_dataset(tmp_path, num_train=1, num_val=0, size=32)
    sample = open_dataset("coco_panoptic", root, "train")[0]
    assert sample.image.size == (32, 32)
    assert len(open_dataset("coco_panoptic", root, "val")) == 0


@pytest.mark.parametrize("kwargs", [{"size": (8, 64)}, {"size": (1, 2, 3)}, {"num_train": -1}, {"seed": -1},
                                    {"num_val": 1.5}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, **kwargs)
