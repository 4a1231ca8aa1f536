"""Pre- and post-processing: from images to network inputs and from network outputs to segmentations."""

from .image_io import ImageError, load_image
from .image_processor import AutoImageProcessor, BatchFeature, EomtImageProcessor, EomtImageProcessorFast

__all__ = ["AutoImageProcessor", "BatchFeature", "EomtImageProcessor", "EomtImageProcessorFast", "ImageError",
           "load_image"]
