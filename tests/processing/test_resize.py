"""Our resize gives torchvision's exact values (transformers' processor resizes with torchvision)."""

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from eomt.processing.resize import mode_for, resize

TORCHVISION = {0: InterpolationMode.NEAREST_EXACT, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}


def _images():
    g = torch.Generator().manual_seed(0)
    chw = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8, generator=g)
    yield "uint8 contiguous", chw
    yield "uint8 channels-last (from numpy HWC)", chw.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    yield "float32", torch.rand(3, 37, 53, generator=g) * 255
    yield "int64 label map", torch.randint(0, 300, (1, 37, 53), generator=g)
    yield "batch of two", torch.randint(0, 256, (2, 3, 37, 53), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("resample", [0, 2, 3])
@pytest.mark.parametrize("size", [(20, 29), (64, 91), (37, 53)])
def test_resize_equals_torchvision(resample, size):
    for name, image in _images():
        if image.dtype == torch.int64 and resample != 0:
            continue
        mode = TORCHVISION[resample]
        expected = TF.resize(image, list(size), interpolation=mode, antialias=resample != 0)
        got = resize(image, size, mode_for(resample))
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        assert torch.equal(got, expected), name


@pytest.mark.parametrize("resample", [1, 4, 5, 9])
def test_resample_codes_torch_cannot_resize_are_a_value_error(resample):
    with pytest.raises(ValueError, match=f"resample={resample}|got {resample}"):
        mode_for(resample)
