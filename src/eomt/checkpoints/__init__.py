"""Reading and writing EoMT checkpoints in every format users hold."""

from .errors import CheckpointError

__all__ = ["CheckpointError"]
