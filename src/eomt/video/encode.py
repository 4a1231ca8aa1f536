"""Writing the overlay video: frames in, an H.264 MP4 out (MPEG-4 Part 2 where this FFmpeg has no H.264 encoder).

The caller passes a temporary path (see `eomt.outputs.atomic.atomic_path`), so the video appears whole or
not at all. yuv420p needs even sides: an odd last row or column is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import numpy as np

from .sources import _import_av


def _encoder(av) -> str:
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different errors for unknown and unavailable codecs
            continue
    raise ValueError("this FFmpeg build has neither an H.264 nor an MPEG-4 encoder for the overlay video")


def write_video_file(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> int:
    """Encode (H, W, 3) uint8 RGB frames into an MP4 at `path` (the container named explicitly: `path` may
    end in .tmp); returns the number of frames written."""
    av = _import_av()
    count = 0
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = None
        for frame in frames:
            if stream is None:
                height, width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2
                codec = _encoder(av)
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"crf": "20", "preset": "veryfast"} if codec == "libx264" else {"qscale": "3"}
            image = np.ascontiguousarray(frame[:stream.height, :stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count
