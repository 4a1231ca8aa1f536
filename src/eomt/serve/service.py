"""The state of one service: loading (in a thread, while the server already answers /health with 503), ready,
or failed; the model replicas, the batcher and the metrics."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from .batching import Batcher
from .metrics import ServeMetrics
from .options import ServeOptions


class Service:
    """Loads the replicas in the background and runs the batcher once they are warm."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = ServeMetrics()
        self.batcher = Batcher(options.max_batch_size, options.batch_timeout, options.max_queue, self.metrics)
        self.replicas: list = []
        self.description: dict = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.on_failure: Callable[[], None] | None = None  # the server sets this: a failed load ends the process
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load, name="eomt-serve-loader", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        from .replicas import load_replicas, model_description

        try:
            self.replicas = load_replicas(self.options)
            self.description = model_description(self.replicas, self.options)
        except BaseException as exc:  # noqa: BLE001 - reported by the command once the server has stopped
            self.error = exc
            if self.on_failure is not None:
                self.on_failure()
            return
        self.batcher.start(self.replicas)
        self.ready.set()
        devices = ", ".join(self.description["devices"])
        print(f"eomt serve: ready: {self.options.model} ({self.description['task']}, {devices}, "
              f"{self.options.workers} worker(s), batches of up to {self.options.max_batch_size} within "
              f"{self.options.batch_timeout * 1000:g} ms)", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """After the server has answered every request in flight: end the workers."""
        if self.ready.is_set():
            self.batcher.stop()
