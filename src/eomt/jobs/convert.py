"""`eomt convert`: any supported checkpoint -> a transformers-format folder, written whole or not at all."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..outputs.folders import check_new_output, staged_directory

PROCESSOR_FILE = "preprocessor_config.json"


def check_overrides(overrides: dict[str, Any]) -> None:
    """Override keys (`--set KEY=VALUE` of `eomt convert`) must be EomtConfig fields (a typo is an error)."""
    from ..config import ConfigError, EomtConfig

    known = {f.name for f in fields(EomtConfig)} - {"extra"}
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ConfigError(f"`overrides` {unknown[0]}: not a config field (known: {', '.join(sorted(known))})")


def _processor_config(source: str | os.PathLike) -> dict[str, Any] | None:
    """The source's preprocessor_config.json (a folder or hub repo), or the one a training run recorded."""
    from ..checkpoints.errors import CheckpointError
    from ..checkpoints.resolve import resolve_file

    path = Path(source)
    if path.is_file():
        from ..checkpoints.run_checkpoint import run_processor

        recorded = run_processor(path)  # last.ckpt / best.ckpt of `eomt train`
        if recorded is not None:
            return recorded
        beside = path.parent / PROCESSOR_FILE
        candidate = beside if beside.is_file() else None
    else:
        candidate = resolve_file(source, PROCESSOR_FILE, required=False)
    if candidate is None:
        return None
    try:
        data = json.loads(Path(candidate).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{candidate}: cannot read processor config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{candidate}: processor config must be a JSON object")
    return data


def convert(source: str | os.PathLike, out: str | os.PathLike, overrides: dict[str, Any],
            overwrite: bool = False) -> list[str]:
    """Load `source`, write `out` (config.json, model.safetensors and the processor config when the source has
    one); refuse a non-empty `out` unless `overwrite`. Returns the names written."""
    from ..modeling.eomt import EomtForUniversalSegmentation
    from ..outputs.atomic import write_json_atomic

    check_overrides(overrides)
    out = check_new_output(out, overwrite, "files", option="`out`")
    if Path(source).resolve() == out.resolve():
        raise ValueError(f"{out}: the output folder is the source; choose another folder")
    processor = _processor_config(source)
    model = EomtForUniversalSegmentation.from_pretrained(source, **overrides)
    with staged_directory(out) as staging:
        model.save_pretrained(staging)
        if processor is not None:
            write_json_atomic(staging / PROCESSOR_FILE, processor, indent=2)
        written = sorted(p.name for p in staging.iterdir())
    return written
