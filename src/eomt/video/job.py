"""`eomt predict VIDEO`: segment video files (or frame folders) online and write tracked results.

For each video `<name>` the frames are segmented one by one by a `VideoSegmenter`; each frame's files go
to `OUT/<name>/` (see `eomt.video.formats`), followed by the query state (`OUT/<name>/.state.safetensors`:
the frame count and the last frame's query tokens). Every file is written atomically, so after a kill the
frames whose files exist are complete, and `skip_existing` continues at the frame after the last state
written, with the very query state the run had: the results equal those of an uninterrupted run. Once
every frame is done, the whole-video files are built from the per-frame ones: the overlay video
(`OUT/<name>_overlay.mp4`, each track in its own colour and with its label) and then `OUT/<name>.json`,
whose presence marks the video finished.

A file that is no video (or has no frame, an unsupported codec, frames under 8x8 pixels) is one line and
the next video goes on; a truncated or corrupt one gives the frames it could decode and one line naming
the problem.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs.atomic import atomic_path, write_json_atomic, write_png_atomic
from . import formats
from .sources import FrameFolder, VideoError, VideoFile, open_source

STATE_FILE = ".state.safetensors"
TASKS = ("instance", "panoptic", "semantic")


@dataclass
class VideoReport:
    """What happened to one video."""

    source: str
    name: str = ""
    task: str = ""
    frames: int = 0  # frames with results
    resumed_at: int = 0  # frames already done by an earlier run
    tracks: int = 0
    seconds: float = 0.0
    skipped: bool = False
    problem: str | None = None  # a truncated / corrupt file: results cover the frames before the break
    error: str | None = None  # nothing could be done

    def line(self) -> str:
        if self.error:
            return f"{self.source}: error: {self.error}"
        if self.skipped:
            return f"{self.source}: already done ({self.name}.json exists), skipped"
        new = self.frames - self.resumed_at
        rate = f", {new / self.seconds:.2f} frames/s" if self.seconds > 0 and new else ""
        resumed = f", resumed at frame {self.resumed_at}" if self.resumed_at else ""
        text = f"{self.source}: {self.frames} frames ({self.task}), {self.tracks} tracks{resumed}{rate}"
        return text + (f"; problem: {self.problem}" if self.problem else "")

    @property
    def failed(self) -> bool:
        return bool(self.error or self.problem)


def predict_videos(sources: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                   model: Any = None, *, task: str | None = None, device: str | None = None, dtype: str | None = None,
                   threshold: float | None = None, skip_existing: bool = False, overwrite: bool = False,
                   progress: bool = True, frame_folders: bool = False) -> list[VideoReport]:
    """Segment every video of `sources` into `out`; one report per video (see `VideoReport.line`).

    `model`: a hub id, a transformers-format VidEoMT directory or a ready `VideoSegmenter` (default:
    tue-mps/videomt-dinov2-small-ytvis2019). `frame_folders`: folders are videos given as frame images.
    Existing results are an error unless `skip_existing` (continue) or `overwrite` (start again).
    """
    from .segmenter import DEFAULT_VIDEO_MODEL, VideoSegmenter

    if skip_existing and overwrite:
        raise ValueError("`skip_existing` and `overwrite` contradict each other; pass one")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must lie in [0, 1], got {threshold!r}")
    sources = [os.fspath(sources)] if isinstance(sources, (str, os.PathLike)) else [os.fspath(s) for s in sources]
    sources, unmatched = _expand_patterns(sources)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` {out} is a file, not a folder")
    names = {}
    for source in sources:
        name = Path(source).name if frame_folders and Path(source).is_dir() else Path(source).stem
        if name in names:
            raise ValueError(f"{source} and {names[name]} would both write {out / name}: rename one")
        names[name] = source
        if not (skip_existing or overwrite):
            _refuse_existing(out, name)

    reports = [VideoReport(pattern, error="no file matches this pattern") for pattern in unmatched]
    opened: list[tuple[int, VideoFile | FrameFolder]] = []
    for number, source in enumerate(sources, start=1):
        try:
            opened.append((number, open_source(source, frame_folder=frame_folders)))
        except VideoError as exc:
            reports.append(VideoReport(source, error=str(exc).removeprefix(f"{source}: ")))
    if not opened:
        return reports
    segmenter = model if isinstance(model, VideoSegmenter) else VideoSegmenter.from_pretrained(
        model or DEFAULT_VIDEO_MODEL, device=device, dtype=dtype, task=task, threshold=threshold)
    if isinstance(model, VideoSegmenter) and threshold is not None:
        segmenter.threshold = float(threshold)
    task = task or segmenter.task
    source_model = segmenter.source or "VideoSegmenter"
    if Path(source_model).exists():  # the same folder however it is spelled
        source_model = str(Path(source_model).resolve())
    for number, video in opened:
        try:
            reports.append(_run_video(segmenter, video, out, task, number, source_model, skip_existing, progress))
        except (VideoError, OSError) as exc:
            reports.append(VideoReport(str(video.path), video.name, task,
                                       error=str(exc).removeprefix(f"{video.path}: ")))
    return reports


def _expand_patterns(sources: list[str]) -> tuple[list[str], list[str]]:
    """Glob patterns (`clips/*.mp4`) replaced by the files they match, in name order; patterns matching none."""
    import glob

    expanded, unmatched = [], []
    for source in sources:
        if any(c in source for c in "*?[") and not Path(source).exists():
            matches = sorted(glob.glob(source))
            expanded.extend(matches)
            if not matches:
                unmatched.append(source)
        else:
            expanded.append(source)
    return expanded, unmatched


def _result_names(name: str) -> list[str]:
    return [f"{name}.json", f"{name}_overlay.mp4"]


def _refuse_existing(out: Path, name: str) -> None:
    """Never replace a user's files silently."""
    for path in [out / n for n in _result_names(name)] + [out / name]:
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            raise ValueError(f"{path} already exists: pass `skip_existing=True` to continue that run, or "
                             "`overwrite=True` to replace its files")


