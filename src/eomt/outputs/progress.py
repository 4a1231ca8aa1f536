"""Progress for long commands: a tqdm bar on a terminal, plain lines when stderr goes to a file or pipe.

A redirected log (cluster jobs, `2> log.txt`) then holds readable lines such as
`train: 120/555 steps (21%), loss=0.412` every tenth of the way, instead of carriage-return redraws.
"""

from __future__ import annotations

import sys
from typing import Any


class PlainProgress:
    """The part of tqdm's interface the commands use, printing one line per tenth of the total."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, file=None) -> None:
        self.total, self.desc, self.unit, self.n = max(int(total), 0), desc, unit, int(initial)
        self.file = file or sys.stderr
        self.postfix = ""
        self._next = self._threshold_after(self.n)

    def _threshold_after(self, n: int) -> int:
        step = max(1, self.total // 10)
        return (n // step + 1) * step

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or self.n == self.total:
            self._print()
            self._next = self._threshold_after(self.n)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _print(self) -> None:
        share = f" ({100 * self.n // self.total}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{share}{extra}", file=self.file, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(PlainProgress):
    def _print(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0):
    """tqdm on a terminal, `PlainProgress` lines otherwise, nothing when not `enabled`."""
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit=unit, desc=desc, file=sys.stderr)
    return PlainProgress(total, desc, unit, initial)
