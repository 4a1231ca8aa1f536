"""`eomt predict` / `eomt.predict_folder`: segment many image files on one or many processes.

Each process takes a disjoint shard of the sorted plan (see `layout`), decodes its images in
DataLoader workers, segments them in batches through `Segmenter` and writes each image's result
files atomically. A present result file is therefore a complete one, which is what `skip_existing`
relies on to continue an interrupted run. Process 0 gathers the counts and writes `OUT/summary.json`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from .layout import PlannedImage, collect, plan_outputs, shard
from .summary import PredictSummary, ProcessCounts

SUMMARY_FILE = "summary.json"
_ANY_RESULT = (".png", ".json", "_overlay.jpg")  # the files of every task, for the overwrite check


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes one planned image per item (in a DataLoader worker); a bad file becomes its reason."""

    def __init__(self, items: list[PlannedImage]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from ..processing.image_io import ImageError, load_image

        item = self.items[i]
        try:
            return item, load_image(item.path), None
        except ImageError as exc:
            return item, None, str(exc).removeprefix(f"{item.path}: ")


def _as_list(batch: list) -> list:
    return batch


def _validate(batch_size: int, num_workers: int, threshold: float, skip_existing: bool, overwrite: bool) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"`num_workers` must be 0 or more, got {num_workers!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"`threshold` must lie in [0, 1], got {threshold!r}")
    if skip_existing and overwrite:
        raise ConfigError("`skip_existing` and `overwrite` contradict each other; pass one")


def _check_existing(plan: list[PlannedImage], out: Path, skip_existing: bool, overwrite: bool, ours: bool) -> None:
    """Never replace a user's files, never mix results with inputs: no result goes into a folder that holds an
    input image (a later run would take it as one); files of the plan already in `out` are an error unless
    `skip_existing` / `overwrite`, which apply only to a folder eomt wrote (`ours`)."""
    if not out.is_dir():
        return
    for item in plan:
        folder = (out / item.name).parent
        if os.path.realpath(folder) == os.path.realpath(item.path.parent):
            raise ConfigError(f"`out` {out}: would put results beside the input image {item.path}, where a later "
                              "run would take them as images; choose an `out` outside the input folders (e.g. a "
                              "new folder)")
        for suffix in _ANY_RESULT:
            path = out / f"{item.name}{suffix}"
            if not path.exists():
                continue
            if not (skip_existing or overwrite):
                raise ConfigError(f"{path} already exists: pass `skip_existing=True` to continue that run, or "
                                  "`overwrite=True` to replace its files")
            if not ours:
                raise ConfigError(f"{path} already exists and eomt did not write it (no summary.json or "
                                  f".eomt-lock in {out}): eomt never replaces it; move it or choose another `out`")


def _remove_stale_temporaries(items: list[PlannedImage], task: str, out: Path) -> None:
    """Temporary files a killed run left behind (`.<file>.<random>.tmp`, see eomt.outputs.atomic) for these images."""
    from ..outputs.atomic import prefix_of_temporary, temporary_prefix
    from ..outputs.result_files import result_files

    expected: dict[Path, set[str]] = {}
    for item in items:
        for name in result_files(task, item.name):
            path = out / name
            expected.setdefault(path.parent, set()).add(temporary_prefix(path.name))
    for folder, names in expected.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if prefix_of_temporary(entry) in names:
                (folder / entry).unlink(missing_ok=True)


def _is_complete(item: PlannedImage, task: str, out: Path) -> bool:
    from ..outputs.result_files import result_files

    return all((out / name).exists() for name in result_files(task, item.name))


def inference_failure(exc: BaseException, image: Any, task: str | None = None, limit: int | None = None) -> str:
    """One line for an image the model could not segment; out of memory gets a hint computed for that image
    (the largest size of its aspect ratio whose streamed results fit `limit` bytes)."""
    from ..processing.memory import MemoryBudgetError, fit_hint

    text = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, MemoryBudgetError):  # found before allocating: the message holds the hint already
        return f"out of memory budget: {text}"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
            marker in text.lower() for marker in ("out of memory", "can't allocate", "cannot allocate")):
        size = f"{image.width}x{image.height} " if hasattr(image, "width") else ""
        hint = "try `batch_size=1` or a smaller `max_memory` (smaller chunks of work)"
        if hasattr(image, "width") and task is not None and limit:
            fits = fit_hint(task, image.height, image.width, limit)
            if fits.startswith("downscale"):
                hint = f"{fits} or use `batch_size=1`"
            else:  # its streamed results fit what is free now: the chunks or the batch were too large
                hint = f"its streamed results fit the free memory, so {hint}"
        return f"out of memory on this {size}image: results are made at the image's full resolution; {hint}"
    return f"inference failed ({type(exc).__name__}: {text[:300]})"


