"""eomt: the Encoder-only Mask Transformer as a package."""

from .checkpoints import CheckpointError
from .config import ConfigError, EomtConfig
from .modeling.eomt import EomtDinov3ForUniversalSegmentation, EomtForUniversalSegmentation, EomtOutput

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EomtConfig",
    "EomtDinov3ForUniversalSegmentation",
    "EomtForUniversalSegmentation",
    "EomtOutput",
]
__version__ = "0.1.0"
