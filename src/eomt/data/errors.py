"""The one error every dataset reader raises (its own module: the archive and sample modules both need it)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be read; the one-line message names the file and the problem."""

    def __init__(self, message: str):
        super().__init__(str(message).replace("\r", " ").replace("\n", " "))
