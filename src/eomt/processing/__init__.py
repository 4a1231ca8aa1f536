"""Pre- and post-processing: from images to network inputs and from network outputs to segmentations.

Works on tensors and images only: never imports modeling/, runtimes/, data/, evaluation/, training/, jobs/ or
cli/ (checkpoints/ and outputs/ only to read and write its own preprocessor_config.json).
"""

from .image_io import ImageError, load_image
from .image_processor import AutoImageProcessor, BatchFeature, EomtImageProcessor, EomtImageProcessorFast

__all__ = ["AutoImageProcessor", "BatchFeature", "EomtImageProcessor", "EomtImageProcessorFast", "ImageError",
           "load_image"]
