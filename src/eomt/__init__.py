"""eomt: the Encoder-only Mask Transformer as a package."""

from .checkpoints import CheckpointError
from .config import ConfigError, EomtConfig
from .modeling.eomt import EomtDinov3ForUniversalSegmentation, EomtForUniversalSegmentation, EomtOutput
from .processing import AutoImageProcessor, EomtImageProcessor, EomtImageProcessorFast, ImageError

__all__ = [
    "AutoImageProcessor",
    "CheckpointError",
    "ConfigError",
    "EomtConfig",
    "EomtDinov3ForUniversalSegmentation",
    "EomtForUniversalSegmentation",
    "EomtImageProcessor",
    "EomtImageProcessorFast",
    "EomtOutput",
    "ImageError",
]
__version__ = "0.1.0"
