"""Image tensor resizing with the values of torchvision's `transforms.v2.functional.resize`.

transformers' EoMT processor resizes with torchvision; we compute the same numbers with
`torch.nn.functional.interpolate` alone, because importing torchvision costs about a second per
process (it pulls in torch._dynamo), which is most of the start-up of `eomt predict` on a folder.
The rules copied are torchvision's: which dtypes are resized natively (uint8 on CPU for bilinear
with AVX2/AVX512 or ARM, and for bicubic; uint8 on any device for nearest), otherwise float32 with
clamping (bicubic) and rounding back to the integer dtype.
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F
from torch import Tensor

# PIL resampling codes (as stored in preprocessor_config.json) -> interpolate modes
MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
_UNSUPPORTED = {1: "LANCZOS", 4: "BOX", 5: "HAMMING"}


def mode_for(resample: int) -> str:
    """The interpolate mode of a PIL resampling code; codes torch cannot resize with are a ValueError."""
    if resample in _UNSUPPORTED:
        raise ValueError(f"resample={resample} ({_UNSUPPORTED[resample]}) is not supported for tensors; "
                         "use 0 (nearest), 2 (bilinear) or 3 (bicubic)")
    if resample not in MODES:
        raise ValueError(f"resample must be a PIL resampling code 0-5, got {resample}")
    return MODES[resample]


def _native_uint8(mode: str, device: torch.device) -> bool:
    if mode == "nearest-exact":
        return True
    if device.type != "cpu":
        return False
    if mode == "bilinear":
        return (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
                or platform.machine() in ("aarch64", "arm64"))
    return True


def resize(image: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Resize a (..., C, H, W) tensor to `size` (H, W); antialiased except for nearest."""
    num_channels, height, width = image.shape[-3:]
    if (height, width) == tuple(size) or image.numel() == 0:
        return image
    shape, dtype = image.shape, image.dtype
    image = image.reshape(-1, num_channels, height, width)
    strides = image.stride()
    if image.is_contiguous(memory_format=torch.channels_last) and image.shape[0] == 1 and image.numel() != strides[0]:
        # keep interpolate's output channels-last for a single channels-last image, as torchvision does
        image = image.as_strided((1, num_channels, height, width), (image.numel(), *strides[1:]))
    cast = dtype not in (torch.float32, torch.float64) and not (dtype == torch.uint8
                                                                and _native_uint8(mode, image.device))
    if cast:
        image = image.float()
    nearest = mode == "nearest-exact"
    image = F.interpolate(image, size=list(size), mode=mode, align_corners=None if nearest else False,
                          antialias=not nearest)
    if cast:
        if mode == "bicubic" and dtype == torch.uint8:
            image = image.clamp_(min=0, max=255)
        if not dtype.is_floating_point:
            image = image.round_()
        image = image.to(dtype)
    return image.reshape(*shape[:-2], *size)
