"""`save_pretrained`: config.json + model.safetensors as transformers writes them."""

from __future__ import annotations

import os
from pathlib import Path

from .io import write_safetensors_atomic
from .transformers_format import to_transformers


def save_model(model, directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = to_transformers(model.state_dict(), model.config)
    write_safetensors_atomic(state_dict, directory / "model.safetensors", metadata={"format": "pt"})
    if model.config.dtype is not None:  # a recorded dtype says what the written weights are (as transformers)
        model.config.dtype = model.dtype
    model.config.save_pretrained(directory)
    return directory
