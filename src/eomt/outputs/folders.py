"""Output folders that never mix a user's old files with new ones.

`check_new_output(path, ...)` refuses a folder that already holds results unless the caller passes
`overwrite=True`; `staged_directory(path)` builds the new contents in a hidden sibling folder and swaps
it in only once complete, so a folder is either entirely old or entirely new, also after an interruption.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .interrupts import cleanup_on_signals


class OutputExistsError(ValueError):
    """The output folder already holds results and the user did not ask to overwrite them."""


def check_writable_dir(path: str | os.PathLike, option: str = "`out`") -> Path:
    """`path` may be created or written as a folder: not an existing file, and its nearest existing parent is
    a writable folder. Raises ValueError naming the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: no permission to write in {probe}")
    return path


def check_new_output(path: str | os.PathLike, overwrite: bool, what: str,
                     markers: tuple[str, ...] | None = None, option: str = "`out`") -> Path:
    """Refuse `path` when it already holds results (any of `markers`, or any file when `markers` is None)."""
    path = check_writable_dir(path, option)
    if not path.is_dir() or overwrite:
        return path
    if markers is None:
        found = sorted(p.name for p in path.iterdir())
    else:
        found = [m for m in markers if (path / m).exists()]
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise OutputExistsError(f"{path}: already holds {what} ({shown}); pass `overwrite=True` to replace it, "
                                "or choose another folder")
    return path


@contextmanager
def staged_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder next to `path`; on success it replaces `path` (whose old contents are
    removed), on any error or interruption (SIGINT, SIGTERM) it is deleted and `path` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    with cleanup_on_signals(lambda: shutil.rmtree(staging, ignore_errors=True)) as signals:
        yield staging
        signals.check()  # interrupted: do not swap in what may be incomplete
        os.chmod(staging, 0o777 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
