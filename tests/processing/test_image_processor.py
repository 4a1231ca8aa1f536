"""EomtImageProcessor preprocessing against transformers' processor, and image decoding."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from eomt import AutoImageProcessor, EomtImageProcessor
from eomt.processing import ImageError, load_image
from eomt.processing.image_io import to_rgb_tensor

MODES = {
    "padded": dict(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True),
    "semantic": dict(size={"shortest_edge": 48}, do_split_image=True),
    "resize_only": dict(size={"shortest_edge": 64, "longest_edge": 64}),
}
SIZES = [(37, 53), (120, 80), (64, 64), (300, 90), (90, 301), (481, 640)]


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + h * 1000 + w)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("hw", SIZES)
def test_pixel_values_match_transformers(mode, hw):
    image = _image(*hw)
    ours = EomtImageProcessor(**MODES[mode])(image, return_tensors="pt")
    theirs = transformers.EomtImageProcessor(**MODES[mode])(image, return_tensors="pt")
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], atol=1e-5, rtol=0)
    if mode == "semantic":
        assert [o.tolist() for o in ours["patch_offsets"]] == [o.tolist() for o in theirs["patch_offsets"]]
    else:  # present and empty when images are not split, as in transformers
        assert ours["patch_offsets"] == [] == theirs["patch_offsets"]


@pytest.mark.cuda
@pytest.mark.parametrize("mode", list(MODES))
def test_pixel_values_on_cuda_match_transformers_on_cuda(mode):
    """On a GPU, uint8 resizing goes through float32 (torchvision's rule there): compared with transformers on CUDA."""
    pytest.importorskip("torchvision")  # transformers' processor resizes with it
    for hw in SIZES:
        image = _image(*hw)
        ours = EomtImageProcessor(**MODES[mode])(image, device="cuda")
        theirs = transformers.EomtImageProcessor(**MODES[mode])(image, return_tensors="pt", device="cuda")
        assert ours["pixel_values"].device.type == "cuda"
        torch.testing.assert_close(ours["pixel_values"].cpu(), theirs["pixel_values"].cpu(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["padded", "semantic"])
def test_batches_of_mixed_sizes_and_input_types_match(mode):
    pil = [_image(*hw, seed=3) for hw in SIZES]
    theirs = transformers.EomtImageProcessor(**MODES[mode])(pil, return_tensors="pt")
    processor = EomtImageProcessor(**MODES[mode])
    as_numpy = [np.array(im) for im in pil]
    as_torch = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in pil]
    for images in (pil, as_numpy, as_torch):
        ours = processor(images, return_tensors="pt")
        torch.testing.assert_close(ours.pixel_values, theirs["pixel_values"], atol=1e-5, rtol=0)
        if mode == "semantic":
            assert [o.tolist() for o in ours.patch_offsets] == [o.tolist() for o in theirs["patch_offsets"]]


@pytest.mark.parametrize("mode", ["padded", "semantic"])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_training_targets_match_transformers(mode, ignore_index):
    rng = np.random.default_rng(0)
    images = [_image(70, 90), _image(90, 50)]
    maps = [rng.integers(0, 5, (70, 90)).astype(np.int64), rng.integers(0, 5, (90, 50)).astype(np.int64)]
    mapping = [{0: 0, 1: 7, 2: 7, 3: 2, 4: 9}, {0: 0, 1: 1, 2: 3, 3: 3, 4: 4}]
    if mode == "semantic":  # transformers indexes a per-image list by window, so give both one mapping
        mapping = mapping[0]
    kwargs = dict(MODES[mode], ignore_index=ignore_index)
    ours = EomtImageProcessor(**kwargs)(images, segmentation_maps=maps, instance_id_to_semantic_id=mapping)
    theirs = transformers.EomtImageProcessor(**kwargs)(images, segmentation_maps=maps,
                                                       instance_id_to_semantic_id=mapping, return_tensors="pt")
    assert len(ours.mask_labels) == len(theirs["mask_labels"])
    for a, b in zip(ours.mask_labels, theirs["mask_labels"], strict=True):
        torch.testing.assert_close(a, b.float())
    for a, b in zip(ours.class_labels, theirs["class_labels"], strict=True):
        assert a.tolist() == b.tolist()


def test_image_modes_become_rgb():
    processor = EomtImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}, do_pad=True)
    gray = Image.fromarray(np.full((40, 30), 200, np.uint8), mode="L")
    rgba = Image.fromarray(np.dstack([np.full((40, 30, 3), 100, np.uint8), np.zeros((40, 30), np.uint8)]))
    palette = gray.convert("P")
    cmyk = _image(40, 30).convert("CMYK")
    deep = Image.fromarray(np.full((40, 30), 65535, np.uint16))
    for image in (gray, rgba, palette, cmyk, deep):
        assert processor(image).pixel_values.shape == (1, 3, 32, 32)
    from eomt.processing.image_io import to_rgb_tensor
    assert to_rgb_tensor(gray)[:, 0, 0].tolist() == [200, 200, 200]
    assert to_rgb_tensor(rgba)[:, 0, 0].tolist() == [255, 255, 255]  # transparent -> white, like transformers
    assert to_rgb_tensor(deep)[:, 0, 0].tolist() == [255, 255, 255]
    assert to_rgb_tensor(np.full((5, 6), 65535, np.uint16))[:, 0, 0].tolist() == [255, 255, 255]
    assert to_rgb_tensor(torch.ones(1, 5, 6))[:, 0, 0].tolist() == [255, 255, 255]


