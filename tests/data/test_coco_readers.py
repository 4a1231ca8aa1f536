"""COCO panoptic and instance readers over extracted folders, the original zips and nested zips."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from fixture_files import encode as png_bytes
from fixture_files import write, zip_bytes
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.data import DatasetError, open_dataset
from eomt.outputs.coco_formats import encode_rle

H, W = 24, 32
CATEGORIES = [  # unsorted on purpose: contiguous ids follow the category ids
    {"id": 92, "name": "wall", "isthing": 0, "supercategory": "s"},
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "p"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "v"},
]
IMAGES = [{"id": 7, "file_name": "000000000007.jpg", "height": H, "width": W},
          {"id": 9, "file_name": "000000000009.jpg", "height": H, "width": W}]


def jpg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- panoptic

def panoptic_ids() -> list[tuple[np.ndarray, list[dict]]]:
    a = np.zeros((H, W), np.int64)
    a[:, :10] = 300  # person (R 44, G 1)
    a[:12, 10:] = 70000  # car crowd (B 1)
    a[12:, 10:] = 5  # wall
    a[0, 0] = 0  # one void pixel
    segments_a = [{"id": 300, "category_id": 1, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]},
                  {"id": 70000, "category_id": 3, "iscrowd": 1},
                  {"id": 5, "category_id": 92}]  # iscrowd missing: 0
    b = np.full((H, W), 16777215, np.int64)
    b[:5] = 0
    return [(a, segments_a), (b, [{"id": 16777215, "category_id": 92, "iscrowd": 0}])]


def panoptic_files(ann_dir="annotations", png_dir="annotations/panoptic_val2017", json_doc=None):
    ids = panoptic_ids()
    doc = json_doc or {
        "images": IMAGES, "categories": CATEGORIES,
        "annotations": [{"image_id": img["id"], "file_name": img["file_name"].replace(".jpg", ".png"),
                         "segments_info": segs} for img, (_, segs) in zip(IMAGES, ids, strict=True)]}
    json_file = {f"{ann_dir}/panoptic_val2017.json": json.dumps(doc).encode()}
    pngs = {f"{png_dir}/{img['file_name'].replace('.jpg', '.png')}": png_bytes(to_rgb(a))
            for img, (a, _) in zip(IMAGES, ids, strict=True)}
    images = {f"val2017/{img['file_name']}": jpg_bytes(img["id"]) for img in IMAGES}
    return json_file, pngs, images


def check_panoptic(ds):
    assert len(ds) == 2
    assert ds.info.name == "coco_panoptic" and ds.info.task == "panoptic"
    assert ds.info.class_names == ["person", "car", "wall"]
    assert ds.info.category_ids == [1, 3, 92] and ds.info.thing_classes == {0, 1}
    assert ds.info.to_contiguous(92) == 2
    assert [ds.file_name(i) for i in range(2)] == ["000000000007.jpg", "000000000009.jpg"]
    assert ds.index_of("000000000009.png") == 1 and ds.index_of("preds/000000000007.png") == 0
    a, _ = panoptic_ids()[0]
    s = ds[0]
    assert s.image_id == 7 and s.image.size == (W, H) and s.image.mode == "RGB"
    assert torch.equal(s.masks, torch.from_numpy(np.stack([a == 300, a == 70000, a == 5])))
    assert s.labels.tolist() == [0, 1, 2] and s.labels.dtype == torch.int64
    assert s.iscrowd.tolist() == [False, True, False]
    expected = np.full((H, W), 255)
    expected[a == 300], expected[a == 5] = 0, 2
    assert torch.equal(s.semantic_map(), torch.from_numpy(expected))
    seg, segments = s.panoptic_map()
    assert segments == [{"id": 0, "label_id": 0, "iscrowd": False}, {"id": 1, "label_id": 1, "iscrowd": True},
                        {"id": 2, "label_id": 2, "iscrowd": False}]
    assert seg[0, 0] == -1 and seg[0, 5] == 0 and seg[0, 20] == 1 and seg[20, 20] == 2
    s = ds[-1]
    assert s.masks.shape == (1, H, W) and s.masks[0, 5:].all() and not s.masks[0, :5].any()
    assert s.labels.tolist() == [2]


def test_coco_panoptic_extracted(tmp_path):
    json_file, pngs, images = panoptic_files()
    write(tmp_path, {**json_file, **pngs, **images})
    ds = open_dataset("coco_panoptic", tmp_path)
    check_panoptic(ds)
    assert ds.image_path(1) == str(tmp_path / "val2017" / "000000000009.jpg")


def test_coco_panoptic_detectron2_layout_in_subfolder(tmp_path):
    json_file, pngs, images = panoptic_files(png_dir="panoptic_val2017")
    write(tmp_path / "coco", {**json_file, **pngs, **images})
    check_panoptic(open_dataset("coco_panoptic", tmp_path, split="val2017"))


@pytest.mark.parametrize("inner_compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_coco_panoptic_original_zips(tmp_path, inner_compression):
    json_file, pngs, images = panoptic_files(png_dir="panoptic_val2017")
    train_inner = zip_bytes({"panoptic_train2017/x.png": b"never read"})
    outer = {**json_file, "annotations/panoptic_train2017.zip": train_inner,
             "annotations/panoptic_val2017.zip": zip_bytes(pngs, inner_compression)}
    (tmp_path / "panoptic_annotations_trainval2017.zip").write_bytes(zip_bytes(outer))
    (tmp_path / "val2017.zip").write_bytes(zip_bytes(images))
    ds = open_dataset("coco_panoptic", tmp_path)
    check_panoptic(ds)
    assert ds.image_path(0) == f"{tmp_path / 'val2017.zip'}/val2017/000000000007.jpg"
    train = [s for s in ds.tree._zips if s.display.endswith("panoptic_train2017.zip")]
    assert train and train[0]._members is None  # the train PNGs were never opened


def test_coco_panoptic_annotations_extracted_inner_zip_kept(tmp_path):
    json_file, pngs, images = panoptic_files(png_dir="panoptic_val2017")
    write(tmp_path, {**json_file, **images, "annotations/panoptic_val2017.zip": zip_bytes(pngs)})
    check_panoptic(open_dataset("coco_panoptic", tmp_path))


def test_coco_panoptic_whole_folder_zipped(tmp_path):
    json_file, pngs, images = panoptic_files()
    files = {f"coco/{k}": v for k, v in {**json_file, **pngs, **images}.items()}
    (tmp_path / "coco.zip").write_bytes(zip_bytes(files))
    check_panoptic(open_dataset("coco_panoptic", tmp_path / "coco.zip"))


def test_coco_panoptic_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"expected file missing: panoptic_val2017\.json; tried "
                                           r"annotations/panoptic_val2017\.json, panoptic_val2017\.json"):
        open_dataset("coco_panoptic", tmp_path)
    json_file, pngs, images = panoptic_files()
    write(tmp_path, {**json_file, **images})
    with pytest.raises(DatasetError, match=r"expected file missing: 000000000007\.png .*tried "
                                           r"annotations/panoptic_val2017/000000000007\.png, "
                                           r"panoptic_val2017/000000000007\.png"):
        open_dataset("coco_panoptic", tmp_path)

    json_path = tmp_path / "annotations" / "panoptic_val2017.json"
    doc = json.loads(json_path.read_text())
    write(tmp_path, pngs)
    broken = json.loads(json.dumps(doc))
    del broken["annotations"][1]["segments_info"][0]["category_id"]
    json_path.write_text(json.dumps(broken))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: missing field 'category_id' in "
                                           r"annotations\[1\]\.segments_info\[0\]$"):
        open_dataset("coco_panoptic", tmp_path)
    broken = json.loads(json.dumps(doc))
    del broken["categories"]
    json_path.write_text(json.dumps(broken))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: missing field 'categories' in the top level"):
        open_dataset("coco_panoptic", tmp_path)
    broken = json.loads(json.dumps(doc))
    broken["annotations"][0]["segments_info"][2]["category_id"] = 93
    json_path.write_text(json.dumps(broken))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: segment 5 of 000000000007\.png has "
                                           r"category_id 93, not one of the 3 category ids 1\.\.92"):
        open_dataset("coco_panoptic", tmp_path)
    broken = json.loads(json.dumps(doc))
    broken["annotations"].pop()
    json_path.write_text(json.dumps(broken))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: image 000000000009\.jpg \(id 9\) has no "
                                           r"annotation"):
        open_dataset("coco_panoptic", tmp_path)
    json_path.write_text(json.dumps(doc)[:-3])
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: invalid JSON"):
        open_dataset("coco_panoptic", tmp_path)

    json_path.write_text(json.dumps(doc))
    bad = panoptic_ids()[0][0].copy()
    bad[3, 3], bad[4, 4] = 42, 43
    (tmp_path / "annotations/panoptic_val2017/000000000007.png").write_bytes(png_bytes(to_rgb(bad)))
    ds = open_dataset("coco_panoptic", tmp_path)
    with pytest.raises(DatasetError, match=r"000000000007\.png: segment ids 42, 43 are not in the segments_info"):
        ds[0]
    (tmp_path / "val2017/000000000009.jpg").unlink()
    with pytest.raises(DatasetError, match=r"val2017/000000000009\.jpg: image missing"):
        ds[1]
    with pytest.raises(DatasetError, match="no image named 'nope.png'"):
        ds.index_of("nope.png")
    with pytest.raises(DatasetError, match="unknown COCO split 'test'"):
        open_dataset("coco_panoptic", tmp_path, split="test")


# ---------------------------------------------------------------------------------------------- instance

def rect(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [H, W], "counts": counts}


POLYGON = [[2.0, 3.0, 10.0, 3.0, 10.0, 12.0, 2.0, 12.0], [20.0, 20.0, 22.0, 20.0]]  # second: degenerate
CAR = rect(0, 6, 20, 30)
CROWD = rect(15, 24, 0, 32)


def instance_doc():
    categories = [{k: v for k, v in c.items() if k != "isthing"} for c in CATEGORIES]
    return {"images": json.loads(json.dumps(IMAGES)), "categories": categories,
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": POLYGON},
                {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": encode_rle(CAR)},
                {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(CROWD)},
            ]}


def check_instance(ds):
    assert len(ds) == 2 and ds.info.task == "instance" and ds.info.name == "coco_instance"
    assert ds.info.class_names == ["person", "car", "wall"] and ds.info.thing_classes == {0, 1, 2}
    s = ds[0]
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(POLYGON[:1], H, W))).astype(bool)
    assert polygon.sum() > 60 and not polygon[13:].any()
    assert torch.equal(s.masks, torch.from_numpy(np.stack([polygon, CAR, CROWD])))
    assert s.labels.tolist() == [0, 1, 0] and s.iscrowd.tolist() == [False, False, True]
    empty = ds[1]
    assert empty.masks.shape == (0, H, W) and empty.labels.shape == (0,) and empty.image_id == 9
    assert torch.equal(empty.semantic_map(), torch.full((H, W), 255))


def test_coco_instance_extracted_and_zipped(tmp_path):
    images = {f"val2017/{img['file_name']}": jpg_bytes(img["id"]) for img in IMAGES}
    ann = {"annotations/instances_val2017.json": json.dumps(instance_doc()).encode()}
    write(tmp_path / "extracted", {**images, **ann})
    check_instance(open_dataset("coco_instance", tmp_path / "extracted"))
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "val2017.zip").write_bytes(zip_bytes(images))
    (tmp_path / "zips" / "annotations_trainval2017.zip").write_bytes(zip_bytes(ann))
    check_instance(open_dataset("coco_instance", tmp_path / "zips"))


def test_coco_instance_errors(tmp_path):
    doc = instance_doc()
    write(tmp_path, {f"val2017/{img['file_name']}": jpg_bytes(img["id"]) for img in IMAGES})
    json_path = tmp_path / "instances_val2017.json"
    doc["annotations"][1]["segmentation"] = {"size": [H, W]}
    json_path.write_text(json.dumps(doc))
    ds = open_dataset("coco_instance", tmp_path)
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: bad segmentation in annotation 2 of image "
                                           r"000000000007\.jpg: segmentation must be"):
        ds[0]
    del doc["images"][0]["height"]
    json_path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: missing field 'height' in images\[0\]$"):
        open_dataset("coco_instance", tmp_path)
    doc = instance_doc()
    doc["annotations"][0]["category_id"] = 0
    json_path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: annotations\[0\] \(id 1\) has category_id 0, "
                                           r"not one of the 3 category ids 1\.\.92"):
        open_dataset("coco_instance", tmp_path)
    doc = instance_doc()
    doc["images"][1]["width"] = 33
    json_path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"000000000009\.jpg: image is 32x24 pixels but its annotation "
                                           r"instances_val2017\.json is 33x24"):
        open_dataset("coco_instance", tmp_path)[1]


def _labels(batch):
    return [(s.image_id, s.labels.tolist(), int(s.masks.sum())) for s in batch]


def test_forked_dataloader_workers_read_nested_zips(tmp_path):
    json_file, pngs, images = panoptic_files(png_dir="panoptic_val2017")
    (tmp_path / "panoptic_annotations_trainval2017.zip").write_bytes(
        zip_bytes({**json_file, "annotations/panoptic_val2017.zip": zip_bytes(pngs, zipfile.ZIP_STORED)}))
    (tmp_path / "val2017.zip").write_bytes(zip_bytes(images))
    ds = open_dataset("coco_panoptic", tmp_path)
    expected = _labels([ds[0], ds[1]])  # the parent has the zips open before the workers fork
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=_labels,
                                         multiprocessing_context="fork")
    assert [item for batch in loader for item in batch] == expected
    assert [item for batch in loader for item in batch] == expected
