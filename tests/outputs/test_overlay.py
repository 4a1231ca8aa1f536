import numpy as np
import pytest
import torch
from PIL import Image

from eomt.outputs.overlay import (
    LABEL_BOX_COLOR,
    PALETTE,
    _label_points,
    color_for,
    overlay,
    overlay_instances,
    overlay_panoptic,
    overlay_semantic,
)


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(60, 200, size=(h, w, 3), dtype=np.uint8))


def _box_pixels(out: Image.Image) -> int:
    return int((np.asarray(out) == np.array(LABEL_BOX_COLOR, dtype=np.uint8)).all(axis=-1).sum())


def test_palette_is_deterministic_and_distinct():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256
    assert color_for(3) == color_for(259) == tuple(PALETTE[3].tolist())


def test_overlay_colours_segments_keeps_void_and_draws_labels():
    image = _image(120, 200)
    seg = np.full((120, 200), -1, dtype=np.int64)
    seg[10:110, 10:90] = 0
    seg[10:110, 110:190] = 1
    out = overlay(image, torch.from_numpy(seg), [(0, "cat", 0.91), (1, "dog", None)])
    assert out.mode == "RGB" and out.size == image.size
    before, after = np.asarray(image), np.asarray(out)
    void = seg == -1
    np.testing.assert_array_equal(after[void], before[void])
    changed = (after != before).any(axis=-1)
    assert changed[~void].mean() > 0.99
    # borders at full opacity carry the segment colour exactly
    assert tuple(after[10, 50].tolist()) == color_for(0)
    assert tuple(after[60, 189].tolist()) == color_for(1)
    # interior is a blend: between the image and the colour
    assert tuple(after[30, 30].tolist()) != color_for(0)
    assert _box_pixels(out) > 50
    assert _box_pixels(overlay(image, seg, None)) == 0  # no labels without segments


def test_overlay_label_inside_its_segment():
    image = Image.new("RGB", (300, 200), (128, 128, 128))
    seg = np.full((200, 300), -1, dtype=np.int64)
    seg[:, 200:] = 7  # label must land in the right third
    out = np.asarray(overlay(image, seg, [(7, "x", None)], font_size=12))
    box = (out == np.array(LABEL_BOX_COLOR, dtype=np.uint8)).all(axis=-1)
    ys, xs = np.nonzero(box)
    assert len(xs) and xs.min() >= 200


def test_overlay_alpha_zero_and_one():
    image = _image(40, 60)
    seg = np.zeros((40, 60), dtype=np.int64)
    seg[:, 30:] = 1
    same = overlay(image, seg, None, alpha=0.0, border_width=0)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(image))
    solid = np.asarray(overlay(image, seg, None, alpha=1.0))
    assert tuple(solid[5, 5].tolist()) == color_for(0) and tuple(solid[5, 50].tolist()) == color_for(1)
    with pytest.raises(ValueError):
        overlay(image, seg[:10], None)


def test_overlay_small_segments_still_labelled():
    image = Image.new("RGB", (400, 300), (100, 100, 100))
    seg = np.full((300, 400), -1, dtype=np.int64)
    seg[151, 201] = 3  # one pixel on an odd row: not on the (stride 2) label placement grid
    seg[11, 10:20] = 4  # a thin line, also off the grid
    seg[100:140, 20:60] = 5  # on the grid
    points = _label_points(seg, [3, 4, 5, 9])
    assert points[3] == (151, 201)
    assert seg[points[4]] == 4 and seg[points[5]] == 5 and 9 not in points
    out = overlay(image, seg, [(3, "dot", 0.5), (4, "line", None), (9, "absent", None)], font_size=10)
    assert _box_pixels(out) > 20


