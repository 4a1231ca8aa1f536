"""`from_pretrained`: build a model from a hub id, a transformers directory or an authors' file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, EomtConfig, check_overrides
from . import authors_format
from .errors import CheckpointError
from .io import read_tensors, tensors_only
from .placement import parse_device_map, parse_dtype
from .resolve import HubOptions, resolve_file, resolve_weights
from .run_checkpoint import is_run_checkpoint, read_run_checkpoint
from .transformers_format import from_transformers
from .weight_checks import check_config_against_weights

# Buffers derived from the config or the training state, filled in when a file lacks them.
OPTIONAL_BUFFERS = ("criterion.empty_weight", "attn_mask_probs")


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_tensors(expected: dict[str, Tensor], state_dict: dict[str, Tensor], source: str,
                  optional: tuple[str, ...] = ()) -> None:
    """Any missing (unless `optional`), unexpected or mis-shaped tensor is a one-line error naming it."""
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [k for k in state_dict if k in expected and state_dict[k].shape != expected[k].shape]
    if missing:
        raise CheckpointError(f"{source}: missing tensor(s) {_names(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor(s) {_names(unexpected)}")
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"{source}: tensor {k!r} has shape {tuple(state_dict[k].shape)}, the model expects "
            f"{tuple(expected[k].shape)}"
            + (f" ({len(mismatched) - 1} more mismatched)" if len(mismatched) > 1 else ""))


def load_strict(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Copy tensors into the model after `check_tensors`.

    A file without `attn_mask_probs` is taken to be a finished (annealed) model: probabilities 0.
    """
    expected = model.state_dict()
    check_tensors(expected, state_dict, source, OPTIONAL_BUFFERS)
    state_dict = dict(state_dict)
    if "attn_mask_probs" not in state_dict:
        state_dict["attn_mask_probs"] = torch.zeros_like(expected["attn_mask_probs"])
    if "criterion.empty_weight" not in state_dict:
        state_dict["criterion.empty_weight"] = expected["criterion.empty_weight"]
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state_dict[key].to(target.dtype))


def _read_weights(files: list[Path]) -> dict[str, Tensor]:
    state_dict: dict[str, Tensor] = {}
    for file in files:
        state_dict.update(tensors_only(read_tensors(file), file))
    return state_dict


def load_checkpoint_file(path: Path, config_class: type[EomtConfig] = EomtConfig,
                         **overrides: Any) -> tuple[EomtConfig, dict[str, Tensor]]:
    """An authors' `.bin`/`.ckpt`/`.pt`, or a lone transformers weight file with config.json beside it.

    `config_class` other than EomtConfig (VideomtConfig) reads transformers-format files only."""
    if config_class is not EomtConfig:
        return _transformers_file(path, config_class, overrides)
    entries = read_tensors(path)
    if is_run_checkpoint(entries):  # last.ckpt / best.ckpt of `eomt train`
        config, state_dict = read_run_checkpoint(entries, path, **overrides)
        return config, state_dict
    state_dict = tensors_only(authors_format.unwrap(entries), path)
    if authors_format.is_authors_format(state_dict):
        config = authors_format.infer_config(state_dict, str(path), **overrides)
        return config, authors_format.convert_state_dict(state_dict, config)
    beside = path.parent / "config.json"
    if "class_predictor.weight" in state_dict and beside.is_file():
        config = EomtConfig.from_json_file(beside, **overrides)
        return config, from_transformers(state_dict, config)
    if "class_predictor.weight" in state_dict:
        raise CheckpointError(f"{path}: transformers-format weights need a config.json beside them")
    raise CheckpointError(f"{path}: not an EoMT checkpoint (no 'network.*' or 'class_predictor.*' tensors)")


def _transformers_file(path: Path, config_class: type[EomtConfig],
                       overrides: dict[str, Any]) -> tuple[EomtConfig, dict[str, Tensor]]:
    state_dict = tensors_only(read_tensors(path), path)
    beside = path.parent / "config.json"
    if "class_predictor.weight" not in state_dict:
        raise CheckpointError(f"{path}: not a transformers-format {config_class.__name__.removesuffix('Config')} "
                              "checkpoint (no 'class_predictor.*' tensors)")
    if not beside.is_file():
        raise CheckpointError(f"{path}: transformers-format weights need a config.json beside them")
    try:
        config = config_class.from_json_file(beside, **overrides)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return config, from_transformers(state_dict, config)


