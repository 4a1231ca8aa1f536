"""Jobs over many files: `predict_folder` (what `eomt predict` runs) and `convert` (`eomt convert`).

layout (inputs and output names), processes (Lightning Fabric), predict (the job), summary (its counts),
convert (a checkpoint to a transformers folder). Never imports evaluation/, training/ or cli/.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "predict_folder":
        from .predict import predict_folder

        return predict_folder
    raise AttributeError(f"module 'eomt.jobs' has no attribute {name!r}")
