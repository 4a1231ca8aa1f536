"""The one error every dataset reader raises (its own module: the archive and sample modules both need it), and
the one-line form of a YAML error (class files here, training recipes)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be read; the one-line message names the file and the problem."""

    def __init__(self, message: str):
        super().__init__(str(message).replace("\r", " ").replace("\n", " "))


class DatasetFileMissingError(DatasetError):
    """A file or folder the layout needs is not there (e.g. a split the dataset does not have)."""


def yaml_problem(exc: Exception) -> str:
    """PyYAML's error as one line that keeps where it is: `line 2, column 1: found character '\\t' that cannot start
    any token (while scanning for the next token)`, with a word on tabs, which YAML never takes as indentation."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem is None:
        return " ".join(str(exc).split()) or type(exc).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = f"{where}{problem}" + (f" ({context})" if context else "")
    if "'\\t'" in problem:
        text += "; YAML indents with spaces, not tabs"
    return " ".join(text.split())
