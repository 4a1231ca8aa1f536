"""EomtImageProcessor's transformers API: int sizes, return_tensors, config files; ported from
transformers' tests/models/eomt/test_image_processing_eomt.py and its common image-processor tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from eomt import EomtImageProcessor

# The image-processor tester of transformers' EoMT tests.
TESTER = dict(size={"shortest_edge": 18, "longest_edge": 18}, do_pad=True, do_resize=True, do_normalize=True,
              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _size(processor) -> dict:
    return {k: v for k, v in dict(processor.size).items() if v is not None}


def test_from_dict_with_kwargs_and_int_size_as_in_transformers():
    for cls in (EomtImageProcessor, transformers.EomtImageProcessor):
        assert _size(cls.from_dict(TESTER)) == {"shortest_edge": 18, "longest_edge": 18}
        processor = cls.from_dict(TESTER, size=42, do_pad=False)
        assert _size(processor) == {"shortest_edge": 42} and processor.do_pad is False
    image = _image(30, 50)
    ours = EomtImageProcessor(size=42)(image, return_tensors="pt").pixel_values
    theirs = transformers.EomtImageProcessor(size=42)(image, return_tensors="pt").pixel_values
    assert ours.shape == theirs.shape == (1, 3, 42, 70)  # shortest edge 42, the long side follows
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    call_override = EomtImageProcessor()(image, size=42).pixel_values
    assert call_override.shape == (1, 3, 42, 70)


@pytest.mark.parametrize("return_tensors", ["pt", "np", None])
def test_return_tensors_types_match_transformers(return_tensors):
    images = [_image(30, 50, 1), _image(30, 50, 2)]
    ours = EomtImageProcessor(**TESTER)(images, return_tensors=return_tensors)
    theirs = transformers.EomtImageProcessor(**TESTER)(images, return_tensors=return_tensors)
    assert type(ours["pixel_values"]) is type(theirs["pixel_values"])
    assert ours["patch_offsets"] == [] == theirs["patch_offsets"]
    stacked = (torch.stack(ours["pixel_values"]) if return_tensors is None else torch.as_tensor(ours["pixel_values"]))
    reference = (torch.stack(theirs["pixel_values"]) if return_tensors is None
                 else torch.as_tensor(theirs["pixel_values"]))
    assert stacked.shape == (2, 3, 18, 18)
    torch.testing.assert_close(stacked, reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="return_tensors"):
        EomtImageProcessor()(images, return_tensors="tf")


@pytest.mark.parametrize("source", ["pil", "numpy", "torch"])
def test_call_shapes_of_the_transformers_tester(source):
    """transformers' test_call_pil / test_call_numpy / test_call_pytorch: one image and a batch of 7."""
    images = [_image(18 + 2 * i, 30 - i, i) for i in range(7)]
    if source == "numpy":
        images = [np.asarray(im) for im in images]
    elif source == "torch":
        images = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]
    processor = EomtImageProcessor(**TESTER)
    assert tuple(processor(images[0], return_tensors="pt").pixel_values.shape) == (1, 3, 18, 18)
    assert tuple(processor(images, return_tensors="pt").pixel_values.shape) == (7, 3, 18, 18)


def test_json_string_file_and_save_pretrained(tmp_path):
    processor = EomtImageProcessor(**TESTER)
    written = json.loads(processor.to_json_string())
    assert all(written[key] == value for key, value in TESTER.items())
    processor.to_json_file(tmp_path / "processor.json")
    assert EomtImageProcessor.from_json_file(tmp_path / "processor.json").to_dict() == processor.to_dict()
    theirs = transformers.EomtImageProcessor.from_json_file(tmp_path / "processor.json")
    assert _size(theirs) == TESTER["size"] and list(theirs.image_mean) == TESTER["image_mean"]
    files = processor.save_pretrained(tmp_path / "saved")
    theirs_files = transformers.EomtImageProcessor(**TESTER).save_pretrained(tmp_path / "theirs")
    assert files == [str(tmp_path / "saved" / "preprocessor_config.json")] and len(theirs_files) == 1
    assert json.loads(open(files[0]).read()) == written
    assert EomtImageProcessor.from_pretrained(tmp_path / "saved").to_dict() == processor.to_dict()
    assert EomtImageProcessor.from_pretrained(tmp_path, subfolder="theirs").to_dict() == processor.to_dict()


def test_semantic_post_processing_with_longest_edge_none():
    """transformers' test_post_process_semantic_segmentation sets size with longest_edge None."""
    processor = EomtImageProcessor(**TESTER)
    processor.size = {"shortest_edge": 18, "longest_edge": None}
    image = _image(30, 50)
    inputs = processor(images=image, do_split_image=True, return_tensors="pt")
    batch = inputs["pixel_values"].shape[0]
    assert batch == 2 and len(inputs["patch_offsets"]) == 2  # 18 x 30 after resizing: two windows

    class Outputs:
        masks_queries_logits = torch.randn(batch, 3, 18, 18)
        class_queries_logits = torch.randn(batch, 3, 11)
        patch_offsets = inputs["patch_offsets"]

    segmentation = processor.post_process_semantic_segmentation(Outputs, [(30, 50)])
    assert segmentation[0].shape == (30, 50)
