"""The result files of one segmented image, as `eomt predict` and `eomt eval --out` write them.

Per image `<stem>`: semantic -> `<stem>.png` (class-id label map); panoptic -> `<stem>.png` (COCO panoptic
RGB ids) + `<stem>.json` (segments_info); instance -> `<stem>.json` (COCO results with RLE masks);
every task -> `<stem>_overlay.jpg`. A stem too long for the file system gets a shorter name (`fit_name`). The
job itself (many images, processes, resuming) is `eomt.jobs`.

Which ids the JSON files hold is recorded under `CATEGORY_IDS`: in each panoptic JSON and in the folder's
own record (`summary.json` of `eomt predict`, `metrics.json` of `eomt eval --out`), so that scoring the
folder later needs no flag. Instance JSON files are COCO result lists and carry no record of their own.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

CATEGORY_IDS = "category_ids"  # the key of the record
LABEL_IDS = "label_ids"  # the model's contiguous label ids 0..K-1 (what `eomt predict` writes)
DATASET_IDS = "dataset_ids"  # the dataset's category ids, the COCO convention (what `eomt eval --out` writes)


def id_kind(label_to_category: dict[int, int] | None) -> str:
    """The record of the ids `write_result` writes with this mapping."""
    return LABEL_IDS if label_to_category is None else DATASET_IDS


LONGEST_SUFFIX = "_overlay.jpg"


def fit_name(name: str, name_max: int = 255) -> str:
    """`name` (`a/IMG_1`) with a last part short enough that its longest result file, `<last>_overlay.jpg`, fits
    a file system's limit of `name_max` bytes: a longer last part is cut (in bytes) and tagged `~<hash>` of the
    whole part, so that two long names sharing a beginning still get their own files, the same in every run."""
    import hashlib

    folder, _, last = name.rpartition("/")
    raw = os.fsencode(last)
    room = name_max - len(LONGEST_SUFFIX)
    if len(raw) <= room:
        return name
    tag = "~" + hashlib.sha1(raw).hexdigest()[:8]
    last = os.fsdecode(raw[: room - len(tag)]) + tag
    return f"{folder}/{last}" if folder else last


def result_files(task: str, name: str) -> list[str]:
    """The files (relative to the output folder) one image's result consists of, overlay last."""
    own = {"semantic": [".png"], "panoptic": [".png", ".json"], "instance": [".json"]}[task]
    return [f"{name}{suffix}" for suffix in own] + [f"{name}_overlay.jpg"]


def write_result(result, image: Image.Image, stem: str, out_dir: Path, source: Path,
                 label_to_category: dict[int, int] | None = None) -> list[Path]:
    """Write one image's files; on failure, remove what was written for it and re-raise.

    `stem` may hold folders (`a/IMG_1`), created as needed; JSON files name the image by its last part.
    `label_to_category` maps the model's contiguous label ids to dataset category ids in JSON files.
    """
    from .atomic import write_jpeg_atomic, write_json_atomic, write_png_atomic

    written: list[Path] = []
    short = Path(stem).name
    try:
        if result.task == "semantic":
            written.append(write_png_atomic(out_dir / f"{stem}.png", result.segmentation.numpy()))
        elif result.task == "panoptic":
            rgb, info = result.to_coco_panoptic(label_to_category)
            written.append(write_png_atomic(out_dir / f"{stem}.png", rgb))
            written.append(write_json_atomic(out_dir / f"{stem}.json", {
                "file_name": f"{short}.png", "image": str(source), "segments_info": info,
                CATEGORY_IDS: id_kind(label_to_category),
                "labels": {str(s.label_id): s.label for s in result.segments}}))
        else:
            written.append(write_json_atomic(out_dir / f"{stem}.json",
                                             result.to_coco_instances(short, label_to_category)))
        written.append(write_jpeg_atomic(out_dir / f"{stem}_overlay.jpg", result.overlay(image)))
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    return written
