"""Turning what users hold (files, PIL images, arrays, tensors) into RGB uint8 tensors.

Files are opened with their JPEG EXIF orientation applied. Every mode becomes RGB: grayscale is
replicated, transparency is composited onto white (as transformers does), palette and CMYK are
converted, 16-bit and 32-bit integer images are scaled to 8 bits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

MIN_SIDE = 8  # smaller images carry nothing a segmentation model can use


class ImageError(ValueError):
    """An image cannot be read or used; the message names the file and the reason."""


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an RGB PIL image with its EXIF orientation applied."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    try:
        with Image.open(path) as opened:
            opened.load()
            fill = jpeg_fill_start(opened)
            if fill is not None:
                raise ImageError(f"{path}: JPEG data ends early (truncated or corrupt file): rows {fill}-"
                                 f"{opened.height - 1} of {opened.height} are the decoder's flat grey fill; "
                                 "get the file again (or save it as PNG if that grey band is real)")
            image = ImageOps.exif_transpose(opened)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to decode safely ({exc.args[0].split('(')[0].strip()})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: truncated or corrupt image ({exc})") from None
    check_size(image.height, image.width, str(path))
    return to_rgb_pil(image)


def jpeg_fill_start(image: Image.Image) -> int | None:
    """The first row of the fill a baseline JPEG decoder leaves where the data ends early, or None.

    libjpeg does not fail on a file cut short and closed with an end marker: it warns (Pillow drops the
    warning) and leaves every block it could not read at zero, which decodes to exactly 128 in every channel.
    A file is taken as cut when its last row of MCUs (8 x the vertical sampling factor) is that grey and the
    grey does not fill the whole picture; the fill is then followed up, a row of MCUs at a time.
    """
    if image.format != "JPEG" or image.mode not in ("L", "RGB") or image.info.get("progressive") \
            or image.info.get("progression"):
        return None  # a progressive file cut short is blurred, not grey
    layers = getattr(image, "layer", None) or [(None, 1, 1, 0)]
    mcu = 8 * max(int(layer[2]) for layer in layers)
    height = image.height
    if height <= mcu:
        return None
    top = (height - 1) // mcu * mcu
    if not (np.asarray(image.crop((0, top, image.width, height))) == 128).all():
        return None
    while top >= mcu and (np.asarray(image.crop((0, top - mcu, image.width, top))) == 128).all():
        top -= mcu
    return top if top > 0 else None


def check_size(height: int, width: int, name: str) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ImageError(
            f"{name}: image is {width}x{height} pixels, too small to segment (minimum {MIN_SIDE}x{MIN_SIDE})")


def to_rgb_pil(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB."""
    if image.mode.startswith("I"):  # 16- or 32-bit integer grayscale
        array = np.asarray(image).astype(np.int64)
        top = array.max(initial=0)
        scale = 1 if top <= 255 and image.mode == "I" else (257 if top <= 65535 else 16843009)
        return Image.fromarray(np.clip(array // scale, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        array = np.asarray(image)
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)).convert("RGB")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _array_to_uint8(array: np.ndarray | Tensor) -> Tensor:
    tensor = torch.as_tensor(array)
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8) * 255
    if tensor.is_floating_point():
        top = 1.0 if tensor.numel() == 0 or tensor.max() <= 1.0 else 255.0
        return (tensor.float() / top * 255.0).round().clamp(0, 255).to(torch.uint8)
    tensor = tensor.to(torch.int64)
    if tensor.numel() and tensor.max() > 255:  # 16-bit data
        tensor = tensor // 257
    return tensor.clamp(0, 255).to(torch.uint8)


def _array_to_chw_tensor(array: np.ndarray, channels_first: bool) -> Tensor:
    """A tensor of `array` with channels first, sharing its memory only where the array may be written.

    The channel move and the grey -> RGB expansion happen here, in numpy, so that the one copy they need is
    also what makes a read-only array (`np.asarray` of a PIL image) writable: torch cannot mark a tensor
    read-only and warns on aliasing one. An array still read-only after that is copied.
    """
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    if array.ndim == 3 and not channels_first:
        array = array.transpose(2, 0, 1)
    elif array.ndim == 2:
        array = array[None]
    if array.ndim == 3 and array.shape[0] == 1 and array.dtype == np.uint8:
        array = np.broadcast_to(array, (3, *array.shape[1:]))
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def to_rgb_tensor(image, channels_first: bool | None = None) -> Tensor:
    """A (3, H, W) uint8 tensor from a PIL image, an (H, W[, C]) numpy array or a (C, H, W) tensor.

    Arrays and tensors with 1 channel are replicated; with 4, alpha is composited onto white.
    `channels_first` says how to read a 3-D input; by default numpy is HWC and torch is CHW.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return _array_to_chw_tensor(np.asarray(to_rgb_pil(image)), channels_first=False)
    shape = tuple(image.shape) if isinstance(image, (np.ndarray, Tensor)) else ()
    if isinstance(image, np.ndarray):
        tensor = _array_to_chw_tensor(image, channels_first is True)
        channels_first = True
    elif isinstance(image, Tensor):
        tensor = image
        channels_first = True if channels_first is None else channels_first
    else:
        raise TypeError(f"unsupported image type {type(image).__name__} (expected a path, PIL image, array or tensor)")
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3 and not channels_first:
        tensor = tensor.permute(2, 0, 1)
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W) with 1, 3 or 4 channels, "
                         f"got shape {shape}")
    tensor = _array_to_uint8(tensor)
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif tensor.shape[0] == 4:
        alpha = tensor[3:].float() / 255.0
        tensor = (tensor[:3].float() * alpha + 255.0 * (1 - alpha)).round().to(torch.uint8)
    return tensor.contiguous()