def _state_metadata(segmenter, task: str, model: str, video) -> dict[str, str]:
    return {"task": task, "threshold": repr(segmenter.threshold), "model": model,
            "source": f"{video.path.name} {video.width}x{video.height}"}


def _read_state(path: Path, expected: dict[str, str]) -> dict[str, Any] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            queries = f.get_tensor("queries")
    except (SafetensorError, OSError, ValueError):
        return None  # unreadable: start again from the first frame
    different = [k for k, v in expected.items() if metadata.get(k) != v]
    if different:
        raise VideoError(f"{path.parent}: the results there were made with another {different[0]} "
                         f"({metadata.get(different[0])!r}, now {expected[different[0]]!r}); pass `overwrite=True` to "
                         "start again")
    return {"frame_index": int(metadata.get("frame_index", "0")), "queries": queries}


def _frames_present(folder: Path, task: str, count: int) -> bool:
    suffixes = {"instance": [".json"], "panoptic": [".png", ".json"], "semantic": [".png"]}[task]
    return all((folder / f"{formats.frame_stem(i)}{s}").exists() for i in range(count) for s in suffixes)


def _remove_temporaries(folder: Path) -> None:
    """Temporary files a killed run left behind (`.<file>.<random>.tmp`, see eomt.outputs.atomic)."""
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)


def _run_video(segmenter, video, out: Path, task: str, video_id: int, model: str, skip_existing: bool,
               progress: bool) -> VideoReport:
    import torch

    from ..checkpoints.io import write_safetensors_atomic
    from ..outputs.progress import PlainProgress, progress_bar

    name = video.name
    report = VideoReport(str(video.path), name, task)
    folder, final = out / name, out / f"{name}.json"
    if skip_existing and final.exists() and (out / f"{name}_overlay.mp4").exists():
        report.skipped = True
        return report
    metadata = _state_metadata(segmenter, task, model, video)
    segmenter.reset()
    start = 0
    if skip_existing and (folder / STATE_FILE).exists():
        state = _read_state(folder / STATE_FILE, metadata)
        if state is not None and _frames_present(folder, task, state["frame_index"]):
            segmenter.load_state(state)
            start = state["frame_index"]
    _remove_temporaries(folder)
    _remove_temporaries(out)
    things = _things(segmenter)
    bar = progress_bar(max(video.num_frames or 0, start), f"eomt predict {name} ({task})", "frame",
                       enabled=progress, initial=start)
    done, started = start, time.perf_counter()
    for index, frame in enumerate(video.frames()):
        if index < start:
            continue  # decoded to reach the resume point; its results exist
        prediction = segmenter.step(frame, task)
        _write_frame(prediction, folder, task, things)
        write_safetensors_atomic({"queries": segmenter.queries}, folder / STATE_FILE,
                                 metadata={**metadata, "frame_index": str(index + 1)})
        done = index + 1
        if isinstance(bar, PlainProgress):  # plain lines: show the rate (tqdm shows its own)
            bar.set_postfix(fps=f"{(done - start) / max(time.perf_counter() - started, 1e-9):.2f}")
        bar.update(1)
    bar.close()
    report.seconds = time.perf_counter() - started
    report.frames, report.resumed_at, report.problem = done, start, video.problem
    if done < start:
        raise VideoError(f"{video.path}: has {done} frames, fewer than the {start} an earlier run segmented; pass "
                         "`overwrite=True` to start again")
    _remove_frames_after(folder, done)
    with torch.inference_mode():
        report.tracks = _write_video_files(segmenter, video, out, task, video_id, done, things)
    return report