def test_overlay_large_map_many_segments():
    rng = np.random.default_rng(0)
    h, w = 1000, 1500
    cy, cx = rng.integers(0, h, 100), rng.integers(0, w, 100)
    grid_y, grid_x = np.arange(0, h, 10), np.arange(0, w, 10)
    coarse = np.argmin((grid_y[:, None, None] - cy) ** 2 + (grid_x[None, :, None] - cx) ** 2, axis=2)
    seg = coarse.repeat(10, 0).repeat(10, 1).astype(np.int64)
    seg[:40] = -1
    out = overlay(_image(h, w), seg, [(i, f"class {i}", 0.5) for i in range(100)])
    assert out.size == (w, h)
    assert _box_pixels(out) > 1000


def test_overlay_semantic_and_panoptic_helpers():
    image = _image(50, 80)
    sem = np.zeros((50, 80), dtype=np.int64)
    sem[25:] = 5
    out = overlay_semantic(image, torch.from_numpy(sem), {0: "sky", 5: "road"})
    assert out.size == image.size and _box_pixels(out) > 0
    # semantic colours follow class ids
    solid = np.asarray(overlay_semantic(image, sem, None, alpha=1.0))
    assert tuple(solid[40, 40].tolist()) == color_for(5)
    result = {"segmentation": torch.from_numpy(sem - 1), "segments_info": [{"id": 4, "label_id": 2, "score": 0.7}]}
    out = overlay_panoptic(image, result, {2: "car"})
    np.testing.assert_array_equal(np.asarray(out)[:25], np.asarray(image)[:25])  # -1 rows are void


def test_overlay_instances_small_on_top():
    image = Image.new("RGB", (100, 80), (90, 90, 90))
    masks = torch.zeros(3, 80, 100, dtype=torch.bool)
    masks[0, 30:50, 40:60] = True  # small, listed first
    masks[1, 5:75, 5:95] = True  # large, overlapping the small one
    out = np.asarray(overlay_instances(image, masks, ["small", "big", "empty"], [0.9, 0.8, 0.1], alpha=1.0))
    assert out.shape == (80, 100, 3)
    assert tuple(out[31, 41].tolist()) == tuple(out[48, 58].tolist()) == color_for(0)  # small one on top
    assert tuple(out[10, 80].tolist()) == color_for(1)
    np.testing.assert_array_equal(out[0, 0], [90, 90, 90])
    with pytest.raises(ValueError):
        overlay_instances(image, masks, ["a"], None)
    empty = overlay_instances(image, torch.zeros(0, 80, 100, dtype=torch.bool), [], None)
    np.testing.assert_array_equal(np.asarray(empty), np.asarray(image))


@pytest.mark.parametrize("threads", [1, 3])  # bands blended one after another, or on a thread pool
@pytest.mark.parametrize("border_width", [0, 1, 3])
def test_overlay_drawn_in_bands_equals_the_whole_image_at_once(monkeypatch, border_width, threads):
    """The blend (and the search for small segments' label points) runs a band of rows at a time; borders
    crossing a band edge, lone pixels and far-spread ids come out as from one band."""
    import eomt.outputs.overlay as overlay_module

    rng = np.random.default_rng(1)
    h, w = 90, 70
    seg = rng.integers(-1, 9, (h // 5 + 1, w // 5 + 1)).repeat(5, 0).repeat(5, 1)[:h, :w].astype(np.int64)
    seg[44, 33] = 11  # lost by the label grid's downscaling
    spread = np.where(seg >= 0, seg * 300007, seg)  # ids beyond the lookup-table range
    image = _image(h, w)
    for segment_map in (seg, spread):
        segments = [(int(i), f"c{i}", 0.5) for i in np.unique(segment_map) if i >= 0]
        whole = np.asarray(overlay(image, segment_map, segments, border_width=border_width, font_size=10))
        monkeypatch.setattr(overlay_module, "_BAND_PIXELS", 3 * w + 5)
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        banded = np.asarray(overlay(image, segment_map, segments, border_width=border_width, font_size=10))
        monkeypatch.undo()
        np.testing.assert_array_equal(banded, whole)
