"""`evaluate`: run a model over a dataset and score it; `evaluate_predictions`: score files already written.

Both return a plain dict: {"task", "dataset", "split", "num_images", "class_names", "metrics"}.
Predictions are written (with `out`) in the files `eomt predict` writes, with dataset category ids in
the JSON files (the COCO convention), so `evaluate_predictions` reads them back to the same numbers.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import DatasetError, open_dataset
from .metrics import InstanceMetric, PanopticMetric, SemanticMetric


def make_metric(task: str, info):
    num_classes = len(info.class_names)
    if task == "semantic":
        return SemanticMetric(num_classes, ignore_index=info.ignore_index)
    if task == "panoptic":
        return PanopticMetric(num_classes, info.thing_classes)
    return InstanceMetric(list(info.class_names), category_ids=info.category_ids)


def update_metric(metric, task: str, index: int, sample, prediction: dict[str, Any]) -> None:
    """Add image `index`: `prediction` holds "segmentation" (+ "segments_info"), or instance fields
    ("masks": (M, H, W) bool or a list of RLEs, "labels", "scores")."""
    if task == "semantic":
        metric.update(prediction["segmentation"], sample.semantic_map(), image_id=index)
    elif task == "panoptic":
        gt_map, gt_segments = sample.panoptic_map()
        metric.update(prediction["segmentation"], prediction["segments_info"], gt_map, gt_segments, image_id=index)
    else:
        metric.update(index, sample.masks, sample.labels, sample.iscrowd, prediction["masks"],
                      prediction["labels"], prediction["scores"], image_size=(sample.height, sample.width))


def _check_size(sample, segmentation: torch.Tensor, where: str) -> None:
    expected = (sample.image.height, sample.image.width)
    if tuple(segmentation.shape[-2:]) != expected:
        raise DatasetError(f"{where}: prediction is {tuple(segmentation.shape[-2:])}, the image is {expected}")


def _result(task: str, dataset, split: str, count: int, metrics: dict) -> dict[str, Any]:
    return {"task": task, "dataset": dataset.info.name, "split": split, "num_images": count,
            "class_names": list(dataset.info.class_names), "metrics": metrics}


def evaluate(model, data: str | os.PathLike, dataset: str, task: str | None = None, split: str = "val",
             batch_size: int = 1, device: str | None = None, dtype: str | None = None,
             out: str | os.PathLike | None = None, limit: int | None = None, progress: bool = True,
             backend: str = "torch", compile: bool = False, devices: int = 1,
             num_nodes: int = 1, tile: int | None = None, tile_overlap: float | None = None,
             max_memory: int | str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Segment every image of a dataset with `model` (a source or a Segmenter) and compute the task's metric.

    Instance segmentation uses the authors' top-100 mode (no threshold), which AP needs. With `devices` /
    `num_nodes` > 1, one process per device (Lightning Fabric, as in training) takes every world_size-th
    image, no image twice, and the metric states are merged with the metrics' `sync()`; every process
    returns the same result. `tile` / `tile_overlap` segment each image at native resolution in overlapping
    windows (`batch_size` windows per forward pass; see `Segmenter.predict`). `max_memory` bounds one image's
    full-resolution post-processing (see `Segmenter.from_pretrained`). `out` (metrics.json and the
    prediction files) is locked while the job runs; an earlier evaluation there is replaced only with
    `overwrite`, and only when eomt wrote it (see `check_eval_out`).
    """
    settings = dict(task=task, split=split, batch_size=batch_size, device=device, dtype=dtype, limit=limit,
                    progress=progress, backend=backend, compile=compile, devices=devices, num_nodes=num_nodes,
                    tile=tile, tile_overlap=tile_overlap, max_memory=max_memory)
    if out is None:
        return _evaluate(model, data, dataset, out=None, **settings)
    from ..outputs.lock import is_eomt_output, main_process_by_environment, output_lock

    out = Path(out)
    ours = out.is_dir() and is_eomt_output(out)  # before our own lock marks it
    with output_lock(out, "eomt eval", enabled=main_process_by_environment()):
        return _evaluate(model, data, dataset, out=out, existing=(ours, overwrite), **settings)


