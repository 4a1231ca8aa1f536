"""The settings of one `eomt serve` process, checked once before anything is loaded."""

from __future__ import annotations

import math
from dataclasses import dataclass

TASKS = ("semantic", "instance", "panoptic")  # equal to eomt.predictor.TASKS; kept here to stay torch-free
FORMATS = ("json", "hf", "png")
DEFAULT_THRESHOLD = 0.8  # as `eomt predict --threshold`


@dataclass(frozen=True)
class ServeOptions:
    """What `eomt serve` was asked for; `check()` refuses impossible values with one line naming the flag."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    task: str | None = None
    device: str | None = None
    dtype: str | None = None
    backend: str = "torch"
    max_batch_size: int = 8
    batch_timeout: float = 0.01  # seconds the first request of a batch waits for company
    workers: int = 1
    api_key: str | None = None
    max_image_pixels: int = 40_000_000
    max_body_mb: float = 20.0
    max_queue: int = 64  # requests waiting or being segmented at once; more are answered 503

    def check(self) -> ServeOptions:
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"--task {self.task}: expected one of {', '.join(TASKS)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: expected 0..65535 (0 picks a free port)")
        for flag, value in (("--max-batch-size", self.max_batch_size), ("--workers", self.workers),
                            ("--max-image-pixels", self.max_image_pixels), ("--max-queue", self.max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} {value}: expected a whole number >= 1")
        if not math.isfinite(self.batch_timeout) or not 0 <= self.batch_timeout <= 60:
            raise ValueError(f"--batch-timeout {self.batch_timeout}: expected seconds in [0, 60]")
        if not math.isfinite(self.max_body_mb) or self.max_body_mb <= 0:
            raise ValueError(f"--max-body-mb {self.max_body_mb}: expected a positive number of megabytes")
        if self.api_key is not None and (not self.api_key or self.api_key != self.api_key.strip()):
            raise ValueError("--api-key: the key must not be empty or start/end with spaces")
        return self

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def worker_devices(device: str | None, workers: int, cuda_count: int) -> list[str]:
    """The device of each model worker: `cuda` (or no device with CUDA present) with N workers means cuda:0..N-1,
    one model per GPU; any other device is shared by all workers."""
    if device is None:
        device = "cuda" if cuda_count else "cpu"
    if device == "cuda" and workers > 1:
        if workers > cuda_count:
            raise ValueError(f"--workers {workers} with --device cuda needs {workers} CUDA devices; this machine "
                             f"has {cuda_count} (give --device cuda:N to put every worker on one device)")
        return [f"cuda:{i}" for i in range(workers)]
    return [device] * workers
