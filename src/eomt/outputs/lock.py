"""One job per output folder: `output_lock(folder, what)` holds `folder/.eomt-lock` while a job writes there.

The lock file is created atomically (`O_CREAT | O_EXCL`) and holds the holder's pid, host, command and
start time, so a second job refuses with one line naming the running one. A lock whose process is gone
(same host, no such pid: a job killed with kill -9) is stale and taken over; a lock from another host is
never judged stale (its pid means nothing here): the message says which file to delete if no such job runs.

`is_eomt_output(folder)` tells a folder eomt wrote (its record or a lock, live or stale), which input
walks skip and `--overwrite` requires before replacing files.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".eomt-lock"
RECORD_FILES = ("summary.json", "metrics.json")  # `eomt predict`'s job summary, `eomt eval --out`'s metrics


class OutputLocked(ValueError):
    """Another job holds the output folder."""


def main_process_by_environment() -> bool:
    """Whether this process is the first of its job as launchers (Fabric, torchrun, SLURM) number them: only it
    takes a job's lock; the others it starts or joins write under that lock."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale(holder: dict | None) -> bool:
    """A lock of this host whose process is gone (or an empty / unreadable one: a writer killed at birth)."""
    if holder is None:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(holder.get("pid"))


def describe_holder(holder: dict | None) -> str:
    if holder is None:
        return "another job"
    started = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(
        started, (int, float)) else ""
    return f"{holder.get('command', 'another job')} (pid {holder.get('pid')} on {holder.get('host')}{since})"


def _take_over(path: Path, seen: dict | None) -> None:
    """Remove a stale lock, unless another job replaced it meanwhile (then put that one back)."""
    aside = path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # someone else removed it first
    if _read(aside) == seen:
        aside.unlink(missing_ok=True)
        return
    try:  # a fresh lock of a job that started between our read and our rename
        os.link(aside, path)
    except FileExistsError:
        pass
    aside.unlink(missing_ok=True)


def acquire(folder: Path, command: str, option: str = "`out`") -> Path:
    """Create `folder/.eomt-lock` for this process; raises OutputLocked naming the holder when a live job has it."""
    path = folder / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:  # being written this instant, or left empty by a killed writer
                time.sleep(0.05)
                holder = _read(path)
            if not _stale(holder):
                raise OutputLocked(f"{option} {folder}: in use by {describe_holder(holder)}; wait for it to end or "
                                   f"choose another folder (if no such job runs, delete {path})") from None
            _take_over(path, holder)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        return path
    raise OutputLocked(f"{option} {folder}: could not take {path} (other jobs keep taking it)")


def release(path: Path) -> None:
    """Remove our lock file (only if it is still ours)."""
    holder = _read(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def output_lock(folder: str | os.PathLike, command: str | None = None, enabled: bool = True,
                option: str = "`out`") -> Iterator[None]:
    """Hold the lock of `folder` (created if missing) for the `with` block; a folder this call created and that
    is still empty at the end is removed again, so a job that failed early leaves nothing behind."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    created = []
    for parent in [folder, *folder.parents]:  # the folders this call creates, outermost last
        if parent.exists():
            break
        created.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    path = acquire(folder, command or " ".join(["eomt", *sys.argv[1:2]]), option)
    try:
        yield
    finally:
        release(path)
        for made in created:
            try:
                made.rmdir()  # only when empty
            except OSError:
                break


def is_eomt_output(folder: str | os.PathLike) -> bool:
    """`folder` was written by an eomt job: it holds a lock (live or stale) or an eomt record (summary.json /
    metrics.json with their own keys)."""
    folder = Path(folder)
    if (folder / LOCK_FILE).exists():
        return True
    for name, keys in zip(RECORD_FILES, (("task", "files_written", "failures"), ("task", "num_images", "metrics")),
                          strict=True):
        record = _read(folder / name) if (folder / name).is_file() else None
        if record is not None and all(key in record for key in keys):
            return True
    return False
