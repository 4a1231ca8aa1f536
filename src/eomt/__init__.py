"""eomt: the Encoder-only Mask Transformer as a package.

Every public name is imported on first use (PEP 562), so `import eomt` and `eomt --help` do not pay for
torch; `from eomt import EomtForUniversalSegmentation` works as usual.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "CheckpointError": ".checkpoints.errors",
    "ConfigError": ".config",
    "EomtConfig": ".config",
    "EomtDinov3Config": ".config",
    "EomtDinov3ForUniversalSegmentation": ".modeling.eomt",
    "EomtForUniversalSegmentation": ".modeling.eomt",
    "EomtOutput": ".modeling.eomt",
    "AutoImageProcessor": ".processing",
    "EomtImageProcessor": ".processing",
    "EomtImageProcessorFast": ".processing",
    "ImageError": ".processing",
    "evaluate": ".evaluation.runner",
    "evaluate_predictions": ".evaluation.runner",
    "Segmenter": ".predictor",
    "VideoSegmenter": ".video.segmenter",
    "VideomtConfig": ".config",
    "VideomtForUniversalSegmentation": ".modeling.videomt",
    "VideomtOutput": ".modeling.videomt",
    "predict_folder": ".jobs.predict",
}

__all__ = sorted(n for n in _LAZY if n not in ("evaluate", "evaluate_predictions", "Segmenter", "predict_folder",
                                               "VideoSegmenter"))


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eomt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
