"""Reading and writing EoMT checkpoints in every format users hold, and building a model from a backbone.

Above modeling/ (backbone_init builds the network); never imports processing/, runtimes/, data/, evaluation/,
training/, jobs/ or cli/. `load.py` never imports the network class: `from_pretrained` passes it in.
"""

from .errors import CheckpointError

__all__ = ["CheckpointError", "build_from_backbone", "resample_patch_embed"]


def __getattr__(name: str):
    """The backbone initialisers import torch: only on first use."""
    if name in ("build_from_backbone", "resample_patch_embed"):
        from . import backbone_init

        return getattr(backbone_init, name)
    raise AttributeError(f"module 'eomt.checkpoints' has no attribute {name!r}")
