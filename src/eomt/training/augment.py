"""Training augmentation: photometric distortion, flip, large-scale jitter, pad and crop, applied jointly.

`TrainTransform` works on an image as a uint8 tensor (3, H, W) and its N binary masks (N, H, W) with their
class labels, and returns a square S x S crop (S = `AugmentConfig.crop_size`) and the masks that still cover
at least one pixel. Every random number comes from the `torch.Generator` passed in, drawn in a fixed order,
so an output depends only on the inputs and the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

BRIGHTNESS_DELTA = 32.0 / 255.0  # brightness factor ~ U[1 - delta, 1 + delta], as the authors'
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA_DEGREES = 18.0


@dataclass
class AugmentConfig:
    """What `TrainTransform` does.

    crop_size: side S of the square output (the model's input size, e.g. 640).
    scale_range: (min, max) of the large-scale-jitter factor s, relative to the crop size (e.g. (0.1, 2.0)).
    flip_prob: probability of a horizontal flip.
    photometric: apply the photometric distortion to the image (off for COCO, on for ADE20K / Cityscapes).
    """

    crop_size: int = 640
    scale_range: tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5
    photometric: bool = False

    def __post_init__(self) -> None:
        self.crop_size = int(self.crop_size)
        if self.crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer, got {self.crop_size}")
        low, high = (float(v) for v in self.scale_range)
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got {self.scale_range}")
        self.scale_range = (low, high)
        if not 0.0 <= float(self.flip_prob) <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        self.flip_prob = float(self.flip_prob)
        self.photometric = bool(self.photometric)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _coin(generator: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=generator, dtype=torch.float64)) < p


def _randint(generator: torch.Generator, high: int) -> int:
    """An integer uniform in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator))


