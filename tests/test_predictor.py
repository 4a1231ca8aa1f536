"""Segmenter: task inference, batching, segments and COCO conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import save_task_model
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.outputs.coco_formats import rgb_to_panoptic
from eomt.predictor import Segmenter

IMAGE = "examples/coffee.png"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {task: save_task_model(root / f"tiny_{task}", task) for task in ("semantic", "instance", "panoptic")}


def test_task_comes_from_the_checkpoint(models):
    assert Segmenter.from_pretrained(models["semantic"]).task == "semantic"  # sliding-window processor
    assert Segmenter.from_pretrained(models["instance"]).task == "instance"  # the name says so
    assert Segmenter.from_pretrained(models["panoptic"]).task == "panoptic"
    assert Segmenter.from_pretrained(models["panoptic"], task="semantic").processor.do_split_image


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_segments_describe_the_segmentation(models, task):
    result = Segmenter.from_pretrained(models[task], device="cpu").predict(IMAGE)
    assert result.task == task and result.image_size == (400, 600)
    assert result.segments, "the tiny model should find something"
    for segment in result.segments:
        if task == "instance":
            mask = result.masks[result.segments.index(segment)]
        else:
            mask = result.segmentation == segment.id
        assert segment.area == int(mask.sum())
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert segment.bbox == (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                float(ys.max() - ys.min() + 1))
        assert segment.label == f"LABEL_{segment.label_id}"


def test_an_instance_map_is_made_on_first_access_and_is_the_post_processing_one(models):
    """`eomt predict` writes instance files from the crops; the map is made when asked, as transformers' API
    makes it (the last instance covering each pixel)."""
    from eomt.processing.postprocess import instance_segmentation

    segmenter = Segmenter.from_pretrained(models["instance"], device="cpu")
    result = segmenter.predict(IMAGE)
    assert result._segmentation is None and result.image_size == (400, 600)  # not made yet
    inputs = segmenter.processor(Image.open(IMAGE).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        out = segmenter.model(**inputs)
    (expected,) = instance_segmentation(out.masks_queries_logits, out.class_queries_logits, [(400, 600)],
                                        segmenter.processor.size)
    assert len(result.segments) == len(expected["segments_info"]) > 0
    assert torch.equal(result.segmentation, expected["segmentation"]) and result._segmentation is not None

def test_batches_give_the_same_results_as_single_images(models):
    segmenter = Segmenter.from_pretrained(models["panoptic"])
    images = [IMAGE, "examples/chelsea.png", Image.open(IMAGE)]
    one = segmenter.predict(images, batch_size=1)
    three = segmenter.predict(images, batch_size=3)
    for a, b in zip(one, three, strict=True):
        assert torch.equal(a.segmentation, b.segmentation)
        assert [(s.id, s.label_id) for s in a.segments] == [(s.id, s.label_id) for s in b.segments]


def test_coco_panoptic_form_round_trips(models):
    result = Segmenter.from_pretrained(models["panoptic"]).predict(IMAGE)
    rgb, info = result.to_coco_panoptic()
    assert rgb.shape == (400, 600, 3) and rgb.dtype == np.uint8
    ids = rgb_to_panoptic(rgb, raw=True)
    assert np.array_equal(ids, result.segmentation.numpy() + 1)
    assert [s["id"] for s in info] == [s.id + 1 for s in result.segments]


def test_coco_instance_form_decodes_to_the_masks(models):
    result = Segmenter.from_pretrained(models["instance"]).predict(IMAGE)
    coco = result.to_coco_instances(image_id=7)
    assert len(coco) == len(result.segments)
    for entry, mask in zip(coco, result.masks, strict=True):
        assert entry["image_id"] == 7
        assert np.array_equal(mask_utils.decode(entry["segmentation"]).astype(bool), mask.numpy())


def test_bfloat16_runs(models):
    result = Segmenter.from_pretrained(models["panoptic"], dtype="bfloat16").predict(IMAGE)
    assert result.segmentation.shape == (400, 600)


def test_bfloat16_runs_the_backbone_in_bfloat16_and_the_heads_in_float32(models):
    segmenter = Segmenter.from_pretrained(models["panoptic"], dtype="bfloat16")
    model = segmenter.model
    assert model.dtype == torch.bfloat16 and model.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert {p.dtype for head in (model.mask_head, model.upscale_block, model.class_predictor)
            for p in head.parameters()} == {torch.float32}
    full = Segmenter.from_pretrained(models["panoptic"]).model
    all_bf16 = Segmenter.from_pretrained(models["panoptic"]).model.to(torch.bfloat16)
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = full(pixels).masks_queries_logits
        mixed = model(pixels.bfloat16()).masks_queries_logits
        rounded = all_bf16(pixels.bfloat16()).masks_queries_logits
    assert mixed.dtype == torch.float32
    # float32 heads remove the heads' rounding: the mask logits are closer to float32's
    assert (mixed - expected).abs().mean() < (rounded.float() - expected).abs().mean()
