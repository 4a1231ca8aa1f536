"""`eomt predict` and `eomt eval` on 2 CPU processes (gloo) give exactly what one process gives; a killed
prediction run continues with --skip-existing to the same folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import save_task_model
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.evaluation.runner import evaluate
from eomt.jobs import predict_folder
from eomt.predictor import Segmenter

NUM_IMAGES = 40


def _photo(i: int, size=(96, 64)) -> Image.Image:
    source = Image.open("examples/coffee.png" if i % 2 else "examples/chelsea.png").convert("RGB")
    w, h = source.size
    x, y = (i * 37) % (w // 3), (i * 23) % (h // 3)
    return source.crop((x, y, x + w // 2, y + h // 2)).resize(size)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_task_model(tmp_path_factory.mktemp("model") / "panoptic", "panoptic")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(NUM_IMAGES):  # a sub folder, two formats
        path = root / ("sub" if i % 5 == 0 else "") / f"img{i:02d}.{'jpg' if i % 3 else 'png'}"
        path.parent.mkdir(exist_ok=True)
        _photo(i, (160, 120)).save(path)
    return root


@pytest.fixture(scope="module")
def one_process(model, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    summary = predict_folder(images, out, str(model), batch_size=2, num_workers=0, progress=False)
    assert (summary.done, summary.failed) == (NUM_IMAGES, 0)
    return out


def _files(out: Path) -> dict[str, bytes]:
    """Every file (temporary ones included), but the job summary."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "summary.json"}


def _predict_command(images, model, out, *extra) -> list[str]:
    return [sys.executable, "-m", "eomt", "predict", str(images), "--model", str(model), "--out", str(out),
            "--devices", "2", "-q", *extra]


def test_two_processes_write_exactly_the_files_of_one(model, images, one_process, tmp_path):
    out = tmp_path / "two"
    run = subprocess.run(_predict_command(images, model, out, "-b", "2", "-j", "2"), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    reference = _files(one_process)
    assert len(reference) == 3 * NUM_IMAGES
    assert _files(out) == reference  # byte-identical PNG / JSON / JPEG
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (NUM_IMAGES, 0, 0)
    assert [p["done"] for p in summary["processes"]] == [20, 20] and summary["files_written"] == 3 * NUM_IMAGES
    assert "process 1: 20 image(s)" in run.stderr and "images/s (2 processes)" in run.stderr


def test_a_killed_run_continues_with_skip_existing(model, images, one_process, tmp_path):
    out = tmp_path / "resumed"
    proc = subprocess.Popen(_predict_command(images, model, out, "-b", "1", "-j", "0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(out.rglob("*_overlay.jpg"))) < NUM_IMAGES // 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # both processes (and any worker), mid-run
    proc.wait()
    complete = sum(all((out / f"{n}{s}").exists() for s in (".png", ".json", "_overlay.jpg"))
                   for n in [p.relative_to(images).with_suffix("").as_posix() for p in images.rglob("img*")])
    assert 0 < complete < NUM_IMAGES
    run = subprocess.run(_predict_command(images, model, out, "--skip-existing"), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _files(out) == _files(one_process)  # no duplicate, no half-written or temporary file left
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["skipped"], summary["done"], summary["failed"]) == (complete, NUM_IMAGES - complete, 0)
    assert f"skipped {complete} already done" in run.stderr


# ---- eval ----------------------------------------------------------------------------------------

NUM_EVAL = 5  # 3 + 2 images on 2 processes
CLASSES = [f"c{k}" for k in range(6)]
THINGS = 4  # classes 0..3 are things, 4..5 stuff


def _dataset_from_predictions(root: Path, task: str, model_dir: Path) -> Path:
    """Ground truth = the model's own predictions, changed on odd images: metrics strictly between 0 and 100."""
    seg = Segmenter.from_pretrained(model_dir, device="cpu", task=task)
    photos = [_photo(i) for i in range(NUM_EVAL)]
    preds = seg.predict(photos)
    stems = [f"{i + 1:012d}" for i in range(NUM_EVAL)]
    if task == "semantic":
        for folder in ("images", "masks"):
            (root / folder).mkdir(parents=True)
        for i, (photo, pred, stem) in enumerate(zip(photos, preds, stems, strict=True)):
            labels = pred.segmentation.numpy().astype(np.uint8)
            if i % 2:
                labels[:, : labels.shape[1] // 3] = (labels[:, : labels.shape[1] // 3] + 1) % len(CLASSES)
                labels[:4] = 255
            photo.save(root / "images" / f"{stem}.png")
            Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
        (root / "classes.json").write_text(json.dumps({"names": CLASSES, "ignore_index": 255}))
        return root
    categories = [{"id": k + 1, "name": name, "isthing": int(k < THINGS)} for k, name in enumerate(CLASSES)]
    (root / "val2017").mkdir(parents=True)
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    images, annotations = [], []
    for i, (photo, pred, stem) in enumerate(zip(photos, preds, stems, strict=True)):
        photo.save(root / "val2017" / f"{stem}.png")
        images.append({"id": i + 1, "file_name": f"{stem}.png", "height": photo.height, "width": photo.width})
        # odd images: the first segment gets another class (one false positive and one miss)
        labels = [(s.label_id + (i % 2 and k == 0)) % len(CLASSES) for k, s in enumerate(pred.segments)]
        if task == "panoptic":
            ids = np.zeros(pred.image_size, np.int64)
            for s in pred.segments:
                ids[pred.segmentation.numpy() == s.id] = s.id + 1
            rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / f"{stem}.png")
            annotations.append({"image_id": i + 1, "file_name": f"{stem}.png", "segments_info": [
                {"id": s.id + 1, "category_id": label + 1, "iscrowd": 0}
                for s, label in zip(pred.segments, labels, strict=True)]})
        else:
            for mask, label in zip(pred.masks.numpy(), labels, strict=True):
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                    "segmentation": rle, "area": int(mask.sum()), "bbox": list(mask_utils.toBbox(rle)),
                                    "iscrowd": 0})
    name = "panoptic_val2017.json" if task == "panoptic" else "instances_val2017.json"
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / name).write_text(json.dumps(doc))
    return root


