"""Video segmentation with VidEoMT: frames in, per-frame segmentations whose ids are track ids out.

`segmenter` runs a `VideomtForUniversalSegmentation` online (one frame at a time, the query state carried
between calls, constant memory); `postprocess` turns one frame's logits into a segmentation; `sources`
decodes video files (PyAV, the optional extra `eomt[video]`) and frame folders; `formats` builds the
YouTube-VIS and VIPSeg-style result files; `job` is `eomt predict VIDEO`.

Above modeling/, checkpoints/, processing/ and outputs/; never imports cli/, jobs/, training/, evaluation/,
data/, runtimes/ or predictor (the image Segmenter).
"""

from __future__ import annotations

__all__ = ["FramePrediction", "VideoSegmenter"]


def __getattr__(name: str):
    """The segmenter imports torch: only on first use, so that the CLI can ask `sources` about file names cheaply."""
    if name in __all__:
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'eomt.video' has no attribute {name!r}")
