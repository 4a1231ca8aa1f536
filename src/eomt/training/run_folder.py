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