def test_jpeg_exif_orientation_is_honoured(tmp_path):
    image = _image(40, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (40, 80)  # (width, height) after rotation
    assert EomtImageProcessor(size={"shortest_edge": 32}, do_split_image=True)(path).patch_offsets[0].tolist()[0] == 0


@pytest.mark.parametrize("content, reason", [
    (b"", "file is empty"),
    (b"not an image at all", "not an image"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(path) in str(err.value) and reason in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    _image(200, 200).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:2000])
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert "truncated or corrupt" in str(err.value)


def test_processor_config_round_trip_and_auto(tmp_path):
    transformers.EomtImageProcessor(size={"shortest_edge": 512}, do_split_image=True).save_pretrained(tmp_path / "a")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "a")
    assert processor.do_split_image and processor.size == {"shortest_edge": 512} and not processor.do_pad
    processor.save_pretrained(tmp_path / "b")
    again = transformers.EomtImageProcessor.from_pretrained(tmp_path / "b")
    assert again.do_split_image and again.size["shortest_edge"] == 512


def test_unknown_keyword_is_an_error():
    with pytest.raises(TypeError, match="do_crop"):
        EomtImageProcessor()(_image(20, 20), do_crop=True)


def test_per_image_mappings_follow_their_windows():
    """With sliding windows, each window's classes come from its own image's mapping."""
    maps = [np.ones((48, 100), np.int64), np.ones((48, 100), np.int64)]
    ours = EomtImageProcessor(**MODES["semantic"])([_image(48, 100)] * 2, segmentation_maps=maps,
                                                   instance_id_to_semantic_id=[{1: 5}, {1: 8}])
    assert [c.tolist() for c in ours.class_labels] == [[5], [5], [5], [8], [8], [8]]


def test_read_only_arrays_convert_without_a_warning_and_are_copied_only_where_needed():
    """np.asarray of a PIL image is read-only: torch would warn (and a tensor aliasing it could be written)."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8))
    rgb, grey = np.asarray(photo), np.asarray(photo.convert("L"))
    chw_read_only = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    chw_read_only.setflags(write=False)
    assert not rgb.flags.writeable and not grey.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = [to_rgb_tensor(rgb), to_rgb_tensor(grey), to_rgb_tensor(chw_read_only, channels_first=True),
                   to_rgb_tensor(photo)]
    expected = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    for got in results[:1] + results[2:]:
        assert torch.equal(got, expected)
    assert torch.equal(results[1], torch.from_numpy(np.array(grey))[None].expand(3, -1, -1))
    # the read-only channels-first array is copied; a writable one is used in place (no copy needed)
    assert results[2].data_ptr() != chw_read_only.ctypes.data
    writable = np.array(chw_read_only)
    assert to_rgb_tensor(writable, channels_first=True).data_ptr() == writable.ctypes.data
