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


class ColourModel(torch.nn.Module):
    """A stand-in EoMT whose query q segments the pixels of colour q (red, green, blue) exactly, at the input's
    full resolution, with class q (and no-object where that colour is absent): what a perfect model would say,
    so that merging across windows can be checked against the objects drawn."""

    def __init__(self) -> None:
        super().__init__()
        from eomt.config import EomtConfig

        self.config = EomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1,
                                 num_queries=3, image_size=64, num_labels=3)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def forward(self, pixel_values, patch_offsets=None):
        from types import SimpleNamespace

        rgb = pixel_values * self.std + self.mean
        bright = rgb > 0.5
        colour = torch.stack([bright[:, q] & ~bright[:, [c for c in range(3) if c != q]].any(1) for q in range(3)], 1)
        masks = torch.where(colour, 10.0, -10.0)
        present = colour.flatten(2).any(-1)  # (B, Q)
        classes = torch.zeros(*present.shape, 4)
        classes[..., :3] = 10.0 * torch.eye(3)
        classes[..., 3] = torch.where(present, 0.0, 20.0)
        return SimpleNamespace(masks_queries_logits=masks, class_queries_logits=classes)


def _colour_segmenter(task: str) -> Segmenter:
    from eomt.processing.image_processor import EomtImageProcessor

    processor = EomtImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    return Segmenter(ColourModel(), processor, task, stuff_classes=[2])


def _drawing(height: int, width: int, boxes: dict[int, list[tuple[int, int, int, int]]]) -> torch.Tensor:
    """A grey image with boxes (top, left, bottom, right) of pure colour 0 (red), 1 (green) or 2 (blue)."""
    image = torch.full((3, height, width), 100, dtype=torch.uint8)
    for colour, rects in boxes.items():
        for top, left, bottom, right in rects:
            image[:, top:bottom, left:right] = 0
            image[colour, top:bottom, left:right] = 255
    return image


def _box_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


# a red object across 3 x 3 windows, a green one inside the overlap of four windows (seen whole by each)
CUT = (20, 70, 100, 150)
IN_OVERLAP = (50, 50, 60, 60)


@pytest.mark.parametrize("overlap,size", [(0.25, (150, 200)), (0.0, (128, 192))])  # overlapping / abutting windows
def test_an_instance_cut_by_window_borders_is_one_instance(overlap, size):
    image = _drawing(*size, {0: [CUT], 1: [IN_OVERLAP]})
    result = _colour_segmenter("instance").predict(image, tile=64, tile_overlap=overlap)
    assert sorted(s.label_id for s in result.segments) == [0, 1]  # one each: parts merged, duplicates gone
    index = {s.label_id: i for i, s in enumerate(result.segments)}
    assert torch.equal(result.masks[index[0]], _box_mask(*size, *CUT))
    assert torch.equal(result.masks[index[1]], _box_mask(*size, *IN_OVERLAP))
    cut = result.segments[index[0]]
    assert cut.bbox == (70.0, 20.0, 80.0, 80.0) and cut.area == 80 * 80
    assert all(s.score > 0.99 for s in result.segments)


@pytest.mark.parametrize("overlap,size", [(0.25, (150, 200)), (0.0, (128, 192))])
def test_a_panoptic_thing_cut_by_window_borders_is_one_segment_and_stuff_one_per_class(overlap, size):
    height, width = size
    stuff = [(110, 0, height, 70), (110, 90, height, width)]  # blue stuff in every bottom window, in two pieces
    image = _drawing(*size, {0: [CUT], 1: [IN_OVERLAP], 2: stuff})
    result = _colour_segmenter("panoptic").predict(image, tile=64, tile_overlap=overlap)
    assert sorted((s.label_id, s.isthing) for s in result.segments) == [(0, True), (1, True), (2, False)]
    by_label = {s.label_id: s.id for s in result.segments}
    assert torch.equal(result.segmentation == by_label[0], _box_mask(*size, *CUT))
    assert torch.equal(result.segmentation == by_label[1], _box_mask(*size, *IN_OVERLAP))
    assert torch.equal(result.segmentation == by_label[2], _box_mask(*size, *stuff[0]) | _box_mask(*size, *stuff[1]))
    assert int((result.segmentation == -1).sum()) == height * width - sum(s.area for s in result.segments)
    assert sorted(s.id for s in result.segments) == list(range(3))


