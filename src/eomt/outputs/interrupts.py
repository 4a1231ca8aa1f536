"""SIGINT and SIGTERM while a temporary file or folder exists: clean it up, then stop as `Interrupted`.

SIGTERM's default action ends the process on the spot, leaving a hidden temporary behind that nothing
removes; SIGINT's KeyboardInterrupt can be caught and wrapped by a library (torch's ONNX exporter reports
it as an export error of its own). Inside `cleanup_on_signals` both signals raise `Interrupted` (a
KeyboardInterrupt carrying the signal), the cleanup runs with further signals held off, and the block
always ends as `Interrupted` once a signal arrived, whatever the code in between made of it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Stopped by a signal; `exit_code` is the shell's (128 + signal number: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        super().__init__(self.signal)


class SignalWatch:
    """What `cleanup_on_signals` yields: `check()` raises `Interrupted` if a signal has arrived."""

    def __init__(self) -> None:
        self.received: int | None = None

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)


@contextmanager
def cleanup_on_signals(cleanup: Callable[[], None]) -> Iterator[SignalWatch]:
    """Run the block; if it raises or a signal arrives, call `cleanup()` (signals held off meanwhile) and
    re-raise, as `Interrupted` when a signal came. Handlers are installed from the main thread only, and not
    for a signal the process ignores (a background job's SIGINT)."""
    watch = SignalWatch()

    def handler(signum, frame):
        if watch.received is None:
            watch.received = signum
        raise Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, handler)
    try:
        try:
            yield watch
            watch.check()  # a signal whose KeyboardInterrupt some library swallowed
        except BaseException as exc:
            for s in previous:
                signal.signal(s, signal.SIG_IGN)
            cleanup()
            if watch.received is not None and not isinstance(exc, Interrupted):
                raise Interrupted(watch.received) from None
            raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
