"""Turning any exception a command raises into one line on stderr and an exit code: never a traceback.

Errors that describe bad input (ValueError and its subclasses: CheckpointError, ConfigError, RecipeError,
DatasetError, ImageError; TrainingError) already name the file or value and what is wrong: they are printed
as they are. Operating-system errors are printed with the path they concern; running out of memory gets a
hint. Anything else is a bug of ours: it is still one line, and `EOMT_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import os
import sys

DEBUG_VARIABLE = "EOMT_DEBUG"
MEMORY_HINT = "out of memory; try a smaller --batch-size, a smaller input (--max-size) or fewer images at once"


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line."""
    parts = [part.strip() for part in str(text).splitlines() if part.strip()]
    return "; ".join(parts)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc).lower()
                                              or "can't allocate memory" in str(exc).lower()
                                              or "defaultcpuallocator" in str(exc).lower())


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, naming the file or value where the exception carries it."""
    from ..training.errors import TrainingError

    message = one_line(str(exc))
    if _is_out_of_memory(exc):
        return MEMORY_HINT
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (a JSON, YAML or pickle structure of absurd depth)"
    if isinstance(exc, (ValueError, TrainingError)) and message:
        return message
    if isinstance(exc, OSError):
        reason = exc.strerror or message or type(exc).__name__
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        if names:
            return f"{' -> '.join(os.fsdecode(n) for n in names)}: {reason}"
        return f"{type(exc).__name__}: {reason}"
    if type(exc).__module__.startswith("PIL"):
        return f"image error: {message or type(exc).__name__}"
    detail = f": {message}" if message else ""
    return (f"unexpected {type(exc).__name__}{detail} (this is a bug in eomt; "
            f"run with {DEBUG_VARIABLE}=1 for the traceback and please report it)")


def run_command(command: str, func, args) -> int:
    """Run `func(args)`; any exception becomes `eomt COMMAND: error: ...` on one line and exit code 1."""
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"eomt {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the whole point: nothing escapes as a traceback
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"eomt {command}: error: {describe(exc)}", file=sys.stderr)
        return 130 if type(exc).__name__ == "TrainingInterrupted" else 1
