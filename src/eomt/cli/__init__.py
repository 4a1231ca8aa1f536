"""The `eomt` command: the parser and commands (commands), value checks (checks), error reporting (errors), export.

The top floor: nothing in the package imports cli/. Each command imports its stage inside the command, so
`eomt --help` answers without importing torch.
"""

from .commands import main

__all__ = ["main"]
