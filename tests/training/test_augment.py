"""TrainTransform: output sizes, image/mask alignment through flip, jitter, pad and crop, RNG discipline."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from eomt.training.augment import AugmentConfig, TrainTransform, jitter_size, photometric_distortion

COLOURS = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=torch.uint8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadrants(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image of four coloured quadrants (no zero channel anywhere) and one mask per quadrant."""
    ids = torch.zeros(height, width, dtype=torch.int64)
    ids[: height // 2, width // 2:] = 1
    ids[height // 2:, : width // 2] = 2
    ids[height // 2:, width // 2:] = 3
    image = COLOURS[ids].permute(2, 0, 1).contiguous()
    masks = ids[None] == torch.arange(4)[:, None, None]
    return image, masks, torch.tensor([10, 11, 12, 13])


def random_case(height: int, width: int, seed: int = 0, n: int = 5):
    g = gen(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    masks = torch.rand(n, height, width, generator=g) > 0.5
    return image, masks, torch.arange(n)


@pytest.mark.parametrize("size", [(48, 80), (80, 48), (7, 5), (200, 300), (32, 32)])
@pytest.mark.parametrize("scale_range", [(0.1, 2.0), (0.5, 2.0), (1.0, 1.0)])
def test_output_is_exactly_crop_size(size, scale_range):
    transform = TrainTransform(AugmentConfig(crop_size=32, scale_range=scale_range, photometric=True))
    image, masks, labels = random_case(*size)
    for seed in range(3):
        out_image, out_masks, out_labels = transform(image, masks, labels, gen(seed))
        assert out_image.shape == (3, 32, 32) and out_image.dtype == torch.uint8
        assert out_masks.shape[1:] == (32, 32) and out_masks.dtype == torch.bool
        assert out_labels.shape == (out_masks.shape[0],) and out_labels.dtype == labels.dtype
        assert out_masks.flatten(1).any(dim=1).all()


def test_jitter_size_fits_the_scaled_square():
    assert jitter_size(480, 640, 640, 1.0) == (480, 640)
    assert jitter_size(640, 480, 640, 0.5) == (320, 240)
    assert jitter_size(100, 50, 640, 2.0) == (1280, 640)
    assert jitter_size(1000, 3, 10, 0.1) == (1, 1)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_crop_matches_a_window_of_the_resized_image_and_masks(flip):
    """Exact alignment: the output image is an S x S window of the jittered image, the masks the same window."""
    image, masks, labels = random_case(24, 32, seed=3, n=4)
    config = AugmentConfig(crop_size=32, scale_range=(1.5, 1.5), flip_prob=flip)
    out_image, out_masks, out_labels = TrainTransform(config)(image, masks, labels, gen(5))
    if flip:
        image, masks = image.flip(-1), masks.flip(-1)
    size = list(jitter_size(24, 32, 32, 1.5))
    assert size == [36, 48]
    big_image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    big_masks = F.resize(masks.to(torch.uint8), size, interpolation=InterpolationMode.NEAREST_EXACT).bool()
    windows = [(t, left) for t in range(size[0] - 31) for left in range(size[1] - 31)
               if torch.equal(big_image[:, t:t + 32, left:left + 32], out_image)]
    assert len(windows) == 1
    t, left = windows[0]
    expected = big_masks[:, t:t + 32, left:left + 32]
    keep = expected.flatten(1).any(dim=1)
    assert torch.equal(out_masks, expected[keep]) and torch.equal(out_labels, labels[keep])


def test_flip_and_pad_are_exact_at_unit_scale():
    image, masks, labels = quadrants(32, 20)  # long side == crop size: no resize, pad 12 columns on the right
    config = AugmentConfig(crop_size=32, scale_range=(1.0, 1.0), flip_prob=1.0)
    out_image, out_masks, out_labels = TrainTransform(config)(image, masks, labels, gen(0))
    assert torch.equal(out_image[:, :, :20], image.flip(-1)) and not out_image[:, :, 20:].any()
    assert torch.equal(out_masks[:, :, :20], masks.flip(-1)) and not out_masks[:, :, 20:].any()
    assert torch.equal(out_labels, labels)


def test_image_colours_follow_the_masks_under_random_jitter():
    image, masks, labels = quadrants(60, 90)
    transform = TrainTransform(AugmentConfig(crop_size=48, scale_range=(0.3, 2.0)))
    padded_seen = False
    for seed in range(20):
        out_image, out_masks, out_labels = transform(image, masks, labels, gen(seed))
        pixels = out_image.permute(1, 2, 0).to(torch.int64)  # (S, S, 3)
        covered = out_masks.any(dim=0)
        assert not pixels[~covered].any()  # outside every mask: padding, which is black
        padded_seen |= bool((~covered).any())
        # interior pixels (whose 3x3 neighbourhood lies in the same mask) must have the mask's colour; the
        # pixels on a boundary are a bilinear blend of both sides
        interior = -torch.nn.functional.max_pool2d(-out_masks[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        for mask, label in zip(interior, out_labels.tolist(), strict=True):
            colour = COLOURS[label - 10].to(torch.int64)
            assert ((pixels[mask] - colour).abs() <= 8).all()
        assert interior.sum() > 0.5 * covered.sum()
    assert padded_seen


def test_empty_masks_are_dropped_with_their_labels():
    image, masks, labels = quadrants(32, 32)
    masks = torch.cat([masks, torch.zeros(1, 32, 32, dtype=torch.bool)])  # empty from the start
    labels = torch.cat([labels, torch.tensor([99])])
    corner = torch.zeros(1, 32, 32, dtype=torch.bool)
    corner[0, :2, :2] = True  # tiny: most 2x crops miss it
    masks, labels = torch.cat([masks, corner]), torch.cat([labels, torch.tensor([77])])
    transform = TrainTransform(AugmentConfig(crop_size=32, scale_range=(2.0, 2.0), flip_prob=0.0))
    counts = set()
    for seed in range(30):
        _, out_masks, out_labels = transform(image, masks, labels, gen(seed))
        assert 99 not in out_labels.tolist()
        assert out_masks.flatten(1).any(dim=1).all()
        counts.add(len(out_labels))
        assert out_labels.tolist() == sorted(out_labels.tolist())  # order kept
    assert min(counts) < 5


def test_no_masks_in_no_masks_out():
    image, _, _ = quadrants(20, 30)
    out_image, out_masks, out_labels = TrainTransform(AugmentConfig(crop_size=16))(
        image, torch.zeros(0, 20, 30, dtype=torch.bool), torch.zeros(0, dtype=torch.int64), gen(0))
    assert out_image.shape == (3, 16, 16) and out_masks.shape == (0, 16, 16) and out_labels.shape == (0,)


@pytest.mark.parametrize("photometric", [False, True])
def test_same_seed_same_output_different_seed_different(photometric):
    image, masks, labels = random_case(40, 56)
    transform = TrainTransform(AugmentConfig(crop_size=32, photometric=photometric))
    a = transform(image, masks, labels, gen(1))
    b = transform(image, masks, labels, gen(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    others = [transform(image, masks, labels, gen(s)) for s in range(2, 6)]
    assert any(not torch.equal(a[0], o[0]) for o in others)
    assert any(a[1].shape != o[1].shape or not torch.equal(a[1], o[1]) for o in others)


def test_inputs_are_not_modified():
    image, masks, labels = random_case(30, 30)
    copies = image.clone(), masks.clone(), labels.clone()
    TrainTransform(AugmentConfig(crop_size=16, photometric=True, flip_prob=1.0))(image, masks, labels, gen(0))
    assert all(torch.equal(x, y) for x, y in zip((image, masks, labels), copies, strict=True))


def test_photometric_changes_only_the_image():
    image, masks, labels = quadrants(32, 32)  # crop size, unit scale, no flip: geometry is the identity
    plain = TrainTransform(AugmentConfig(crop_size=32, scale_range=(1.0, 1.0), flip_prob=0.0))
    photo = TrainTransform(AugmentConfig(crop_size=32, scale_range=(1.0, 1.0), flip_prob=0.0, photometric=True))
    out_image, out_masks, out_labels = plain(image, masks, labels, gen(0))
    assert torch.equal(out_image, image) and torch.equal(out_masks, masks) and torch.equal(out_labels, labels)
    changed = 0
    for seed in range(10):
        out_image, out_masks, out_labels = photo(image, masks, labels, gen(seed))
        assert torch.equal(out_masks, masks) and torch.equal(out_labels, labels)
        assert out_image.shape == image.shape and out_image.dtype == torch.uint8
        changed += not torch.equal(out_image, image)
    assert changed >= 5


def test_photometric_distortion_is_bounded_and_seeded():
    image, _, _ = quadrants(16, 16)
    a = photometric_distortion(image, gen(4))
    assert torch.equal(a, photometric_distortion(image, gen(4)))
    outputs = [photometric_distortion(image, gen(s)) for s in range(40)]
    assert any(not torch.equal(o, image) for o in outputs)
    assert any(torch.equal(o, image) for o in outputs)  # every step skipped: 1/16 chance per seed
    for o in outputs:  # a moderate distortion: the colours stay recognisable on average
        assert (o.float() - image.float()).abs().mean() < 100


@pytest.mark.parametrize("grey", [10, 200])
def test_brightness_is_multiplicative_as_the_authors(grey):
    """On a constant grey image contrast, saturation and hue change nothing, so the output is the brightness
    step alone: the authors' x U(1 - 32/255, 1 + 32/255), not an added +-32 grey levels."""
    image = torch.full((3, 4, 4), grey, dtype=torch.uint8)
    applied = 0
    for seed in range(30):
        replay = gen(seed)  # the brightness coin, then its factor, are the first two draws
        coin = float(torch.rand((), generator=replay, dtype=torch.float64))
        factor = 1 - 32 / 255 + 2 * 32 / 255 * float(torch.rand((), generator=replay, dtype=torch.float64))
        expected = round(min(255.0, grey * factor)) if coin < 0.5 else grey
        out = photometric_distortion(image, gen(seed))
        assert torch.all(out == expected), (seed, out.unique().tolist(), expected)
        applied += coin < 0.5
    assert 5 <= applied <= 25


def test_config_validation():
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="crop_size"):
        AugmentConfig(crop_size=0)
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="uint8"):
        TrainTransform(AugmentConfig(crop_size=8))(torch.zeros(3, 8, 8), torch.zeros(0, 8, 8, dtype=torch.bool),
                                                    torch.zeros(0, dtype=torch.int64), gen(0))
