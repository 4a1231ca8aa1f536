"""Atomic file writers.

Every writer writes to a temporary file in the destination's directory (a dot-prefixed name from
``tempfile.mkstemp``) and moves it into place with ``os.replace``, so a reader never sees a partly
written file and an existing file is only replaced by a complete one. On any exception (including
KeyboardInterrupt) the temporary file is removed and the exception re-raised; the previous file, if
any, is left untouched. Missing parent directories are created. The final file gets the usual
permissions (0o666 minus the process umask), not mkstemp's 0o600.

PNG label maps (2-D integer arrays, see `label_map_to_image`): ids in [0, 255] are written as 8-bit
grayscale ("L") PNGs, larger ids up to 65535 as 16-bit grayscale ("I;16") PNGs; negative or larger ids
are rejected (shift or remap them first, e.g. void -1 -> 255 or 0).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "atomic_path",
    "prefix_of_temporary",
    "label_map_to_image",
    "temporary_prefix",
    "write_bytes_atomic",
    "write_jpeg_atomic",
    "write_json_atomic",
    "write_png_atomic",
]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_TEMP_DECORATION = len(b"..") + 8 + len(b".tmp")  # "." name "." + mkstemp's 8 random characters + ".tmp"


def temporary_prefix(name: str) -> str:
    """The prefix of the hidden temporary file for a file called `name`: `.<name>.`, with `name` cut (at a
    character) so that the temporary name fits NAME_MAX even when `name` itself just fits."""
    raw = os.fsencode(name)
    room = NAME_MAX - _TEMP_DECORATION
    if len(raw) > room:
        name = os.fsdecode(raw[:room])  # a character cut in two stays valid bytes (PEP 383 escapes)
    return f".{name}."


def prefix_of_temporary(entry: str) -> str | None:
    """The `temporary_prefix` a directory entry made by `atomic_path` starts with, or None for other entries:
    compare it with `temporary_prefix(name)` to find a killed run's leftovers for the file `name`."""
    if entry.startswith(".") and entry.endswith(".tmp") and len(entry) > _TEMP_DECORATION:
        return entry[: -(8 + len(".tmp"))]
    return None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit it replaces ``path``, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temporary_prefix(target.name), suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary file object; on clean exit it replaces ``path``, on error it is removed."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def _write_with(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> Path:
    with _atomic_file(path) as f:
        writer(f)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Atomically write ``data`` to ``path``; returns the path."""
    return _write_with(path, lambda f: f.write(data))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Atomically write ``obj`` as UTF-8 JSON (compact unless ``indent``); numpy/torch values become lists/numbers."""
    separators = (",", ":") if indent is None else None

    def writer(f: IO[bytes]) -> None:
        # a file name that is not valid UTF-8 reaches Python with surrogates (PEP 383); they are written as JSON
        # escapes ("\udce9"), which json.load turns back into the same name
        text = io.TextIOWrapper(f, encoding="utf-8", errors="backslashreplace", newline="\n", write_through=True)
        try:
            json.dump(obj, text, indent=indent, separators=separators, default=_json_default, ensure_ascii=False)
            text.write("\n")
            text.flush()
        finally:
            text.detach()  # leave the underlying file open for _atomic_file to close

    return _write_with(path, writer)


def label_map_to_image(label_map: Any) -> Image.Image:
    """(H, W) integer ids -> PIL image: "L" (8-bit) if all ids < 256, else "I;16" (16-bit) if < 65536.

    Bool maps become 8-bit 0/255 masks. Raises ValueError for negative ids or ids >= 65536.
    """
    arr = label_map.detach().cpu().numpy() if isinstance(label_map, torch.Tensor) else np.asarray(label_map)
    if arr.ndim != 2:
        raise ValueError(f"label map must have shape (H, W), got {arr.shape}")
    if arr.dtype == np.bool_:
        return Image.fromarray(arr.astype(np.uint8) * 255)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"label map must hold integers, got {arr.dtype}")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"label map ids must lie in [0, 65535] for PNG, got [{lo}, {hi}]")
    if hi < 256:
        return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16))  # mode "I;16"


def _to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 2:
        return label_map_to_image(arr)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        if arr.dtype != np.uint8:
            raise ValueError(f"colour images must be uint8, got {arr.dtype}")
        return Image.fromarray(np.ascontiguousarray(arr))
    raise ValueError(f"expected an (H, W) label map or an (H, W, 3|4) uint8 image, got shape {arr.shape}")


def write_png_atomic(path: str | os.PathLike, image: Any) -> Path:
    """Atomically write a PNG from a PIL image, an (H, W, 3|4) uint8 array, or an (H, W) label map.

    Label maps are written as 8-bit PNGs when every id is below 256 and as 16-bit PNGs otherwise
    (see `label_map_to_image`). Arrays may be numpy arrays or torch tensors.
    """
    pil = _to_pil(image)
    return _write_with(path, lambda f: pil.save(f, format="PNG"))


def write_jpeg_atomic(path: str | os.PathLike, image: Any, quality: int = 90) -> Path:
    """Atomically write a JPEG (``quality`` 1-95); non-RGB/L images are converted to RGB first."""
    pil = _to_pil(image)
    if pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")
    return _write_with(path, lambda f: pil.save(f, format="JPEG", quality=quality))
