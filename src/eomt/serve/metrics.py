"""The service's Prometheus metrics, in a registry of its own (`GET /metrics` shows only these)."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

RATE_WINDOW_S = 10.0  # images/s is measured over this many seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]

disable_created_metrics()  # no `*_created` series: they double the text and no dashboard reads them


class ServeMetrics:
    """Requests by endpoint and status, request latency, batch sizes and durations, queue length, images/s."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("eomt_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("eomt_request_duration_seconds", "time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("eomt_batch_size", "images per forward pass", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_duration = Histogram("eomt_batch_duration_seconds", "time to segment one batch (model + "
                                        "post-processing)", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_length = Gauge("eomt_queue_length", "requests waiting for a batch", registry=self.registry)
        self.in_flight = Gauge("eomt_requests_in_flight", "segment requests admitted and not yet answered",
                               registry=self.registry)
        self.rejected = Counter("eomt_rejected", "segment requests refused with 503 because the queue was full",
                                registry=self.registry)
        self.abandoned = Counter("eomt_abandoned", "segment requests whose client went away before the answer "
                                 "(dropped from the queue when still waiting)", registry=self.registry)
        self.images = Counter("eomt_images", "images segmented", registry=self.registry)
        self.images_per_second = Gauge("eomt_images_per_second",
                                       f"images segmented per second over the last {RATE_WINDOW_S:g} s",
                                       registry=self.registry)
        self.images_per_second.set_function(self._rate)
        self._done: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_duration.observe(seconds)
        self.images.inc(size)
        with self._lock:
            self._done.append((time.monotonic(), size))

    def _rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._done and self._done[0][0] < now - RATE_WINDOW_S:
                self._done.popleft()
            return sum(n for _, n in self._done) / RATE_WINDOW_S

    def render(self) -> bytes:
        return generate_latest(self.registry)
