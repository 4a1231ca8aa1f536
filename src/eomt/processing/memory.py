"""Memory budgets of full-resolution post-processing: how much one image may use, and how to spend it.

Post-processing streams over queries (or classes): the output maps of an image are O(pixels), and the
full-resolution upsampled masks exist for a chunk of queries at a time. `MemoryBudget` decides the chunk
size from a budget in bytes, either given (`--max-memory 2GB`, `max_memory=`) or automatic (a share of the
memory the system can still give: MemAvailable and the cgroup limit on Linux, `torch.cuda.mem_get_info` on
CUDA). `estimate` says what an image needs, before anything is allocated, and `fit_hint` what would fit.

Sizes: a bare number is bytes; K, M, G, T (and KiB, MiB, GiB, TiB) are powers of 1024; KB, MB, GB, TB are
powers of 1000.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass

import torch

__all__ = ["MemoryBudget", "MemoryBudgetError", "Scratch", "available_memory", "estimate", "fit_hint",
           "format_size", "parse_size"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
          "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
MIN_BUDGET = 16 << 20  # below this nothing useful runs
AUTO_SHARE = 0.8  # of the memory still available, when no budget is given
WORKING_CAP = 256 << 20  # automatic chunk working set on CPU: larger chunks are not faster there
BAND_BYTES = 1 << 21  # per-pixel work in bands of about this many bytes of float32


class MemoryBudgetError(MemoryError):
    """An image cannot be post-processed within the memory budget; the message holds a hint that fits it."""


def parse_size(text: str | int, what: str = "max_memory") -> int:
    """Bytes of "2GB", "512MiB", "1.5G", "800M" or a plain number; ValueError naming `what` otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{what}: expected a size such as 2GB or 512MiB, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{what}: expected a size such as 2GB, 512MiB or 1.5G, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < MIN_BUDGET:
        raise ValueError(f"{what}: {text!r} is below the smallest useful budget of {format_size(MIN_BUDGET)}")
    return value


def format_size(count: float) -> str:
    """Bytes as a short human string: 1.5 GiB, 300 MiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup may still allocate before its limit (v2, then v1), or None without one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            return max(0, limit - usage)
    return None


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes that can still be allocated: free GPU memory on CUDA; on CPU MemAvailable (/proc/meminfo), less
    where a cgroup limit is closer, else the free physical pages."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    room = None
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    room = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        room = None
    if room is None:
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            room = 4 << 30
    cgroup = _cgroup_room()
    return min(room, cgroup) if cgroup is not None else room


DEFAULT_CACHE = 8 << 20  # last-level CPU cache assumed where the system does not say


@functools.cache
def cpu_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Size of the largest (last-level) CPU cache of cpu0, from Linux sysfs ("32768K"); DEFAULT_CACHE elsewhere.
    It sizes the bands of per-pixel work, so that a band's few arrays stay in cache."""
    sizes = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return DEFAULT_CACHE
    for entry in entries:
        try:
            with open(os.path.join(root, entry, "size")) as file:
                text = file.read().strip().upper()
        except OSError:
            continue
        match = re.fullmatch(r"(\d+)([KMG]?)", text)
        if match:
            sizes.append(int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2]])
    return max(sizes) if sizes else DEFAULT_CACHE


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes one image's post-processing may use (output maps + working set) on `device`.

    `total` None means automatic: `AUTO_SHARE` of `available_memory(device)` at the time of use. The chunk
    working set is what the total leaves after the image's output maps, at most `WORKING_CAP` on CPU when
    automatic (an explicit budget is used as given)."""

    total: int | None = None
    device: str = "cpu"

    @classmethod
    def of(cls, max_memory: int | str | MemoryBudget | None, device: torch.device | str = "cpu") -> MemoryBudget:
        if isinstance(max_memory, MemoryBudget):
            return max_memory
        total = None if max_memory is None else parse_size(max_memory, "max_memory")
        return cls(total, str(torch.device(device)))

    @property
    def explicit(self) -> bool:
        return self.total is not None

    def limit(self) -> int:
        """The total in bytes (measured now when automatic)."""
        return self.total if self.total is not None else int(AUTO_SHARE * available_memory(self.device))

    def working(self, fixed: int) -> int:
        """Bytes for the chunk working set once `fixed` bytes of output maps are held."""
        room = self.limit() - fixed
        if self.total is None and torch.device(self.device).type == "cpu":
            room = min(room, WORKING_CAP)
        return room

    def chunk(self, per_item: int, count: int, fixed: int = 0, minimum: int = 1) -> int:
        """Items (queries, classes) per chunk: as many as the working set holds, at least `minimum`, at most
        `count`."""
        if count <= 0:
            return 0
        fits = self.working(fixed) // max(1, per_item)
        return int(max(min(minimum, count), min(count, fits)))


class Scratch:
    """Reusable buffers for the per-chunk tensors of one image's post-processing.

    A large CPU tensor is mapped fresh by the allocator and freed back to the system, so each new one costs a
    page fault per 4 KiB it touches: a 12 MP image's 180 upsampled masks are 8.6 GB of fresh pages, about 2
    million faults and several seconds of system time. A buffer taken again under the same name is the same
    memory (grown when a larger one is asked for)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of `shape` and `dtype`, the memory of the last one named `name`
        when that was as large."""
        count = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < count:
            self._buffers.pop(name, None)  # free the smaller one before the larger one is allocated
            buffer = torch.empty(count, dtype=dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[:count].view(shape)


# --------------------------------------------------------------------------------------------- estimates

# Bytes per image pixel held at once by each task's streamed post-processing and result (output maps, the
# predictor's statistics and the writers, which work in bands too), beyond the chunk working set; the
# decoded image itself (3 bytes a pixel, twice: PIL and tensor) is counted apart.
PER_PIXEL = {"semantic": 22, "panoptic": 26, "instance": 18}
IMAGE_PER_PIXEL = 6
CHUNK_PER_PIXEL = 4  # one query's (or class's) upsampled float32 logits


def estimate(task: str, height: int, width: int, tile: int | None = None) -> int:
    """Bytes the post-processing and result files of one (height, width) image need at the least, streamed
    (one query per chunk); with `tile`, the per-window work is that of a tile x tile window instead."""
    pixels = height * width
    window = pixels if tile is None else min(pixels, tile * tile)
    return (PER_PIXEL[task] + IMAGE_PER_PIXEL) * pixels + 2 * CHUNK_PER_PIXEL * window


def fit_hint(task: str, height: int, width: int, limit: int) -> str:
    """What would fit `limit` bytes for this image: the largest size of the same aspect ratio."""
    per_pixel = PER_PIXEL[task] + IMAGE_PER_PIXEL + 2 * CHUNK_PER_PIXEL
    scale = math.sqrt(max(0.0, limit / per_pixel) / (height * width))
    if scale >= 1:
        return "it fits as it is"
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    return f"downscale it to at most {new_w}x{new_h} pixels (long side {max(new_w, new_h)} px)"
