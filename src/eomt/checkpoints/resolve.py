"""Turn a `source` (local directory, local file or hub id) into local files.

Hub ids go through huggingface_hub, so its cache, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE apply.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import CheckpointError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.endswith((".bin", ".ckpt", ".pt", ".pth", ".safetensors"))


def _hub_download(repo_id: str, filename: str, required: bool = True) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename))
    except LocalEntryNotFoundError:  # must come first: it is also an EntryNotFoundError
        if not required:
            return None
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else (
            "the hub cannot be reached and it is not in the local cache")
        raise CheckpointError(
            f"cannot get {filename!r} of {repo_id!r}: {why}; pass a local directory or checkpoint file instead"
        ) from None
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"hub repo {repo_id!r} has no file {filename!r}") from None
        return None
    except RepositoryNotFoundError:
        raise CheckpointError(f"hub repo {repo_id!r} does not exist or is private") from None
    except OSError as exc:  # network errors surface as subclasses of OSError
        raise CheckpointError(
            f"cannot download {filename!r} of {repo_id!r} ({type(exc).__name__}); "
            "pass a local directory or checkpoint file instead") from None


def resolve_file(source: str | os.PathLike, filename: str, required: bool = True) -> Path | None:
    """One file of a local directory or hub repo."""
    path = Path(source)
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        if required:
            raise CheckpointError(f"{path}: no {filename} in this directory")
        return None
    if path.exists():
        raise CheckpointError(f"{path}: expected a directory holding {filename}")
    if looks_like_hub_id(str(source)):
        return _hub_download(str(source), filename, required)
    raise CheckpointError(f"{source}: no such file or directory (and not a hub id like 'org/name')")


def resolve_weights(source: str | os.PathLike) -> list[Path]:
    """The weight files of a transformers-format directory or hub repo, shards in order."""
    single = resolve_file(source, "model.safetensors", required=False)
    if single is not None:
        return [single]
    index = resolve_file(source, "model.safetensors.index.json", required=False)
    if index is not None:
        import json

        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        shards = _shard_names(weight_map, index)
        if Path(source).is_dir():
            return [resolve_file(source, name) for name in shards]
        return [index.parent / name if (index.parent / name).exists() else resolve_file(source, name)
                for name in shards]
    legacy = resolve_file(source, "pytorch_model.bin", required=False)
    if legacy is not None:
        return [legacy]
    raise CheckpointError(f"{source}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _shard_names(weight_map: object, index: Path) -> list[str]:
    """The shard file names of an index's `weight_map`: plain file names inside the model folder."""
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: weight_map must be a non-empty object of tensor name -> shard file")
    names = set()
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{index}: weight_map[{key!r}] must be a shard file name, got {name!r}")
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or len(parts) != 1 or not name.endswith(".safetensors"):
            raise CheckpointError(f"{index}: shard {name!r} is not a .safetensors file inside the model folder")
        names.add(name)
    return sorted(names)
