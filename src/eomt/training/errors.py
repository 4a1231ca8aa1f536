"""The errors of training: a bad recipe, and a run that cannot go on (their own module, below recipe.py and
recipe_checks.py, which both raise them)."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe cannot be read or holds an invalid value; the message names the key."""


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and where the last good checkpoint is."""
