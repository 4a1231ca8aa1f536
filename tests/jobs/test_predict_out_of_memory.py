"""Out of memory on one image: that image fails with a one-line hint, its batch-mates are still written."""

from __future__ import annotations

import pytest
from helpers import save_task_model
from PIL import Image

from eomt.jobs import predict_folder
from eomt.predictor import Segmenter


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 80000000000 bytes."),
                                   MemoryError()])
def test_an_image_too_large_for_memory_fails_alone_with_a_hint(tmp_path, monkeypatch, error):
    model = save_task_model(tmp_path / "model", "panoptic")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (96, 64), (120, 80, 40)).save(images / "small.png")
    Image.new("RGB", (300, 200), (40, 80, 120)).save(images / "huge.png")
    real_predict = Segmenter.predict

    def predict(self, batch, *args, **kwargs):
        if any(image.width >= 300 for image in batch):  # stands in for an allocation that does not fit
            raise error
        return real_predict(self, batch, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "predict", predict)
    summary = predict_folder(images, tmp_path / "out", str(model), batch_size=2, num_workers=0, progress=False)
    assert summary.done == 1 and summary.failed == 1
    failure = summary.failures[0]
    assert failure["image"].endswith("huge.png") and "\n" not in failure["reason"]
    # the hint is true for this image: 300x200 fits streamed, so no downscaling is suggested
    assert failure["reason"].startswith("out of memory on this 300x200 image") and "downscale" not in failure["reason"]
    assert "`batch_size=1`" in failure["reason"]  # the Python argument: this is the library; the CLI says its flag
    assert (tmp_path / "out" / "small.png").is_file() and not (tmp_path / "out" / "huge.png").exists()


def test_an_image_whose_files_do_not_fit_in_memory_fails_alone(tmp_path, monkeypatch):
    from eomt.outputs import result_files

    model = save_task_model(tmp_path / "model", "panoptic")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (96, 64), (120, 80, 40)).save(images / "small.png")
    Image.new("RGB", (300, 200), (40, 80, 120)).save(images / "huge.png")
    real_write = result_files.write_result

    def write_result(result, image, name, *args, **kwargs):
        if image.width >= 300:  # stands in for result files too large to encode
            raise MemoryError()
        return real_write(result, image, name, *args, **kwargs)

    monkeypatch.setattr(result_files, "write_result", write_result)
    summary = predict_folder(images, tmp_path / "out", str(model), batch_size=2, num_workers=0, progress=False)
    assert summary.done == 1 and summary.failed == 1
    failure = summary.failures[0]
    assert failure["image"].endswith("huge.png") and failure["reason"].startswith("out of memory writing")
    assert "\n" not in failure["reason"]
    assert (tmp_path / "out" / "small.png").is_file() and not (tmp_path / "out" / "huge.png").exists()
    assert (tmp_path / "out" / "summary.json").is_file()
    assert "`tile`" in failure["reason"]  # the Python argument: the CLI turns it into its flag
