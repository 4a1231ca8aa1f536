"""Segmenter.predict(tile=...): windows at native resolution merged into one full-resolution result."""

from __future__ import annotations

import pytest
import torch
from helpers import save_task_model

from eomt.predictor import Segmenter
from eomt.processing.tiling import plan_windows


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiling_models")
    return {task: Segmenter.from_pretrained(save_task_model(root / task, task), device="cpu")
            for task in ("semantic", "instance", "panoptic")}


def _random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(3, height, width, generator=generator) * 255).to(torch.uint8)


@pytest.mark.parametrize("tile", [64, 80])  # the model's input size, and windows resized to it
def test_semantic_tiling_equals_the_brute_force_mean_of_window_scores(segmenters, tile):
    segmenter = segmenters["semantic"]
    image = _random_image(150, 200)
    result = segmenter.predict(image, tile=tile, tile_overlap=0.25)

    # reference: each window alone through the public processor API (one sliding window of the model's size),
    # its class scores at the window's full resolution summed into a full-size canvas, divided by the counts
    processor, labels = segmenter.processor, segmenter.model.config.num_labels
    total, count = torch.zeros(labels, 150, 200), torch.zeros(150, 200)
    for window in plan_windows(150, 200, tile, 0.25).windows:
        inputs = processor(image[:, window.top:window.bottom, window.left:window.right])
        with torch.inference_mode():
            out = segmenter.model(inputs.pixel_values, patch_offsets=inputs.patch_offsets)
        out.patch_offsets = inputs.patch_offsets
        ((_, scores),) = processor.post_process_semantic_segmentation(
            out, target_sizes=[window.hw], return_segmentation_scores=True)
        total[:, window.top:window.bottom, window.left:window.right] += scores
        count[window.top:window.bottom, window.left:window.right] += 1
    expected = (total / count).argmax(0)

    assert result.task == "semantic" and result.image_size == (150, 200)
    assert len(torch.unique(expected)) > 1, "the reference should hold several classes"
    assert torch.equal(result.segmentation, expected)
    assert sorted(s.label_id for s in result.segments) == torch.unique(expected).tolist()
