"""Value checks of a recipe: every key named with what is wrong, before anything is built or allocated.

YAML turns `train.lr=` into null, `batch_size=2.5` into a float and `epochs=.inf` into infinity; each of
those must be a one-line error naming the key, not a TypeError in the middle of training.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from .errors import RecipeError

PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16-true", "bf16-mixed", "bf16-true", "16", "bf16",
              "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps", "tpu")
MAX_CROP = 16384


class _Bad(Exception):
    pass


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(key: str, value: Any, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        raise _Bad(f"{key} must be a whole number >= {low}, got {value!r}")


def _number(key: str, value: Any, low: float, inclusive: bool = True, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_number(value) or value < low or (not inclusive and value == low):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise _Bad(f"{key} must be a finite number {bound}, got {value!r}")


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _Bad(f"{key} must be true or false, got {value!r}")


def _text(key: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value:
        raise _Bad(f"{key} must be a non-empty string, got {value!r}")


def _train(t) -> None:
    _number("train.epochs", t.epochs, 0)
    _int_at_least("train.max_steps", t.max_steps, 1, optional=True)
    if t.epochs == 0 and t.max_steps is None:
        raise _Bad("train.epochs or train.max_steps must be positive")
    _int_at_least("train.batch_size", t.batch_size, 1)
    _int_at_least("train.accumulate", t.accumulate, 1)
    _number("train.lr", t.lr, 0, inclusive=False)
    _number("train.weight_decay", t.weight_decay, 0)
    _number("train.layer_decay", t.layer_decay, 0, inclusive=False)
    if t.layer_decay > 1:
        raise _Bad(f"train.layer_decay must be in (0, 1], got {t.layer_decay!r}")
    _int_at_least("train.warmup", t.warmup, 0)
    _int_at_least("train.backbone_warmup", t.backbone_warmup, 0)
    _number("train.poly_power", t.poly_power, 0)
    _number("train.grad_clip", t.grad_clip, 0, optional=True)
    _number("train.annealing_power", t.annealing_power, 0)
    for key in ("annealing_starts", "annealing_ends"):
        value = getattr(t, key)
        if value is not None and (not isinstance(value, list) or not all(_is_int(v) and v >= 0 for v in value)):
            raise _Bad(f"train.{key} must be a list of step numbers >= 0, got {value!r}")
    if t.annealing_starts is not None and t.annealing_ends is not None:
        if len(t.annealing_starts) != len(t.annealing_ends):
            raise _Bad("train.annealing_starts and train.annealing_ends must have the same length")
        if any(s > e for s, e in zip(t.annealing_starts, t.annealing_ends, strict=True)):
            raise _Bad("train.annealing_starts must not come after train.annealing_ends")
    for key in ("freeze_backbone", "activation_checkpointing", "compile", "wandb"):
        _bool(f"train.{key}", getattr(t, key))
    if str(t.precision) not in PRECISIONS:
        raise _Bad(f"train.precision {t.precision!r} is not one of {', '.join(PRECISIONS)}")
    if t.accelerator not in ACCELERATORS:
        raise _Bad(f"train.accelerator {t.accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    devices = t.devices
    if not ((_is_int(devices) and (devices >= 1 or devices == -1))
            or (isinstance(devices, str) and (devices == "auto" or devices.replace(",", "").strip().isdigit()))
            or (isinstance(devices, list) and devices and all(_is_int(d) and d >= 0 for d in devices))):
        raise _Bad(f"train.devices must be a count >= 1, -1, 'auto' or a list of device indices, got {devices!r}")
    _int_at_least("train.num_nodes", t.num_nodes, 1)
    _text("train.strategy", t.strategy)
    _int_at_least("train.seed", t.seed, 0)
    _int_at_least("train.log_every", t.log_every, 1)
    for key in ("eval_every", "eval_limit", "checkpoint_every"):
        _int_at_least(f"train.{key}", getattr(t, key), 1, optional=True)
    _text("train.out", t.out)


def _data(d) -> None:
    from ..data.registry import DATASET_KINDS

    if d.dataset not in DATASET_KINDS:
        raise _Bad(f"data.dataset {d.dataset!r} is not one of {', '.join(DATASET_KINDS)}")
    _text("data.path", d.path, optional=True)
    _text("data.train_split", d.train_split)
    _text("data.val_split", d.val_split)
    _int_at_least("data.crop_size", d.crop_size, 16)
    if d.crop_size > MAX_CROP:
        raise _Bad(f"data.crop_size {d.crop_size} is absurdly large (at most {MAX_CROP})")
    scale = d.scale_range
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(_is_number(v) for v in scale)
            and 0 < scale[0] <= scale[1]):
        raise _Bad(f"data.scale_range must be [min, max] with 0 < min <= max, got {scale!r}")
    _bool("data.photometric", d.photometric)
    _int_at_least("data.num_workers", d.num_workers, 0)


def _model(m) -> None:
    from ..config import EomtConfig
    from ..config_checks import check_field_types

    if not isinstance(m.config, dict):
        raise _Bad(f"model.config must be a mapping of EomtConfig fields, got {m.config!r}")
    known = {f.name for f in fields(EomtConfig)} - {"extra"}
    unknown = sorted(k for k in m.config if k not in known)
    if unknown:
        raise _Bad(f"model.config.{unknown[0]} is not a config field (known: {', '.join(sorted(known))})")
    problem = check_field_types(m.config)
    if problem is not None:
        raise _Bad(f"model.config.{problem}")
    _text("model.pretrained", m.pretrained, optional=True)
    _text("model.backbone", m.backbone, optional=True)


def _hardware(t) -> None:
    """An accelerator the machine lacks is refused here, with the key to change."""
    if t.accelerator in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise _Bad(f"train.accelerator={t.accelerator}: no CUDA GPU on this machine (use train.accelerator=cpu)")
    if t.accelerator == "mps":
        import torch

        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise _Bad("train.accelerator=mps: MPS is not available on this machine (use train.accelerator=cpu)")


def check_recipe_values(recipe, where: str) -> None:
    """Raise RecipeError naming the first key whose value is of the wrong type or out of range."""
    try:
        _model(recipe.model)
        _data(recipe.data)
        _train(recipe.train)
        _hardware(recipe.train)
    except _Bad as exc:
        raise RecipeError(f"{where}: {exc}") from None