def check_eval_out(out: Path, names: list[str], ours: bool, overwrite: bool) -> None:
    """An earlier evaluation in `out` (metrics.json, or result files of these image `names`) is an error unless
    `overwrite`; files eomt did not write (`ours` False: no record or lock in `out`) are never replaced."""
    if not out.is_dir():
        return
    candidates = ["metrics.json"] + [f"{name}{suffix}" for name in names for suffix in (".png", ".json",
                                                                                        "_overlay.jpg")]
    for name in candidates:
        path = out / name
        if not path.exists():
            continue
        if not ours:
            raise DatasetError(f"{path} already exists and eomt did not write it (no metrics.json or summary.json "
                               f"of eomt in {out}): eomt never replaces it; move it or choose another `out`")
        if not overwrite:
            raise DatasetError(f"{out} already holds an evaluation ({name}); pass `overwrite=True` to replace it, or "
                               "choose another `out`")


def _evaluate(model, data: str | os.PathLike, dataset: str, task: str | None, split: str, batch_size: int,
              device: str | None, dtype: str | None, out: Path | None, limit: int | None, progress: bool,
              backend: str, compile: bool, devices: int, num_nodes: int, tile: int | None,
              tile_overlap: float | None, max_memory: int | str | None = None,
              existing: tuple[bool, bool] = (False, False)) -> dict[str, Any]:
    """`evaluate`, with `out` locked; `existing` = (eomt wrote `out`, overwrite)."""
    from ..jobs.layout import shard
    from ..jobs.processes import check_devices, start
    from ..outputs.atomic import write_json_atomic
    from ..outputs.progress import progress_bar
    from ..outputs.result_files import write_result
    from ..predictor import Segmenter

    check_devices(devices, num_nodes, device)
    if isinstance(model, Segmenter) and (devices > 1 or num_nodes > 1):
        raise ValueError("a loaded Segmenter runs in this process only; pass a model name or path for devices > 1")
    tiling = {} if tile is None and tile_overlap is None else {"tile": tile, "tile_overlap": tile_overlap}
    if tiling:
        from ..processing.tiling import DEFAULT_OVERLAP, check_tiling

        if tile is None:
            raise ValueError("tile_overlap applies to tiled inference only: give tile=SIZE too")
        check_tiling(tile, DEFAULT_OVERLAP if tile_overlap is None else tile_overlap)
    ds = open_dataset(dataset, data, split)
    _refuse_empty(ds, data, split)
    task = task or ds.info.task
    count = len(ds) if limit is None else min(limit, len(ds))
    if out is not None:  # every process checks before any joins the job (`start`), so before any writes
        check_eval_out(Path(out), [Path(ds.file_name(i)).stem for i in range(count)], *existing)
    processes = start(devices, num_nodes, device)
    segmenter = model if isinstance(model, Segmenter) else Segmenter.from_pretrained(
        model, device=processes.device, dtype=dtype, task=task, backend=backend, compile=compile,
        max_memory=max_memory)
    if isinstance(model, Segmenter) and max_memory is not None:
        from ..processing.memory import parse_size

        segmenter = copy.copy(segmenter)
        segmenter.max_memory = parse_size(max_memory, "max_memory")
    check_classes(segmenter, ds.info, str(model) if not isinstance(model, Segmenter) else "the model")
    if tiling:
        segmenter.check_tiling(task, tile, tile_overlap)  # the model's patch size, before anything is written
    if task == "panoptic":  # stuff merging follows the dataset's things and stuff, whatever the model recorded
        segmenter = copy.copy(segmenter)
        segmenter.stuff_classes = sorted(ds.info.stuff_classes)
    metric = make_metric(task, ds.info)
    mine = shard(list(range(count)), processes.rank, processes.world_size)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    post = {"mode": "topk"} if task == "instance" else {}
    category = dict(enumerate(ds.info.category_ids)) if ds.info.category_ids else None
    with progress_bar(len(mine), f"eomt eval ({task})", "img", enabled=progress and processes.is_main) as bar:
        for start_at in range(0, len(mine), batch_size):
            indices = mine[start_at:start_at + batch_size]
            samples = [ds[i] for i in indices]
            results = segmenter.predict([s.image for s in samples], task=task,
                                        batch_size=batch_size if tiling else len(samples), **tiling, **post)
            for index, sample, result in zip(indices, samples, results, strict=True):
                update_metric(metric, task, index, sample, _from_prediction(result))
                if out_dir is not None:
                    write_result(result, sample.image, Path(sample.file_name).stem, out_dir,
                                 Path(sample.file_name), label_to_category=category)
            bar.update(len(samples))
    if processes.world_size > 1:  # a single process keeps its counts local, even inside someone else's group
        metric.sync()
    result = _result(task, ds, split, count, metric.compute())
    if out_dir is not None and processes.is_main:
        from ..outputs.result_files import CATEGORY_IDS, id_kind

        # the record `evaluate_predictions` reads back: which ids the JSON files beside it hold
        write_json_atomic(out_dir / "metrics.json", strict_json({**result, CATEGORY_IDS: id_kind(category)}))
    processes.barrier()
    return result


