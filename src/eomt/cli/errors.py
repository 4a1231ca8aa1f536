"""Turning any exception a command raises into one line on stderr and an exit code: never a traceback.

Errors that describe bad input (ValueError and its subclasses: CheckpointError, ConfigError, RecipeError,
DatasetError, ImageError; TrainingError) already name the file or value and what is wrong: they are printed
as they are. Operating-system errors are printed with the path they concern; running out of memory gets a
hint in the command's terms. Anything else is a bug of ours: it is still one line, and `EOMT_DEBUG=1` shows the
traceback.

The library speaks of its Python arguments, written in backticks (`batch_size`, `device='cpu'`,
`overwrite=True`); a command line has flags. `to_command_line` rewrites each backticked argument the running
command takes into its flag (`--batch-size`, `--device cpu`, `--overwrite`, or a positional's metavar), so each
message names what the reader can actually type.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

DEBUG_VARIABLE = "EOMT_DEBUG"
# out of memory: what to lower, in each command's own terms
MEMORY_HINTS = {
    "predict": "out of memory; try --batch-size 1, --tile SIZE for a large image, or --device cpu",
    "eval": "out of memory; try --batch-size 1, --tile SIZE for large images, or --device cpu",
    "train": "out of memory; lower train.batch_size (raise train.accumulate to keep the global batch) or "
             "data.crop_size in the recipe",
    "export": "out of memory; export a smaller --height/--width or on a machine with more memory",
}
MEMORY_HINT = "out of memory; close other programs or use a machine with more memory"
# a hub model that is not cached and cannot be downloaded: how each command takes a local one instead
HUB_HINTS = {
    "predict": "pass --model PATH (a local directory or checkpoint file), or follow the offline quick start in "
               "README.md (eomt synthetic, then eomt train -r synthetic_tiny)",
    "eval": "pass --model PATH (a local directory or checkpoint file)",
    "export": "MODEL may be a local directory or checkpoint file instead",
    "info": "SOURCE may be a local directory or checkpoint file instead",
    "convert": "SOURCE may be a local directory or checkpoint file instead",
}
_ARGUMENT = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`]*))?`")


def command_flags(parser: argparse.ArgumentParser) -> dict[str, tuple[str, bool]]:
    """A command's arguments: Python name (argparse dest) -> (how the command line writes it, is a switch)."""
    flags: dict[str, tuple[str, bool]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
            flags[action.dest] = (name, action.nargs == 0)
        else:
            flags[action.dest] = (str(action.metavar or action.dest.upper()), False)
    return flags


def to_command_line(message: str, flags: dict[str, tuple[str, bool]]) -> str:
    """Rewrite the backticked Python arguments of a library message that the command takes into its flags."""
    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        written, switch = flags[name]
        if value is None:
            return written
        if switch:
            return written if value == "True" else f"no {written}"
        return f"{written} {value.strip(chr(39) + chr(34))}"

    return _ARGUMENT.sub(flag, message)


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    """The sub-parser of `command` in the `eomt` parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


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


def naming_model_flag(exc: Exception) -> Exception:
    """A checkpoint error of `--model`, saying so (a hub model that cannot be had gets its hint in `describe`)."""
    from ..checkpoints.errors import CheckpointError, HubUnavailableError

    if isinstance(exc, HubUnavailableError) or "--model" in str(exc):
        return exc
    return CheckpointError(f"{exc} (--model PATH)")


def describe(exc: BaseException, command: str | None = None) -> str:
    """One line saying what went wrong, naming the file or value where the exception carries it; hints are in
    the terms of `command` (an `eomt` command) when given."""
    from ..checkpoints.errors import HubUnavailableError
    from ..training.errors import TrainingError

    message = one_line(str(exc))
    if _is_out_of_memory(exc):
        return MEMORY_HINTS.get(command or "", MEMORY_HINT)
    if isinstance(exc, HubUnavailableError) and command in HUB_HINTS:
        return f"{one_line(exc.reason)}; {HUB_HINTS[command]}"
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


def run_command(command: str, func, args, flags: dict[str, tuple[str, bool]] | None = None) -> int:
    """Run `func(args)`; any exception becomes `eomt COMMAND: error: ...` on one line and exit code 1, the
    arguments it names written as the command's `flags` (see `command_flags`)."""
    try:
        return func(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or a signal caught where temporaries had to be removed
        name = getattr(exc, "signal", "SIGINT")
        print(f"eomt {command}: interrupted" + ("" if name == "SIGINT" else f" ({name})"), file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except Exception as exc:  # noqa: BLE001 - the whole point: nothing escapes as a traceback
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"eomt {command}: error: {to_command_line(describe(exc, command), flags or {})}", file=sys.stderr)
        return 130 if type(exc).__name__ == "TrainingInterrupted" else 1