CLASS_HEAD = ("class_predictor.weight", "class_predictor.bias", "criterion.empty_weight")


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_")


@contextmanager
def _weights_left_uninitialised() -> Iterator[None]:
    """Build a model without its random initialisation: the file's tensors replace every parameter
    (`load_strict` checks that none is missing), and initialising a ViT-L takes seconds on CPU.
    Buffers are made by the constructors, not by `nn.init`, and keep their values."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _authors_file_only(source: str | os.PathLike, options: HubOptions) -> Path | None:
    """The `pytorch_model.bin` of a hub repo or folder that holds the authors' checkpoint and no config.json
    (as tue-mps/coco_panoptic_eomt_7b_640 may); None when there is a config.json (or neither)."""
    if resolve_file(source, "config.json", required=False, options=options) is not None:
        return None
    return resolve_file(source, "pytorch_model.bin", required=False, options=options)


def load_model(model_class: type, source: str | os.PathLike, reinit_class_head: bool = False, *, dtype: Any = None,
               torch_dtype: Any = None, device_map: Any = None, output_loading_info: bool = False,
               **kwargs: Any):
    """Build a `model_class` (the caller's class: this module never imports the network) for `source` and
    load its weights strictly; returned in eval mode.

    `kwargs`: the hub/location arguments of `HubOptions` (revision, cache_dir, local_files_only, token,
    subfolder, force_download) and EomtConfig field overrides; any other name is a TypeError, raised
    before anything is read. `dtype` / `torch_dtype` ("auto": the dtype the weights are stored in) and
    `device_map` (one device) place the loaded model. With `reinit_class_head`, the class head of the
    file is dropped and the model keeps a fresh one. With `output_loading_info`, returns
    `(model, info)` where info lists, as transformers does, the tensors not taken from the file
    (`missing_keys`: optional buffers the file lacks and a re-initialised class head) and the file's
    class-head tensors whose shapes differ (`mismatched_keys`: name, file shape, model shape).
    """
    options = HubOptions.pop_from(kwargs)
    check_overrides(kwargs, "from_pretrained()")
    config_class = getattr(model_class, "config_class", EomtConfig)
    target_dtype = parse_dtype(dtype, torch_dtype)
    device = parse_device_map(device_map)

    path = Path(source)
    authors_file = None if path.is_file() or config_class is not EomtConfig else _authors_file_only(source, options)
    if path.is_file() or authors_file is not None:
        config, state_dict = load_checkpoint_file(authors_file or path, config_class, **kwargs)
    else:
        config_file = resolve_file(source, "config.json", options=options)
        try:
            config = config_class.from_json_file(config_file, **kwargs)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        state_dict = from_transformers(_read_weights(resolve_weights(source, options)), config)
    check_config_against_weights(config, state_dict, str(source), class_head=not reinit_class_head)
    if target_dtype == "auto":
        target_dtype = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.float32)
    with _weights_left_uninitialised():
        model = model_class(config)
    if reinit_class_head:
        model.class_predictor.reset_parameters()
    expected = model.state_dict()
    missing = [k for k in OPTIONAL_BUFFERS if k not in state_dict]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    if reinit_class_head:
        mismatched = [(k, tuple(state_dict[k].shape), tuple(expected[k].shape)) for k in CLASS_HEAD
                      if k in state_dict and state_dict[k].shape != expected[k].shape]
        missing = sorted(set(missing) | set(CLASS_HEAD))
        state_dict = {**{k: v for k, v in state_dict.items() if k not in CLASS_HEAD},
                      **{k: expected[k] for k in CLASS_HEAD}}
    load_strict(model, state_dict, str(source))
    if target_dtype is not None or device is not None:
        model.to(device=device, dtype=target_dtype)
    if config.dtype is not None:  # a dtype the file recorded now says what the loaded weights are
        config.dtype = model.dtype
    model.eval()
    if output_loading_info:
        info = {"missing_keys": missing, "unexpected_keys": [], "mismatched_keys": mismatched, "error_msgs": []}
        return model, info
    return model