def predict_folder(sources: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                   model: Any = None, *, task: str | None = None, devices: int = 1, num_nodes: int = 1,
                   device: str | None = None, dtype: str | None = None, batch_size: int = 1, num_workers: int = 2,
                   threshold: float = 0.8, skip_existing: bool = False, overwrite: bool = False,
                   progress: bool = True, tile: int | None = None, tile_overlap: float | None = None,
                   max_memory: int | str | None = None, **segmenter_options: Any) -> PredictSummary:
    """Segment every image of `sources` (files, folders, glob patterns) into `out`; returns the summary.

    `model` is a hub id, a local checkpoint or a ready `Segmenter` (one process only); the default is
    the published COCO panoptic ViT-L. `devices` / `num_nodes` > 1 run one process per device through
    Lightning Fabric (from a script or torchrun / SLURM, not from a notebook). `skip_existing` continues
    an interrupted run; without it (or `overwrite`) existing result files are an error. Other keyword
    arguments go to `Segmenter.from_pretrained`. A bad image is counted as failed; the others complete.
    `tile` / `tile_overlap` segment each image at native resolution in overlapping windows (`batch_size`
    windows per forward pass; see `Segmenter.predict`). `max_memory` (bytes or "2GB") bounds one image's
    full-resolution post-processing; an image that cannot fit it even streamed fails alone, with a size
    that would fit.
    """
    from ..predictor import Segmenter
    from .processes import check_devices

    _validate(batch_size, num_workers, threshold, skip_existing, overwrite)
    tiling = _tiling(tile, tile_overlap)
    if max_memory is not None:
        from ..processing.memory import parse_size

        try:
            max_memory = parse_size(max_memory, "max_memory")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    check_devices(devices, num_nodes, device)
    if isinstance(model, Segmenter) and (devices > 1 or num_nodes > 1):
        raise ConfigError("a loaded Segmenter runs in this process only; pass a model name or path for `devices`")
    sources = [os.fspath(sources)] if isinstance(sources, (str, os.PathLike)) else [os.fspath(s) for s in sources]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`out` {out} is a file, not a folder")
    from ..outputs.lock import is_eomt_output, main_process_by_environment, output_lock

    ours = out.is_dir() and is_eomt_output(out)  # before our own lock marks it
    # one job per output folder; the processes a job starts (or that torchrun starts) write under its lock
    with output_lock(out, "eomt predict", enabled=main_process_by_environment()):
        return _predict(sources, out, ours, model, task, devices, num_nodes, device, dtype, batch_size, num_workers,
                        threshold, skip_existing, overwrite, progress, tiling, tile, tile_overlap, max_memory,
                        segmenter_options)


def _predict(sources: list[str], out: Path, ours: bool, model: Any, task: str | None, devices: int, num_nodes: int,
             device: str | None, dtype: str | None, batch_size: int, num_workers: int, threshold: float,
             skip_existing: bool, overwrite: bool, progress: bool, tiling: dict[str, Any], tile: int | None,
             tile_overlap: float | None, max_memory: int | None, segmenter_options: dict[str, Any]) -> PredictSummary:
    """`predict_folder` once its arguments are checked and the output folder is locked."""
    from ..predictor import DEFAULT_MODEL, Segmenter
    from .processes import start

    collected = collect(sources, exclude=out)
    plan = plan_outputs(collected.images)
    _check_existing(plan, out, skip_existing, overwrite, ours)
    source_failures = [{"image": source, "reason": reason} for source, reason in collected.problems]
    left_out = {"non_images": collected.non_images, "output_folders": collected.output_folders}
    if not plan:
        return PredictSummary.combine(task or "unknown", str(out), 0, [ProcessCounts(0)], source_failures,
                                      **left_out)

    processes = start(devices, num_nodes, device)
    segmenter = model if isinstance(model, Segmenter) else Segmenter.from_pretrained(
        model or DEFAULT_MODEL, device=processes.device, dtype=dtype, task=task, max_memory=max_memory,
        **segmenter_options)
    if isinstance(model, Segmenter) and max_memory is not None:
        import copy

        segmenter = copy.copy(model)
        segmenter.max_memory = max_memory
    task = task or segmenter.task
    if tiling:
        segmenter.check_tiling(task, tile, tile_overlap)  # the model's patch size, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    processes.barrier()  # every process has checked `out` before anyone writes to it

    mine = shard(plan, processes.rank, processes.world_size)
    _remove_stale_temporaries(mine, task, out)
    counts = ProcessCounts(processes.rank)
    todo = []
    for item in mine:
        if skip_existing and _is_complete(item, task, out):
            counts.skipped += 1
        else:
            todo.append(item)
    _run(segmenter, task, todo, out, batch_size, num_workers, threshold, counts,
         progress=progress and processes.is_main, position=f"{processes.rank}/{processes.world_size}", tiling=tiling)
    everyone = processes.gather(counts)
    summary = PredictSummary.combine(task, str(out), len(plan), everyone, source_failures, **left_out)
    summary.rank = processes.rank
    if processes.is_main:
        from ..outputs.atomic import write_json_atomic
        from ..outputs.result_files import CATEGORY_IDS, LABEL_IDS

        # the record `eomt eval --predictions` reads: the JSON files hold the model's label ids
        write_json_atomic(out / SUMMARY_FILE, {**summary.to_dict(), CATEGORY_IDS: LABEL_IDS}, indent=2)
    processes.barrier()
    return summary


