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


def __getattr__(name: str):
    """Heavier entry points, imported on first use."""
    if name in ("evaluate", "evaluate_predictions"):
        from .evaluation import runner

        return getattr(runner, name)
    if name == "Segmenter":
        from .predictor import Segmenter

        return Segmenter
    raise AttributeError(f"module 'eomt' has no attribute {name!r}")
