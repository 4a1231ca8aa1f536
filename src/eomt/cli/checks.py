"""Checks of command-line values, as argparse types (no torch import) and run-time checks (device)."""

from __future__ import annotations

import argparse
import math
import re
import sys

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line: `eomt predict: error: ... (see eomt predict --help)`."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def memory_size(text: str) -> int:
    """Bytes of a size such as 2GB, 512MiB or 1.5G (see eomt.processing.memory.parse_size)."""
    from ..processing.memory import parse_size

    try:
        return parse_size(text, "size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("size: ")) from None


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def probability(text: str) -> float:
    value = _number(text, float, "a number in [0, 1]")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def tile_overlap(text: str) -> float:
    """--tile-overlap: a fraction of the window in [0, 0.9) (at 0.9 and beyond windows would barely move)."""
    value = _number(text, float, "a fraction in [0, 0.9)")
    if not math.isfinite(value) or not 0.0 <= value < 0.9:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 0.9), got {text!r}")
    return value


def device_name(text: str) -> str:
    """cpu, cuda, cuda:N, mps, xpu: checked for form here, for presence by `check_device` at run time."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (expected cpu, cuda, cuda:N or mps)")
    return text


def check_device(name: str | None) -> None:
    """Refuse a device this machine does not have, before any model is loaded."""
    if name is None or name == "cpu":
        return
    import torch

    kind, _, index = name.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if index and int(index) >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    elif kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ValueError(f"--device {name}: XPU is not available on this machine (use --device cpu)")


def check_runtime(dtype: str | None, backend: str, compile: bool = False) -> None:
    """Refuse precision / backend combinations that cannot run, before any model is loaded."""
    if dtype == "int8" and backend != "onnxruntime":
        raise ValueError("--dtype int8 runs on the onnxruntime backend only (add --backend onnxruntime)")
    if compile and backend != "torch":
        raise ValueError("--compile applies to the torch backend only")