EVAL_SCRIPT = """
import json, sys
from eomt.evaluation.runner import evaluate
cases, result = json.loads(sys.argv[1]), sys.argv[2]
out = {task: evaluate(model, data, kind, out=save, devices=2, progress=False) for task, (model, data, kind, save)
       in cases.items()}
json.dump(out, open(result, "w"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eval_on_two_processes_equals_one_process(tmp_path):
    """Semantic, panoptic and instance metrics over 5 images (3 + 2 per process); the processes are started
    from outside, as torchrun does."""
    kinds = {"semantic": "custom", "panoptic": "coco_panoptic", "instance": "coco_instance"}
    cases, single = {}, {}
    for task, kind in kinds.items():
        model_dir = save_task_model(tmp_path / f"model_{task}", task)
        data = _dataset_from_predictions(tmp_path / f"data_{task}", task, model_dir)
        single[task] = evaluate(str(model_dir), data, kind, out=tmp_path / f"one_{task}", progress=False)
        cases[task] = (str(model_dir), str(data), kind, str(tmp_path / f"two_{task}"))
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}
        procs.append(subprocess.Popen([sys.executable, "-c", EVAL_SCRIPT, json.dumps(cases),
                                       str(tmp_path / f"rank{rank}.json")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    headline = {"semantic": "mIoU", "panoptic": "PQ", "instance": "AP"}
    for task in kinds:
        assert 0 < single[task]["metrics"][headline[task]] < 100, (task, single[task]["metrics"])
        assert single[task]["num_images"] == NUM_EVAL
        for rank in range(2):
            two = json.loads((tmp_path / f"rank{rank}.json").read_text())[task]
            np.testing.assert_equal(two, json.loads(json.dumps(single[task])))
        assert _files(tmp_path / f"two_{task}") == _files(tmp_path / f"one_{task}")