def check_classes(segmenter, info, source: str) -> None:
    """A model must predict the dataset's classes: with another class count its ids mean other things."""
    num_labels = segmenter.model.config.num_labels
    if num_labels != len(info.class_names):
        raise DatasetError(f"{source}: the model predicts {num_labels} classes, the {info.name} dataset has "
                           f"{len(info.class_names)}; evaluate a model trained (or fine-tuned) on these classes")


def strict_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, so that it is strict JSON (null, not NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (np.floating, torch.Tensor)) and np.size(value) == 1:
        return strict_json(float(value))
    return value


def _from_prediction(result) -> dict[str, Any]:
    if result.task == "semantic":
        return {"segmentation": result.segmentation}
    if result.task == "panoptic":
        return {"segmentation": result.segmentation,
                "segments_info": [{"id": s.id, "label_id": s.label_id} for s in result.segments]}
    from ..outputs.coco_formats import encode_rles

    # RLEs from the crops: the strings the metric would encode from the dense stack, without making it
    return {"masks": encode_rles(result.instance_masks),
            "labels": torch.tensor([s.label_id for s in result.segments], dtype=torch.long),
            "scores": torch.tensor([s.score for s in result.segments], dtype=torch.float32)}


# ---- scoring prediction files ----------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise DatasetError(f"{path}: cannot read prediction file ({exc})") from None


class LabelIdsSuspected(DatasetError):
    """Prediction files with no record of their ids hold ids that are label ids, not dataset category ids."""


class _Ids:
    """category_id -> contiguous class id, for files holding `kind` ids (`LABEL_IDS` or `DATASET_IDS`);
    `source` says who said so: a record file, `label_ids=True`, or None (the default, dataset ids)."""

    def __init__(self, info, kind: str, source: str | None) -> None:
        self.info, self.kind, self.source = info, kind, source

    def __call__(self, value: int) -> int:
        from ..outputs.result_files import LABEL_IDS

        value, k = int(value), self.info.num_classes
        if self.kind == LABEL_IDS:
            if 0 <= value < k:
                return value
            why = ("; without label_ids=True the files are read as dataset category ids"
                   if self.source == "label_ids=True" else f"; {self.source} records label ids")
            raise DatasetError(f"label id {value} is not one of the {self.info.name} dataset's {k} classes "
                               f"(0..{k - 1}){why}")
        try:
            return self.info.to_contiguous(value)
        except DatasetError:
            if self.source is None and 0 <= value < k:
                raise LabelIdsSuspected(
                    f"category id {value} is not one of the {self.info.name} dataset's category ids, but is one "
                    f"of the model's label ids 0..{k - 1}, and no summary.json or metrics.json of eomt says which "
                    "ids these files hold; if they hold label ids (as `eomt predict` writes), score them with "
                    "label_ids=True") from None
            raise

    def for_file(self, record: Any, where: Path) -> _Ids:
        """The converter for a JSON file that may record its own ids (`CATEGORY_IDS`, panoptic files)."""
        from ..outputs.result_files import DATASET_IDS, LABEL_IDS

        if record not in (LABEL_IDS, DATASET_IDS) or record == self.kind:
            return self
        if self.source == "label_ids=True":
            raise DatasetError(f"{where}: records dataset category ids, not label ids; drop label_ids=True")
        return _Ids(self.info, record, str(where))


