"""`predict_folder(max_memory=)` / `eomt predict --max-memory`: the budget sizes the work, never the result; an
image that cannot fit is one line with a size that would fit, and the other images complete."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import save_task_model
from PIL import Image

from eomt.jobs import predict_folder
from eomt.processing import postprocess
from eomt.processing.memory import estimate, parse_size

SIZES = [(1000, 700), (640, 1100), (333, 1250)]  # (width, height) of the photos


def photos(folder, sizes=SIZES):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        base = rng.integers(0, 255, (h // 50 + 1, w // 50 + 1, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BILINEAR).save(folder / f"photo{i}.png")
    return folder


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "summary.json"}


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_two_budgets_give_the_same_files_byte_for_byte(tmp_path, task, monkeypatch):
    model = save_task_model(tmp_path / "model", task)
    images = photos(tmp_path / "images")
    chunks = []
    real = postprocess._masks_at_target if task != "semantic" else postprocess._resize

    def spy(x, *args):
        chunks.append(x.shape[1] if task == "semantic" else x.shape[0])
        return real(x, *args)

    tight = max(estimate(task, h, w) for w, h in SIZES) + (4 << 20)  # the maps plus about one query
    small = predict_folder(images, tmp_path / "small", str(model), task=task, max_memory=tight, num_workers=0,
                           progress=False)
    monkeypatch.setattr(postprocess, "_masks_at_target" if task != "semantic" else "_resize", spy)
    predict_folder(images, tmp_path / "small2", str(model), task=task, max_memory=tight, num_workers=0,
                   progress=False)
    monkeypatch.undo()
    large = predict_folder(images, tmp_path / "large", str(model), task=task, max_memory="8GB", num_workers=0,
                           progress=False)
    assert small.done == large.done == len(SIZES) and not small.failures
    a, b = files(tmp_path / "small"), files(tmp_path / "large")
    assert a.keys() == b.keys() and len(a) >= 2 * len(SIZES)
    for name in a:
        assert a[name] == b[name], name
    if task != "semantic":  # the tight budget really streamed: several chunks per image
        assert len(chunks) > len(SIZES) and min(chunks) < 12
    if task == "instance":
        assert all(b'"counts"' in a[n] for n in a if n.endswith(".json"))


def test_an_image_beyond_the_budget_fails_alone_with_a_size_that_fits(tmp_path):
    model = save_task_model(tmp_path / "model", "panoptic")
    images = photos(tmp_path / "images", [(400, 300), (3000, 2000)])
    budget = "64MiB"
    summary = predict_folder(images, tmp_path / "out", str(model), max_memory=budget, num_workers=0, progress=False)
    assert summary.done == 1 and summary.failed == 1
    (failure,) = summary.failures
    reason = failure["reason"]
    assert failure["image"].endswith("photo1.png") and "\n" not in reason and "3000x2000 image" in reason
    width, height = map(int, re.search(r"at most (\d+)x(\d+) pixels", reason).groups())
    assert abs(width / height - 1.5) < 0.01 and width < 3000  # the same aspect ratio, smaller
    assert estimate("panoptic", height, width) <= parse_size(budget)  # the hint is true: that size fits
    assert (tmp_path / "out" / "photo0.png").is_file() and not (tmp_path / "out" / "photo1.png").exists()


@pytest.mark.parametrize("value, message", [("abc", "expected a size such as 2GB"), ("1KB", "below the smallest"),
                                            ("-3G", "expected a size")])
def test_bad_max_memory_is_a_one_line_usage_error(tmp_path, value, message):
    run = subprocess.run([sys.executable, "-m", "eomt", "predict", "x.png", f"--max-memory={value}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1
