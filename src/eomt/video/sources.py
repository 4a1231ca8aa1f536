"""Where frames come from: video files (decoded with PyAV, the optional extra `eomt[video]`) and frame folders.

A source is checked when opened (a file that is no video, has no video stream, a codec this FFmpeg cannot
decode, no frame at all, or frames smaller than 8x8 pixels: one-line `VideoError`). Frames then come one at
a time as (H, W, 3) uint8 arrays. A file that breaks off (truncated, corrupt packets) yields the frames
before the break; `problem` then says what happened, in one line, once iteration is over.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv",
                  ".3gp", ".ogv")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MIN_SIDE = 8
INSTALL_HINT = "reading videos needs PyAV: pip install 'eomt[video]'"


class VideoError(ValueError):
    """A video source cannot be used; the message names it and says why."""


def is_video_path(source: str | os.PathLike) -> bool:
    """Whether a file name has a video suffix (the test `eomt predict` dispatches on)."""
    return Path(source).suffix.lower() in VIDEO_SUFFIXES


def is_video_source(source: str | os.PathLike, frame_folders: bool = False) -> bool:
    """Whether `eomt predict` treats `source` as a video: a video file name, or a folder with `frame_folders`."""
    return is_video_path(source) or (frame_folders and Path(source).is_dir())


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError(INSTALL_HINT) from None
    return av


def _check_size(width: int, height: int, name: str) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise VideoError(f"{name}: video is {width}x{height} pixels, too small to segment (minimum "
                         f"{MIN_SIDE}x{MIN_SIDE})")


class VideoFile:
    """A video file's first video stream, checked on opening; `frames()` decodes it one frame at a time."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.problem: str | None = None
        if not self.path.exists():
            raise VideoError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a directory, not a video file (a folder of frames is a video with "
                             "`frame_folders=True`, or `eomt predict --video`)")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: file is empty")
        av = _import_av()
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, EOFError) as exc:
            if isinstance(exc, EOFError) or isinstance(exc, av.error.EOFError):
                raise VideoError(f"{self.path}: no video frames (the file ends before any)") from None
            raise VideoError(f"{self.path}: not a video, or truncated before its index, or a format FFmpeg cannot "
                             "read") from None
        with container:
            if not container.streams.video:
                raise VideoError(f"{self.path}: holds no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise VideoError(f"{self.path}: video codec not supported (this FFmpeg build has no decoder for it)")
            self.codec = stream.codec_context.name
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            _check_size(self.width, self.height, str(self.path))
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 25.0
            self.num_frames = int(stream.frames) or None  # from the header; unknown (0) in some containers
            if self.num_frames is None and stream.duration and stream.time_base and rate:
                self.num_frames = max(1, round(float(stream.duration * stream.time_base) * float(rate)))
                self._estimated = True
            else:
                self._estimated = False

    def frames(self) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB frames in order. On a decoding error the frames before it are yielded and
        `problem` says what broke; no frame at all is a VideoError."""
        av = _import_av()
        count = 0
        self.problem = None
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if (frame.width, frame.height) != (self.width, self.height):
                        self.problem = (f"frame {count} is {frame.width}x{frame.height}, the video {self.width}x"
                                        f"{self.height}: stopped there")
                        break
                    yield frame.to_ndarray(format="rgb24")
                    count += 1
        except av.error.FFmpegError as exc:
            self.problem = f"corrupt or truncated: decoding stopped after {count} frames ({_first_line(exc)})"
        if count == 0:
            raise VideoError(f"{self.path}: no frame could be decoded" + (f" ({self.problem})" if self.problem else
                                                                           " (a video stream without frames)"))
        if self.problem is None and self.num_frames and not self._estimated and count < self.num_frames:
            self.problem = f"truncated or corrupt: decoded {count} of the {self.num_frames} frames its header lists"


class FrameFolder:
    """A folder of frame images, in natural file-name order (frame2 before frame10)."""

    def __init__(self, path: str | os.PathLike, fps: float = 25.0) -> None:
        from ..processing.image_io import ImageError, load_image

        self.path = Path(path)
        self.name = self.path.name
        self.problem: str | None = None
        self.codec = "images"
        self.fps = fps
        if not self.path.is_dir():
            raise VideoError(f"{self.path}: not a folder of frames")
        self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                            key=_natural_key)
        if not self.files:
            raise VideoError(f"{self.path}: no frame images ({', '.join(FRAME_SUFFIXES)}) in this folder")
        self.num_frames = len(self.files)
        try:
            first = load_image(self.files[0])
        except ImageError as exc:
            raise VideoError(str(exc)) from None
        self.width, self.height = first.width, first.height
        _check_size(self.width, self.height, str(self.files[0]))

    def frames(self) -> Iterator[np.ndarray]:
        from ..processing.image_io import ImageError, load_image

        self.problem = None
        for count, file in enumerate(self.files):
            try:
                image = load_image(file)
            except ImageError as exc:
                self.problem = f"stopped at frame {count}: {exc}"
                return
            if (image.width, image.height) != (self.width, self.height):
                self.problem = (f"stopped at frame {count}: {file.name} is {image.width}x{image.height}, the first "
                                f"frame {self.width}x{self.height}")
                return
            yield np.asarray(image)


def open_source(path: str | os.PathLike, frame_folder: bool = False) -> VideoFile | FrameFolder:
    """A video file, or (with `frame_folder`) a folder of frames."""
    if frame_folder and Path(path).is_dir():
        return FrameFolder(path)
    return VideoFile(path)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