def _tiling(tile: int | None, tile_overlap: float | None) -> dict[str, Any]:
    """The tiling keywords of `Segmenter.predict` (empty without `tile`), their values checked."""
    if tile is None and tile_overlap is None:
        return {}
    if tile is None:
        raise ConfigError("`tile_overlap` needs `tile`")
    from ..processing.tiling import DEFAULT_OVERLAP, check_tiling

    check_tiling(tile, DEFAULT_OVERLAP if tile_overlap is None else tile_overlap)
    return {"tile": tile, "tile_overlap": tile_overlap}


def _run(segmenter, task: str, items: list[PlannedImage], out: Path, batch_size: int, num_workers: int,
         threshold: float, counts: ProcessCounts, progress: bool, position: str,
         tiling: dict[str, Any] | None = None) -> None:
    """Decode (workers), segment (batches) and write this process's images, counting as it goes.

    With `tiling`, each image is segmented alone in windows of `batch_size` per forward pass."""
    tiling = tiling or {}
    from ..outputs.progress import progress_bar
    from ..outputs.result_files import write_result

    loader = torch.utils.data.DataLoader(_ImageFiles(items), batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_as_list, shuffle=False)
    bar = progress_bar(len(items), f"eomt predict ({task}, process {position})", "img", enabled=progress)
    # With a GPU or onnxruntime (whose threads sleep between runs) PNG / JPEG encoding and the overlay run
    # in a thread beside the next forward (int8 onnxruntime, 16 photos: 9% faster); with torch on CPU they
    # would compete with torch's spinning threads (1% slower), so they run inline there.
    background = segmenter.device.type != "cpu" or not isinstance(segmenter.model, torch.nn.Module)
    writer = ThreadPoolExecutor(max_workers=1) if background else _Inline()
    writing: tuple[PlannedImage, Future] | None = None
    started = time.perf_counter()
    for batch in loader:
        good = []
        for item, image, error in batch:
            if error is None:
                good.append((item, image))
            else:
                counts.fail(item.path, error)
        try:
            results = segmenter.predict([image for _, image in good], task=task,
                                        batch_size=batch_size if tiling else max(1, len(good)),
                                        threshold=threshold, **tiling) if good else []
        except Exception:  # a batch-level failure (e.g. out of memory): each image alone, so only the culprit fails
            results = []
            for item, image in good:
                try:
                    results.append(segmenter.predict([image], task=task, threshold=threshold, **tiling)[0])
                except Exception as exc:
                    counts.fail(item.path, inference_failure(exc, image, task, _limit(segmenter)))
                    results.append(None)
        for (item, image), result in zip(good, results, strict=False):
            if result is not None:
                _finish(writing, counts)  # at most one image's files in flight
                writing = (item, writer.submit(write_result, result, image, item.name, out, item.path))
        bar.update(len(batch))
    _finish(writing, counts)
    writer.shutdown()
    counts.seconds = time.perf_counter() - started
    bar.close()


def _limit(segmenter) -> int | None:
    """The bytes one image's post-processing may use now (None when it cannot be told)."""
    try:
        return segmenter.budget.limit()
    except Exception:  # noqa: BLE001 - a hint is a courtesy: never let it hide the image's own failure
        return None


class _Inline:
    """The executor interface, running each call at once (writing without a background thread)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


def _finish(writing: tuple[PlannedImage, Future] | None, counts: ProcessCounts) -> None:
    """Wait for one image's files (written in the background while the next image is segmented)."""
    if writing is None:
        return
    item, future = writing
    try:
        counts.files_written += len(future.result())
        counts.done += 1
    except (OSError, ValueError) as exc:  # ValueError: e.g. a name or value the encoders cannot take
        counts.fail(item.path, f"cannot write results ({exc})")
    except (MemoryError, RuntimeError) as exc:  # the files of a huge result (tens of thousands of instances)
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        counts.fail(item.path, "out of memory writing its result files (nothing of it was written); "
                               f"try a larger `tile` or fewer instances (a higher `threshold`) ({type(exc).__name__})")
