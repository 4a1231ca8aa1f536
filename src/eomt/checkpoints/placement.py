"""The `dtype` / `torch_dtype` and `device_map` arguments of `from_pretrained`, checked before loading."""

from __future__ import annotations

from typing import Any

import torch

DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
          "bfloat16": torch.bfloat16, "float64": torch.float64, "double": torch.float64}
# transformers' placement strategies; on one device each means "the best device there is".
_ONE_DEVICE_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_dtype(dtype: Any, torch_dtype: Any = None) -> torch.dtype | str | None:
    """A floating torch dtype, "auto" (the dtype the weights are stored in) or None (float32)."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
    value = dtype if dtype is not None else torch_dtype
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        name = value.removeprefix("torch.")
        if name not in DTYPES:
            raise ValueError(f"dtype {value!r} is not one of {', '.join(sorted(DTYPES))} or 'auto'")
        return DTYPES[name]
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, a name like 'bfloat16' or 'auto', got {value!r}")
    return value


def parse_device_map(device_map: Any) -> torch.device | None:
    """The one device the whole model goes to: "cpu", "cuda", "cuda:1", 1, torch.device, "auto", or a
    dict mapping every module to the same device (eomt does not split a model across devices)."""
    if device_map is None:
        return None
    if isinstance(device_map, dict):
        devices = {str(torch.device(d) if not isinstance(d, int) else torch.device("cuda", d))
                   for d in device_map.values()}
        if len(devices) != 1:
            raise ValueError(f"device_map places modules on {', '.join(sorted(devices))}: eomt loads the whole "
                             "model on one device (give one device)")
        device_map = next(iter(device_map.values()))
    if isinstance(device_map, str) and device_map in _ONE_DEVICE_STRATEGIES:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps") if mps is not None and mps.is_available() else torch.device("cpu")
    try:
        device = torch.device("cuda", device_map) if isinstance(device_map, int) else torch.device(device_map)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device_map {device_map!r} is not a device (e.g. 'cpu', 'cuda', 'cuda:0', 'auto')") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device_map {device_map!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device_map {device_map!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
