"""`eomt predict`: segment many image files and write standard result files for each.

Per image `<stem>`: semantic -> `<stem>.png` (class-id label map); panoptic -> `<stem>.png` (COCO panoptic
RGB ids) + `<stem>.json` (segments_info); instance -> `<stem>.json` (COCO results with RLE masks);
every task -> `<stem>_overlay.jpg`. A bad image is reported and skipped; the others complete.
"""

from __future__ import annotations

import glob
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


@dataclass
class JobReport:
    done: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def collect_images(sources: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (searched recursively for image files) and glob patterns -> image paths, in order."""
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                problems.append((source, "folder holds no image files"))
            found.extend(files)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(source):
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
            if not matches:
                problems.append((source, "pattern matches no file"))
            found.extend(matches)
        else:
            problems.append((source, "no such file or directory"))
    seen: set[Path] = set()
    unique = []
    for path in found:  # the same file named twice is segmented once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique, problems


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """`<stem>` per image; images whose stems collide keep their extension in the name (a_jpg, a_png)."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in paths}


def write_result(result, image: Image.Image, stem: str, out_dir: Path, source: Path,
                 label_to_category: dict[int, int] | None = None) -> list[Path]:
    """Write one image's files; on failure, remove what was written for it and re-raise.

    `label_to_category` maps the model's contiguous label ids to dataset category ids in JSON files.
    """
    from .io_utils import write_jpeg_atomic, write_json_atomic, write_png_atomic

    written: list[Path] = []
    try:
        if result.task == "semantic":
            written.append(write_png_atomic(out_dir / f"{stem}.png", result.segmentation.numpy()))
        elif result.task == "panoptic":
            rgb, info = result.to_coco_panoptic(label_to_category)
            written.append(write_png_atomic(out_dir / f"{stem}.png", rgb))
            written.append(write_json_atomic(out_dir / f"{stem}.json", {
                "file_name": f"{stem}.png", "image": str(source), "segments_info": info,
                "labels": {str(s.label_id): s.label for s in result.segments}}))
        else:
            written.append(write_json_atomic(out_dir / f"{stem}.json",
                                             result.to_coco_instances(stem, label_to_category)))
        written.append(write_jpeg_atomic(out_dir / f"{stem}_overlay.jpg", result.overlay(image)))
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    return written


def run(sources: list[str], model: str, task: str | None, out_dir: Path, device: str | None, batch_size: int,
        threshold: float, dtype: str | None = None, progress: bool = True, backend: str = "torch",
        compile: bool = False) -> JobReport:
    """Segment every image of `sources`, writing results to `out_dir`; never stops on one bad image."""
    from tqdm import tqdm

    from .predictor import Segmenter
    from .processing.image_io import ImageError, load_image

    report = JobReport()
    paths, problems = collect_images(sources)
    report.failed.extend(problems)
    if not paths:
        return report
    segmenter = Segmenter.from_pretrained(model, device=device, dtype=dtype, task=task, backend=backend,
                                          compile=compile)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = output_stems(paths)
    bar = tqdm(total=len(paths), unit="img", desc=f"eomt predict ({segmenter.task})", disable=not progress,
               file=sys.stderr)

    def flush(batch: list[tuple[Path, Image.Image]]) -> None:
        try:
            results = segmenter.predict([im for _, im in batch], batch_size=len(batch))
        except Exception as exc:  # a batch-level failure (e.g. out of memory) fails its images, not the job
            report.failed.extend((str(p), f"inference failed ({type(exc).__name__}: {exc})") for p, _ in batch)
            bar.update(len(batch))
            return
        for (path, image), result in zip(batch, results, strict=True):
            try:
                write_result(result, image, stems[path], out_dir, path)
                report.done.append(path)
            except OSError as exc:
                report.failed.append((str(path), f"cannot write results ({exc})"))
            bar.update(1)

    batch: list[tuple[Path, Image.Image]] = []
    for path in paths:
        try:
            batch.append((path, load_image(path)))
        except ImageError as exc:
            report.failed.append((str(path), str(exc).removeprefix(f"{path}: ")))
            bar.update(1)
            continue
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    return report
