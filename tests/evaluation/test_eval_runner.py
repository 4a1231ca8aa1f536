"""`eomt eval` end to end: a model over fixture datasets, then `--predictions` on the written files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers
from helpers import PROCESSOR_SETTINGS, make_confident, make_reference
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.cli.commands import main

CATEGORIES = [{"id": 1, "name": "cat", "isthing": 1}, {"id": 2, "name": "dog", "isthing": 1},
              {"id": 7, "name": "sky", "isthing": 0}]
STEMS = ["000000000011", "000000000012", "000000000013"]


def _photo(index: int) -> Image.Image:
    source = Image.open("examples/coffee.png" if index % 2 else "examples/chelsea.png").convert("RGB")
    return source.resize((96, 64)).rotate(90 * index, expand=False)


def _layout(index: int) -> np.ndarray:
    """Segment ids: 1 = sky (stuff) background, 2-3 things, 0 = void border."""
    ids = np.ones((64, 96), np.int64)
    ids[10:40, 10 + 10 * index:50 + 10 * index] = 2
    ids[35:60, 55:90] = 3
    ids[:2] = 0
    return ids


def _write_coco_panoptic(root):
    (root / "val2017").mkdir(parents=True)
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    images, annotations = [], []
    for i, stem in enumerate(STEMS):
        _photo(i).save(root / "val2017" / f"{stem}.jpg", quality=95)
        ids = _layout(i)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / f"{stem}.png")
        segments = [{"id": 1, "category_id": 7, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0},
                    {"id": 3, "category_id": 2, "iscrowd": int(i == 2)}]
        images.append({"id": int(stem), "file_name": f"{stem}.jpg", "height": 64, "width": 96})
        annotations.append({"image_id": int(stem), "file_name": f"{stem}.png", "segments_info": segments})
    doc = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(doc))
    return root


def _write_coco_instance(root):
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir(parents=True)
    images, annotations = [], []
    for i, stem in enumerate(STEMS):
        _photo(i).save(root / "val2017" / f"{stem}.jpg", quality=95)
        ids = _layout(i)
        images.append({"id": int(stem), "file_name": f"{stem}.jpg", "height": 64, "width": 96})
        for segment, category in ((2, 1), (3, 2)):
            rle = mask_utils.encode(np.asfortranarray((ids == segment).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            annotations.append({"id": len(annotations) + 1, "image_id": int(stem), "category_id": category,
                                "segmentation": rle, "area": int((ids == segment).sum()),
                                "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
    doc = {"images": images, "annotations": annotations, "categories": CATEGORIES[:2] + [
        {"id": 3, "name": "bird"}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))
    return root


def _write_custom(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, stem in enumerate(STEMS):
        _photo(i).save(root / "images" / f"{stem}.png")
        labels = np.array([255, 2, 0, 1], np.uint8)[_layout(i)]
        Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
    (root / "classes.json").write_text(json.dumps({"names": ["cat", "dog", "sky"], "ignore_index": 255}))
    return root


DATASETS = {
    "panoptic": ("coco_panoptic", _write_coco_panoptic),
    "instance": ("coco_instance", _write_coco_instance),
    "semantic": ("custom", _write_custom),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for task in DATASETS:
        model = make_confident(make_reference("eomt", seed=2, num_labels=3, num_queries=12), 10.0, 30.0)
        model.attn_mask_probs.zero_()
        model.save_pretrained(root / task)
        transformers.EomtImageProcessor(**PROCESSOR_SETTINGS[task]).save_pretrained(root / task)
        out[task] = root / task
    return out


@pytest.mark.parametrize("task", list(DATASETS))
def test_eval_then_predictions_reproduce_the_metrics(models, tmp_path, task, capsys):
    kind, write = DATASETS[task]
    data = write(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["eval", "--model", str(models[task]), "--data", str(data), "--dataset", kind, "--out", str(out),
                 "-q"]) == 0
    printed = capsys.readouterr().out
    first = json.loads((out / "metrics.json").read_text())
    assert first["num_images"] == 3 and first["task"] == task
    headline = {"semantic": "mIoU", "panoptic": "PQ", "instance": "AP"}[task]
    assert headline in printed
    assert main(["eval", "--predictions", str(out), "--data", str(data), "--dataset", kind, "--out",
                 str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["metrics"] == first["metrics"]
    assert first["metrics"][headline] == first["metrics"][headline]  # not NaN: the metric saw data


def test_python_api_returns_a_plain_dict(models, tmp_path):
    import eomt

    data = _write_custom(tmp_path / "data")
    result = eomt.evaluate(str(models["semantic"]), data, "custom", progress=False)
    assert result["task"] == "semantic" and 0.0 <= result["metrics"]["mIoU"] <= 100.0
    json.dumps(result)  # plain, serialisable


def test_perfect_predictions_score_100(tmp_path):
    """Ground truth written as prediction files scores PQ 100 / mIoU 100."""
    data = _write_custom(tmp_path / "data")
    preds = tmp_path / "preds"
    preds.mkdir()
    for stem in STEMS:
        Image.open(data / "masks" / f"{stem}.png").save(preds / f"{stem}.png")
    assert main(["eval", "--predictions", str(preds), "--data", str(data), "--dataset", "custom", "--out",
                 str(tmp_path / "m")]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())["metrics"]
    assert metrics["mIoU"] == 100.0 and metrics["pixel_accuracy"] == 100.0


@pytest.mark.parametrize("case", ["missing_data", "stranger", "empty_dir", "bad_json"])
def test_bad_inputs_are_one_line_errors(tmp_path, case, capsys):
    data = _write_coco_panoptic(tmp_path / "data")
    preds = tmp_path / "preds"
    preds.mkdir()
    args = ["eval", "--predictions", str(preds), "--data", str(data), "--dataset", "coco_panoptic"]
    if case == "missing_data":
        args[4] = str(tmp_path / "nowhere")
        expect = str(tmp_path / "nowhere")
    elif case == "stranger":
        Image.new("RGB", (96, 64)).save(preds / "000000999999.png")
        (preds / "000000999999.json").write_text(json.dumps({"segments_info": []}))
        expect = "000000999999.png: prediction for an image that is not in"
    elif case == "empty_dir":
        expect = "no .png prediction files"
    else:
        for stem in STEMS:  # every image has its files (a partial set is refused first), the first is broken
            Image.new("RGB", (96, 64)).save(preds / f"{stem}.png")
            (preds / f"{stem}.json").write_text(json.dumps({"segments_info": []}))
        (preds / f"{STEMS[0]}.json").write_text("{broken")
        expect = f"{STEMS[0]}.json: cannot read prediction file"
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert expect in err and "\n" not in err, err


def test_perfect_panoptic_and_instance_files_score_100(tmp_path):
    """Ground truth written in the standard prediction formats: PQ 100 (crowd is ignored), AP 100."""
    data = _write_coco_panoptic(tmp_path / "pan")
    preds = tmp_path / "pan_preds"
    preds.mkdir()
    for i, stem in enumerate(STEMS):
        ids = _layout(i)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(preds / f"{stem}.png")
        segments = [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 2}]
        (preds / f"{stem}.json").write_text(json.dumps({"segments_info": segments}))
    assert main(["eval", "-p", str(preds), "--data", str(data), "--dataset", "coco_panoptic", "-o",
                 str(tmp_path / "pm")]) == 0
    metrics = json.loads((tmp_path / "pm" / "metrics.json").read_text())["metrics"]
    assert metrics["PQ"] == 100.0 and metrics["Things"]["n"] == 2 and metrics["Stuff"]["n"] == 1

    data = _write_coco_instance(tmp_path / "ins")
    preds = tmp_path / "ins_preds"
    preds.mkdir()
    for i, stem in enumerate(STEMS):
        ids = _layout(i)
        results = []
        for segment, category in ((2, 1), (3, 2)):
            rle = mask_utils.encode(np.asfortranarray((ids == segment).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": stem, "category_id": category, "segmentation": rle, "score": 0.9})
        (preds / f"{stem}.json").write_text(json.dumps(results))
    assert main(["eval", "-p", str(preds), "--data", str(data), "--dataset", "coco_instance", "-o",
                 str(tmp_path / "im")]) == 0
    metrics = json.loads((tmp_path / "im" / "metrics.json").read_text())["metrics"]
    assert metrics["AP"] == 100.0 and metrics["AP50"] == 100.0


def test_eval_with_the_onnxruntime_backend_gives_the_torch_metrics(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EOMT_CACHE", str(tmp_path / "cache"))  # the model is exported once, here
    data = _write_coco_panoptic(tmp_path / "data")
    results = []
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["eval", "--model", str(models["panoptic"]), "--data", str(data), "--dataset", "coco_panoptic",
                     "--out", str(out), "--backend", backend, "-q"]) == 0
        results.append(json.loads((out / "metrics.json").read_text())["metrics"])
    assert results[0] == results[1]
