"""Reading and writing EoMT checkpoints in every format users hold."""

from .backbone_init import build_from_backbone, resample_patch_embed
from .errors import CheckpointError

__all__ = ["CheckpointError", "build_from_backbone", "resample_patch_embed"]
