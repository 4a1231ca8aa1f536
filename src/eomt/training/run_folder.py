"""Checks on a training run folder before training starts: never mix two runs, never resume from nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..outputs.folders import check_writable_dir
from .errors import TrainingError

# What `eomt train` writes into its run folder.
RUN_FILES = ("last.ckpt", "best.ckpt", "final", "logs", "tensorboard", "recipe.json")


def prepare_run_folder(out: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """With `resume`, OUT/last.ckpt must exist; without, OUT must hold no earlier run unless `overwrite`,
    which removes that run's files (so that no old best.ckpt or final/ outlives it)."""
    out = check_writable_dir(out, "train.out")
    if resume and overwrite:
        raise TrainingError("`resume` and `overwrite` exclude each other")
    last = out / "last.ckpt"
    if resume:
        if not last.is_file():
            raise TrainingError(f"{last}: no checkpoint to resume from (drop `resume` to start afresh)")
        check_resumable(last)
        return out
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        raise TrainingError(f"{out}: already holds a run ({', '.join(found)}); pass `resume=True` to continue "
                            "it, `overwrite=True` to start afresh, or choose another train.out")
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return out


RESUME_KEYS = ("model", "optimizer", "step", "epoch", "batch", "rng")


def check_resumable(path: Path) -> None:
    """A truncated, corrupt or foreign `last.ckpt` is a one-line error naming it, before any model is built.
    Memory-mapped: the tensors are not read."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated zips, garbage and refused pickles fail in many ways
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"{path}: truncated, corrupt or not an eomt training checkpoint ({reason})") from None
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise TrainingError(f"{path}: not an eomt training checkpoint (no {', '.join(missing)}); "
                            "`resume` needs the last.ckpt an earlier training run wrote")


def check_same_network(path: Path, model) -> None:
    """Resuming builds the network from the recipe: refuse, naming the config fields that differ (checkpoint vs
    recipe), a `last.ckpt` whose tensors do not fit it, before torch's size-mismatch report. Memory-mapped."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    saved = state.get("model") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise TrainingError(f"{path}: not an eomt training checkpoint (no model weights)")
    ours = model.state_dict()
    wrong = sorted({k for k in ours if k not in saved or tuple(saved[k].shape) != tuple(ours[k].shape)}
                   | {k for k in saved if k not in ours})
    if not wrong:
        return
    recorded = state.get("config") if isinstance(state.get("config"), dict) else {}
    current = model.config.to_dict()
    fields = [f"{key} {recorded[key]!r} (checkpoint) vs {current[key]!r} (recipe)" for key in sorted(current)
              if key in recorded and recorded[key] != current[key] and key not in ("id2label", "label2id")]
    if len(recorded.get("id2label", {})) != len(current.get("id2label", {})):
        fields.append(f"{len(recorded.get('id2label', {}))} classes (checkpoint) vs "
                      f"{len(current['id2label'])} (recipe and data)")
    if not fields:
        key = wrong[0]
        theirs = tuple(saved[key].shape) if key in saved else "absent"
        mine = tuple(ours[key].shape) if key in ours else "absent"
        fields = [f"tensor {key} {theirs} (checkpoint) vs {mine} (recipe)"]
    raise TrainingError(f"{path}: holds another network than the recipe builds: {'; '.join(fields[:6])}"
                        + (f" and {len(fields) - 6} more" if len(fields) > 6 else "")
                        + "; resume with the recipe it was trained with, or start afresh (`overwrite=True`)")