def test_an_object_inside_a_window_core_is_as_when_its_window_is_predicted_alone():
    # windows of 64 at stride 48 on 150 x 200: pixels (64..86, 64..96) are seen by window (1, 1) only
    image = _drawing(150, 200, {1: [(68, 70, 80, 90)], 0: [(100, 10, 140, 120)], 2: [(0, 150, 30, 200)]})
    window = plan_windows(150, 200, 64, 0.25).windows[5]
    assert (window.top, window.left, window.bottom, window.right) == (48, 48, 112, 112)
    crop = image[:, 48:112, 48:112]
    for task in ("instance", "panoptic"):
        segmenter = _colour_segmenter(task)
        tiled, alone = segmenter.predict(image, tile=64, tile_overlap=0.25), segmenter.predict(crop)
        (expected,) = [s for s in alone.segments if s.label_id == 1]
        (got,) = [s for s in tiled.segments if s.label_id == 1]
        mask = alone.masks[alone.segments.index(expected)] if task == "instance" else (
            alone.segmentation == expected.id)
        placed = torch.zeros(150, 200, dtype=torch.bool)
        placed[48:112, 48:112] = mask
        tiled_mask = tiled.masks[tiled.segments.index(got)] if task == "instance" else tiled.segmentation == got.id
        assert torch.equal(tiled_mask, placed)
        assert (got.score, got.area) == (expected.score, expected.area)
        assert got.bbox == (expected.bbox[0] + 48, expected.bbox[1] + 48, *expected.bbox[2:])


def _cores(plan, height: int, width: int) -> torch.Tensor:
    cover = torch.zeros(height, width, dtype=torch.long)
    for w in plan.windows:
        cover[w.top:w.bottom, w.left:w.right] += 1
    return cover == 1


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_window_cores_of_a_random_model_are_segmented_as_the_window_alone(segmenters, task):
    """Pixels that one window alone sees keep that window's segmentation (segments may extend elsewhere)."""
    segmenter = segmenters[task]
    image = _random_image(200, 300, seed=3)
    plan = plan_windows(200, 300, 96, 0.25)
    tiled = segmenter.predict(image, tile=96, tile_overlap=0.25, batch_size=4)
    core_of_image = _cores(plan, 200, 300)
    checked = 0
    for w in plan.windows:
        alone = segmenter.predict(image[:, w.top:w.bottom, w.left:w.right])
        core = core_of_image[w.top:w.bottom, w.left:w.right]
        if task == "instance":  # each instance's core pixels are those of one tiled instance of its class
            tiled_masks = tiled.masks[:, w.top:w.bottom, w.left:w.right] & core
            for segment, mask in zip(alone.segments, alone.masks, strict=True):
                if (mask & core).any():
                    checked += 1
                    assert any(t.label_id == segment.label_id and torch.equal(m, mask & core)
                               for t, m in zip(tiled.segments, tiled_masks, strict=True))
        else:  # core pixels: the tiled ids are a one-to-one relabelling of the window's own ids
            pairs = torch.unique(torch.stack([alone.segmentation[core],
                                              tiled.segmentation[w.top:w.bottom, w.left:w.right][core]]), dim=1)
            checked += pairs.shape[1]
            assert len(pairs[0].unique()) == len(pairs[1].unique()) == pairs.shape[1]
            labels = {s.id: s.label_id for s in alone.segments} | {-1: -1}
            tiled_labels = {s.id: s.label_id for s in tiled.segments} | {-1: -1}
            assert all(labels[a] == tiled_labels[b] for a, b in pairs.T.tolist())
    assert checked > 10


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_an_image_no_larger_than_the_tile_is_one_window_predicted_as_without_tiling(segmenters, task):
    segmenter = segmenters[task]
    image = _random_image(50, 60, seed=4)
    tiled, plain = segmenter.predict(image, tile=64), segmenter.predict(image)
    assert tiled.segments and tiled.segments == plain.segments
    assert torch.equal(tiled.segmentation, plain.segmentation)
    if task == "instance":
        assert torch.equal(tiled.masks, plain.masks)


@pytest.mark.parametrize("options,message", [
    (dict(tile=0), "tile must be a whole number of image pixels >= 1, got 0"),
    (dict(tile=-5), "got -5"),
    (dict(tile=64.5), "got 64.5"),
    (dict(tile=8), "tile 8 is smaller than the model's patch size 16"),
    (dict(tile=64, tile_overlap=0.9), "tile overlap must be a fraction in [0, 0.9), got 0.9"),
    (dict(tile=64, tile_overlap=-0.5), "got -0.5"),
    (dict(tile_overlap=0.5), "tile_overlap applies to tiled inference only"),
    (dict(tile=64, task="depth"), "unknown task 'depth'"),
    (dict(tile=64, task="semantic", return_segmentation_scores=True), "return_segmentation_scores"),
])
def test_bad_tiling_values_are_value_errors_before_any_work(segmenters, options, message):
    with pytest.raises(ValueError) as error:
        segmenters["panoptic"].predict("no/such/image.png", **options)  # refused before the file is read
    assert message in str(error.value)
