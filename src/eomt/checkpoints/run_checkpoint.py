"""The checkpoints `eomt train` writes (`last.ckpt`, `best.ckpt`) as models: config, weights and processor.

They hold the model's state dict in this package's naming under "model", with the model's config.json
dictionary under "config" and the inference processor's settings under "processor" (checkpoints of older
runs hold only the recipe, from which a from-scratch config is rebuilt).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from ..config import ConfigError, EomtConfig
from .errors import CheckpointError

# dataset kind -> task, for processors of checkpoints that did not record theirs
_TASK_OF_DATASET = {"coco_panoptic": "panoptic", "ade20k_panoptic": "panoptic", "coco_instance": "instance",
                    "ade20k_semantic": "semantic", "cityscapes_semantic": "semantic"}


def is_run_checkpoint(entries: dict[str, Any]) -> bool:
    return isinstance(entries.get("model"), dict) and ("config" in entries or "recipe" in entries
                                                       or "best" in entries)


def run_config(entries: dict[str, Any], path: str | os.PathLike, **overrides: Any) -> EomtConfig:
    state_dict = entries["model"]
    try:
        if isinstance(entries.get("config"), dict):
            return EomtConfig.from_dict(entries["config"], **overrides)
        recipe = entries.get("recipe")
        model = recipe.get("model", {}) if isinstance(recipe, dict) else {}
        if not model or model.get("pretrained"):
            raise CheckpointError(f"{path}: this training checkpoint records no model config (written before "
                                  "eomt recorded it); use the run's final/ folder")
        classes = state_dict.get("class_predictor.weight")
        if not isinstance(classes, Tensor):
            raise CheckpointError(f"{path}: training checkpoint without class_predictor.weight")
        values = {**(model.get("config") or {}), "num_labels": classes.shape[0] - 1, **overrides}
        values.pop("id2label", None)
        return EomtConfig(**values)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read_run_checkpoint(entries: dict[str, Any], path: str | os.PathLike,
                        **overrides: Any) -> tuple[EomtConfig, dict[str, Tensor]]:
    """Config and state dict of a training checkpoint (already read with weights_only)."""
    config = run_config(entries, path, **overrides)
    state_dict = {k: v for k, v in entries["model"].items() if isinstance(v, Tensor)}
    if not state_dict:
        raise CheckpointError(f"{path}: the training checkpoint holds no model tensors")
    return config, state_dict


def run_processor(path: str | os.PathLike) -> dict[str, Any] | None:
    """The processor settings a training checkpoint recorded (or rebuilt from its recipe); None for other files."""
    from .io import read_tensors

    path = Path(path)
    if path.suffix not in (".ckpt", ".pt", ".pth", ".bin"):
        return None
    entries = read_tensors(path)
    if not is_run_checkpoint(entries):
        return None
    if isinstance(entries.get("processor"), dict):
        return dict(entries["processor"])
    recipe = entries.get("recipe")
    data = recipe.get("data", {}) if isinstance(recipe, dict) else {}
    task = _TASK_OF_DATASET.get(data.get("dataset"))
    crop = data.get("crop_size")
    if task is None or not isinstance(crop, int):
        return None
    semantic = task == "semantic"
    return {"size": {"shortest_edge": crop} if semantic else {"shortest_edge": crop, "longest_edge": crop},
            "do_split_image": semantic, "do_pad": not semantic, "task": task}