def photometric_distortion(image: Tensor, generator: torch.Generator) -> Tensor:
    """Randomly distort a uint8 (3, H, W) image's colours; returns uint8 of the same shape.

    Works in float on [0, 1] and rounds back to uint8 once at the end:

    1. brightness, with probability 0.5: multiply every channel by one factor ~ U[1 - 32/255, 1 + 32/255]
       (torchvision `adjust_brightness`, as the authors), clip to [0, 1];
    2. then, in an order chosen by a fair coin (contrast first, or saturation/hue first):
       - contrast, with probability 0.5: torchvision `adjust_contrast` with factor ~ U[0.5, 1.5]
         (blend with the image's mean grey level: factor 0.5 halves the distance from it);
       - saturation, with probability 0.5: torchvision `adjust_saturation` with factor ~ U[0.5, 1.5]
         (blend with the per-pixel grey image), and, independently with probability 0.5, hue:
         torchvision `adjust_hue` shifting the hue by ~ U[-18, 18] degrees (hue_factor = degrees / 360).

    Random numbers are drawn in this order: brightness coin [, factor], order coin, then for each of the two
    steps in the chosen order its coin(s) and, where applied, its factor; skipped steps draw nothing more.
    """
    out = image.to(torch.float32) / 255.0
    if _coin(generator, 0.5):
        out = F.adjust_brightness(out, _uniform(generator, 1.0 - BRIGHTNESS_DELTA, 1.0 + BRIGHTNESS_DELTA))

    def contrast(x: Tensor) -> Tensor:
        if _coin(generator, 0.5):
            x = F.adjust_contrast(x, _uniform(generator, *CONTRAST_RANGE))
        return x

    def saturation_hue(x: Tensor) -> Tensor:
        if _coin(generator, 0.5):
            x = F.adjust_saturation(x, _uniform(generator, *SATURATION_RANGE))
        if _coin(generator, 0.5):
            x = F.adjust_hue(x, _uniform(generator, -HUE_DELTA_DEGREES, HUE_DELTA_DEGREES) / 360.0)
        return x

    if _coin(generator, 0.5):
        out = saturation_hue(contrast(out))
    else:
        out = contrast(saturation_hue(out))
    return (out.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


def jitter_size(height: int, width: int, crop_size: int, scale: float) -> tuple[int, int]:
    """The (height, width) large-scale jitter resizes an image to: the aspect-preserving size that fits in
    (scale * crop_size) x (scale * crop_size), i.e. the long side becomes round(scale * crop_size) (each side
    rounded to the nearest integer, at least 1)."""
    ratio = scale * crop_size / max(height, width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


class TrainTransform:
    """The EoMT / Mask2Former training augmentation, applied jointly to an image and its masks.

    ``transform(image, masks, labels, generator) -> (image, masks, labels)`` with `image` uint8 (3, H, W),
    `masks` bool (N, H, W), `labels` (N,); the result is uint8 (3, S, S), bool (M, S, S) and (M,), M <= N,
    keeping the masks' order and dropping those with no pixel left. Steps, in order:

    1. photometric distortion of the image only, when `config.photometric` (see `photometric_distortion`);
    2. horizontal flip of image and masks with probability `config.flip_prob`;
    3. large-scale jitter: s ~ U[scale_min, scale_max]; image and masks are resized, keeping the aspect
       ratio, to the largest size that fits in (s*S) x (s*S) (`jitter_size`: long side = round(s*S)); the
       image bilinearly with antialiasing, the masks with nearest-exact interpolation;
    4. zero padding at the bottom and right up to at least S x S (image 0, masks False); a side already
       >= S is not padded;
    5. a random S x S crop: top ~ U{0..H'-S}, left ~ U{0..W'-S} over the padded size (H', W');
    6. masks left without any pixel are dropped with their labels.

    Random numbers, in order: the photometric draws (only when enabled), the flip coin, s, top, left.
    """

    def __init__(self, config: AugmentConfig):
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def __call__(self, image: Tensor, masks: Tensor, labels: Tensor,
                 generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.config
        size = cfg.crop_size
        image = torch.as_tensor(image)
        masks = torch.as_tensor(masks)
        labels = torch.as_tensor(labels)
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"image must be a uint8 tensor of shape (3, H, W), got {image.dtype} "
                             f"{tuple(image.shape)}")
        height, width = int(image.shape[1]), int(image.shape[2])
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (height, width):
            raise ValueError(f"masks must have shape (N, {height}, {width}) to match the image, got "
                             f"{tuple(masks.shape)}")
        if labels.shape != (masks.shape[0],):
            raise ValueError(f"labels must have shape ({masks.shape[0]},), got {tuple(labels.shape)}")

        img = tv_tensors.Image(image)
        msk = tv_tensors.Mask(masks.to(torch.uint8))

        if cfg.photometric:
            img = tv_tensors.Image(photometric_distortion(img.as_subclass(Tensor), generator))

        if _coin(generator, cfg.flip_prob):
            img = F.horizontal_flip(img)
            msk = F.horizontal_flip(msk)

        scale = _uniform(generator, *cfg.scale_range)
        new_size = list(jitter_size(height, width, size, scale))
        if new_size != [height, width]:
            img = F.resize(img, new_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            msk = F.resize(msk, new_size, interpolation=InterpolationMode.NEAREST_EXACT)

        pad_bottom, pad_right = max(0, size - new_size[0]), max(0, size - new_size[1])
        if pad_bottom or pad_right:
            padding = [0, 0, pad_right, pad_bottom]  # left, top, right, bottom
            img = F.pad(img, padding, fill=0)
            msk = F.pad(msk, padding, fill=0)

        padded_h, padded_w = int(img.shape[-2]), int(img.shape[-1])
        top = _randint(generator, padded_h - size)
        left = _randint(generator, padded_w - size)
        img = F.crop(img, top, left, size, size)
        msk = F.crop(msk, top, left, size, size)

        out_masks = msk.as_subclass(Tensor).to(torch.bool)
        keep = out_masks.flatten(1).any(dim=1)
        return img.as_subclass(Tensor).contiguous(), out_masks[keep].contiguous(), labels[keep].clone()
