"""Reading tensors from safetensors and pickled checkpoints (plain tensors only), writing atomically."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import CheckpointError


def read_tensors(path: str | os.PathLike) -> dict[str, object]:
    """All entries of a checkpoint file. Pickles load with `weights_only=True`: code is never run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None and re.search(r"Unsupported operand|invalid load key", str(exc)):
            raise CheckpointError(f"{path}: truncated or not a checkpoint (not a pickle of tensors)") from None
        what = f" ({found[1]})" if found else ""
        raise CheckpointError(f"{path}: refused to load, it holds objects other than plain tensors{what}") from None
    except Exception as exc:  # garbage bytes make the unpickler fail in many ways (EOFError, IndexError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({reason})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dictionary of tensors, found {type(data).__name__}")
    return data


def tensors_only(entries: dict[str, object], path: str | os.PathLike) -> dict[str, Tensor]:
    tensors = {k: v for k, v in entries.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def write_safetensors_atomic(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save through a temporary file in the same folder and rename, so no half-written file remains."""
    from ..outputs.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