def _things(segmenter) -> set[int] | None:
    if not segmenter.stuff_classes:
        return None
    return set(segmenter.id2label) - set(segmenter.stuff_classes)


def _write_frame(prediction, folder: Path, task: str, things: set[int] | None) -> None:
    stem = formats.frame_stem(prediction.index)
    if task == "semantic":
        write_png_atomic(folder / f"{stem}.png", prediction.segmentation.numpy())
    elif task == "panoptic":
        rgb, record = formats.panoptic_record(prediction, things)
        write_png_atomic(folder / f"{stem}.png", rgb)
        write_json_atomic(folder / f"{stem}.json", record)
    else:
        write_json_atomic(folder / f"{stem}.json", formats.instance_record(prediction))


def _remove_frames_after(folder: Path, count: int) -> None:
    """Frame files of an earlier, longer run (with --overwrite) that this video does not have."""
    for entry in folder.iterdir():
        stem = entry.name.split(".")[0]
        if stem.isdigit() and len(stem) == 6 and int(stem) >= count and entry.suffix in (".png", ".json"):
            entry.unlink()


def _records(folder: Path, count: int) -> Iterator[dict]:
    import json

    for index in range(count):
        path = folder / f"{formats.frame_stem(index)}.json"
        try:
            yield json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise VideoError(f"{path}: cannot read this frame's results ({exc}); pass `overwrite=True` to start "
                             "again") from None


def _track_map(folder: Path, task: str, index: int, record: dict | None, shape: tuple[int, int]) -> tuple:
    """(H, W) ids of one frame and its labels [(id, text, score)], read back from the frame's files."""
    from PIL import Image

    stem = formats.frame_stem(index)
    if task == "semantic":
        with Image.open(folder / f"{stem}.png") as image:
            label_map = np.asarray(image).astype(np.int64)
        return label_map, None
    if task == "panoptic":
        with Image.open(folder / f"{stem}.png") as image:
            ids = formats.panoptic_track_map(np.asarray(image.convert("RGB")))
        return ids, [(s["track_id"], f"{s['label']} #{s['track_id']}", s.get("score")) for s in record["segments_info"]]
    from pycocotools import mask as mask_utils

    ids = np.full(shape, -1, dtype=np.int64)
    labels = []
    for instance in sorted(record["instances"], key=lambda s: s["track_id"]):
        rle = dict(instance["segmentation"])
        ids[mask_utils.decode(rle).astype(bool)] = instance["track_id"]
        labels.append((instance["track_id"], f"{instance['label']} #{instance['track_id']}", instance["score"]))
    return ids, labels


def _write_video_files(segmenter, video, out: Path, task: str, video_id: int, count: int,
                       things: set[int] | None) -> int:
    """The overlay video, then OUT/<name>.json (written last: it marks the video finished); returns the tracks."""
    from ..outputs.overlay import overlay
    from .encode import write_video_file

    name, folder = video.name, out / video.name
    records = list(_records(folder, count)) if task != "semantic" else [None] * count
    id2label = segmenter.id2label
    classes_seen: set[int] = set()

    def overlay_frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(video.frames()):
            if index >= count:
                return
            ids, labels = _track_map(folder, task, index, records[index], frame.shape[:2])
            if labels is None:  # semantic: each class its own colour and name
                present = np.unique(ids).tolist()
                classes_seen.update(present)
                labels = [(int(c), id2label.get(int(c), str(int(c))), None) for c in present]
            yield np.asarray(overlay(frame, ids, labels))

    with atomic_path(out / f"{name}_overlay.mp4") as tmp:
        write_video_file(tmp, overlay_frames(), video.fps)
    if task == "instance":
        results = formats.youtube_vis_results(records, count, video_id)
        write_json_atomic(out / f"{name}.json", results)
        return len({r["track_id"] for r in results})
    if task == "panoptic":
        write_json_atomic(out / f"{name}.json", formats.vipseg_results(name, records, id2label, things))
        return len({s["track_id"] for r in records for s in r["segments_info"]})
    write_json_atomic(out / f"{name}.json", {"video": name, "frames": count, "fps": video.fps,
                                            "labels": {str(k): v for k, v in sorted(id2label.items())}})
    return len(classes_seen)
