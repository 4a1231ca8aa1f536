"""The README's "Command line" summary names every option of every command (it is what users read first)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from eomt.cli.commands import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _summary_entries() -> dict[str, str]:
    """command -> the text of its entry in the summary (its `eomt COMMAND` line and the indented lines after)."""
    text = README.read_text()
    section = text[text.index("## Command line"):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    entries: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        match = re.match(r"eomt (\S+)", line)
        if match:
            command = match.group(1)
            entries[command] = entries.get(command, "") + line + "\n"
        elif command is not None and line.startswith(" "):
            entries[command] += line + "\n"
    return entries


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [max(a.option_strings, key=len) for a in parser._actions
            if a.option_strings and "-h" not in a.option_strings]


def test_every_command_and_option_is_in_the_summary():
    entries = _summary_entries()
    missing = {}
    for name, parser in _commands().items():
        assert name in entries, f"eomt {name} is not in the README's Command line summary"
        absent = [o for o in _long_options(parser) if not re.search(re.escape(o) + r"(?![\w-])", entries[name])]
        if absent:
            missing[name] = absent
    assert missing == {}, f"options missing from the README's Command line summary: {missing}"
    assert "--version" in entries["--version"]
