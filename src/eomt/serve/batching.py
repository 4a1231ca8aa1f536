"""Dynamic batching: requests wait in one queue; worker threads (one per model replica) take up to
`max_batch_size` of them, waiting at most `batch_timeout` seconds after the first, and segment them in one
forward pass.

Admission is bounded: at most `max_queue` requests may be waiting or being segmented at once; one more is
refused at once (`QueueFull`, answered 503 with Retry-After) instead of growing the queue without bound. Results
travel back through `concurrent.futures.Future`s, which the event loop awaits (`asyncio.wrap_future`).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from .metrics import ServeMetrics

_STOP = object()


class QueueFull(Exception):
    """The service holds `max_queue` requests already."""


@dataclass
class Job:
    """One image to segment, and where its result goes."""

    image: Any
    task: str
    threshold: float
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, float]:  # only requests with the same task and threshold share a forward pass
        return self.task, self.threshold


class Batcher:
    """The queue and its worker threads; `submit` may be called from any thread."""

    def __init__(self, max_batch_size: int, batch_timeout: float, max_queue: int,
                 metrics: ServeMetrics | None = None) -> None:
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_queue = max_queue
        self.metrics = metrics or ServeMetrics()
        self._queue: queue.Queue = queue.Queue()
        self._admitted = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, segmenters: list) -> None:
        """One worker thread per segmenter (replicas on the same device may be the same object)."""
        for i, segmenter in enumerate(segmenters):
            thread = threading.Thread(target=self._work, args=(segmenter,), name=f"eomt-serve-worker-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Let the workers finish what is queued, then end them."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    @property
    def full(self) -> bool:
        return self._admitted >= self.max_queue

    def submit(self, image: Any, task: str, threshold: float) -> Future:
        """Queue one image; its future gets the `Prediction` or the exception. Raises QueueFull."""
        with self._lock:
            if self._admitted >= self.max_queue:
                self.metrics.rejected.inc()
                raise QueueFull(f"{self._admitted} requests are waiting or being segmented (--max-queue "
                                f"{self.max_queue})")
            self._admitted += 1
        self.metrics.in_flight.inc()
        job = Job(image, task, threshold)
        job.future.add_done_callback(self._release)
        self.metrics.queue_length.inc()
        self._queue.put(job)
        return job.future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._admitted -= 1
        self.metrics.in_flight.dec()

    def _take(self, block: bool, timeout: float | None = None):
        item = self._queue.get(block, timeout)
        if item is not _STOP:
            self.metrics.queue_length.dec()
        return item

    def _collect(self) -> list[Job] | None:
        """The next batch: the first waiting job and whatever joins it within batch_timeout; None to stop."""
        first = self._take(block=True)
        if first is _STOP:
            return None
        batch = [first]
        deadline = time.monotonic() + self.batch_timeout
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._take(block=remaining > 0, timeout=remaining if remaining > 0 else None)
            except queue.Empty:
                break
            if job is _STOP:  # keep it for the loop to see after this batch
                self._queue.put(_STOP)
                break
            batch.append(job)
        return batch

    def _work(self, segmenter) -> None:
        while (batch := self._collect()) is not None:
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]  # drop cancelled requests
            for _, group in groupby(sorted(live, key=lambda j: j.key), key=lambda j: j.key):
                self._run(segmenter, list(group))

    def _run(self, segmenter, jobs: list[Job]) -> None:
        start = time.monotonic()
        try:
            results = segmenter.predict([job.image for job in jobs], task=jobs[0].task, batch_size=len(jobs),
                                        threshold=jobs[0].threshold)
        except Exception as exc:  # noqa: BLE001 - reported to each request, the worker lives on
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:  # one image may have caused it (e.g. out of memory): the others still get results
                self._run_alone(segmenter, job)
            return
        self.metrics.observe_batch(len(jobs), time.monotonic() - start)
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)

    def _run_alone(self, segmenter, job: Job) -> None:
        start = time.monotonic()
        try:
            result = segmenter.predict(job.image, task=job.task, threshold=job.threshold)
        except Exception as exc:  # noqa: BLE001
            job.future.set_exception(exc)
            return
        self.metrics.observe_batch(1, time.monotonic() - start)
        job.future.set_result(result)