def _id_record(directory: Path) -> tuple[str, Path] | None:
    """The ids the folder's own record says its JSON files hold: `eomt predict`'s summary.json or
    `eomt eval --out`'s metrics.json (`CATEGORY_IDS`); None for a folder eomt did not write."""
    from ..outputs.result_files import CATEGORY_IDS, DATASET_IDS, LABEL_IDS

    records = []
    for name in ("summary.json", "metrics.json"):
        path = directory / name
        if not path.is_file():
            continue
        data = _read_json(path)
        kind = data.get(CATEGORY_IDS) if isinstance(data, dict) else None
        if kind in (LABEL_IDS, DATASET_IDS):
            records.append((kind, path))
    if len({kind for kind, _ in records}) > 1:
        (a, pa), (b, pb) = records
        raise DatasetError(f"{directory}: {pa.name} records {a.replace('_', ' ')}, {pb.name} {b.replace('_', ' ')}; "
                           "the folder mixes the output of two runs")
    return records[0] if records else None


def _read_prediction(task: str, directory: Path, stem: str, to_contiguous: _Ids) -> dict[str, Any]:
    from ..outputs.coco_formats import rgb_to_panoptic
    from ..outputs.result_files import CATEGORY_IDS

    png, js = directory / f"{stem}.png", directory / f"{stem}.json"
    if task == "semantic":
        return {"segmentation": torch.from_numpy(_read_png(png).astype(np.int64))}
    if task == "panoptic":
        info = _read_json(js)
        segments = info.get("segments_info") if isinstance(info, dict) else None
        if not isinstance(segments, list):
            raise DatasetError(f"{js}: no 'segments_info' list")
        if png.is_dir() or not png.exists():
            raise DatasetError(f"{png}: not a PNG file")
        try:
            ids = torch.from_numpy(rgb_to_panoptic(Image.open(png), raw=True).astype(np.int64))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(f"{png}: not a readable panoptic PNG ({exc})") from None
        convert = to_contiguous.for_file(info.get(CATEGORY_IDS), js)
        try:
            segments = [{"id": int(s["id"]), "label_id": convert(int(s["category_id"]))} for s in segments]
        except LabelIdsSuspected as exc:
            raise LabelIdsSuspected(f"{js}: {exc}") from None
        except KeyError as exc:
            raise DatasetError(f"{js}: a segment lacks field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{js}: a segment has an invalid id or category_id ({exc})") from None
        return {"segmentation": ids, "segments_info": segments}
    entries = _read_json(js)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DatasetError(f"{js}: expected a list of COCO results (objects)")
    try:
        masks = [e["segmentation"] for e in entries]
        for mask in masks:
            if not (isinstance(mask, dict) and isinstance(mask.get("size"), list) and "counts" in mask):
                raise DatasetError(f"{js}: a result's segmentation is not an RLE ({{'size': [h, w], 'counts': ...}})")
        return {"masks": masks,
                "labels": torch.tensor([to_contiguous(int(e["category_id"])) for e in entries], dtype=torch.long),
                "scores": torch.tensor([float(e["score"]) for e in entries], dtype=torch.float32)}
    except LabelIdsSuspected as exc:
        raise LabelIdsSuspected(f"{js}: {exc}") from None
    except KeyError as exc:
        raise DatasetError(f"{js}: a result lacks field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{js}: a result has an invalid category_id or score ({exc})") from None


def _read_png(path: Path) -> np.ndarray:
    """A label-map PNG as an array; unreadable files and folders named like files name the path."""
    if path.is_dir() or not path.exists():
        raise DatasetError(f"{path}: not a PNG file")
    try:
        with Image.open(path) as image:
            return np.array(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: not a readable PNG ({exc})") from None


def _converter(info, directory: Path, label_ids: bool | None) -> _Ids:
    """The folder's ids: its record, checked against `label_ids` when that is given."""
    from ..outputs.result_files import DATASET_IDS, LABEL_IDS

    record = _id_record(directory)
    if record is None:
        return _Ids(info, LABEL_IDS, "label_ids=True") if label_ids else _Ids(info, DATASET_IDS, None)
    kind, path = record
    if label_ids and kind != LABEL_IDS:
        raise DatasetError(f"{path}: records that the files hold dataset category ids, not label ids; drop "
                           "label_ids=True")
    if label_ids is False and kind == LABEL_IDS:
        raise DatasetError(f"{path}: records that the files hold the model's label ids; drop label_ids=False")
    return _Ids(info, kind, str(path))


def _refuse_empty(ds, data: str | os.PathLike, split: str) -> None:
    """A metric over no image is NaN, not a score: say so instead of printing a table of n/a."""
    if len(ds) == 0:
        raise DatasetError(f"{data}: the {split} split of {ds.info.name} holds no images; nothing to evaluate")


def evaluate_predictions(predictions: str | os.PathLike, data: str | os.PathLike, dataset: str,
                         task: str | None = None, split: str = "val", label_ids: bool | None = None) -> dict[str, Any]:
    """Score prediction files (as `eomt predict` / `eomt eval --out` write them) against a dataset.

    Which ids the JSON files' `category_id` hold is read from the folder: `eomt predict` records the model's
    contiguous label ids 0..K-1 (in summary.json and each panoptic JSON), `eomt eval --out` dataset category
    ids (in metrics.json and each panoptic JSON). A folder with no such record holds dataset category ids (the
    COCO convention) unless `label_ids=True`; ids that only make sense as label ids are an error saying so,
    never a silent score of 0."""
    directory = Path(predictions)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: predictions directory does not exist")
    ds = open_dataset(dataset, data, split)
    _refuse_empty(ds, data, split)
    task = task or ds.info.task
    metric = make_metric(task, ds.info)
    to_contiguous = _converter(ds.info, directory, label_ids)
    stems = {Path(ds.file_name(i)).stem: i for i in range(len(ds))}
    suffix = ".json" if task == "instance" else ".png"
    own = ("metrics.json", "summary.json")  # eval's metrics and predict's job summary
    files = sorted(p for p in directory.glob(f"*{suffix}") if not p.name.startswith(".") and p.name not in own)
    strangers = [p for p in files if p.stem not in stems]
    if strangers:
        raise DatasetError(f"{strangers[0]}: prediction for an image that is not in the {ds.info.name} {split} set"
                           + (f" ({len(strangers) - 1} more)" if len(strangers) > 1 else ""))
    if not files:
        raise DatasetError(f"{directory}: no {suffix} prediction files for {ds.info.name} {split}")
    missing = sorted(set(stems) - {p.stem for p in files})
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(f"{directory}: predictions cover {len(files)} of the {len(stems)} images of "
                           f"{ds.info.name} {split}; {len(missing)} missing ({shown}); scoring a subset would "
                           "give a number that is not the dataset's")
    for path in files:
        index = stems[path.stem]
        sample = ds[index]
        prediction = _read_prediction(task, directory, path.stem, to_contiguous)
        if "segmentation" in prediction:
            _check_size(sample, prediction["segmentation"], str(path))
        update_metric(metric, task, index, sample, prediction)
    metric.sync()
    return _result(task, ds, split, len(files), metric.compute())
