"""Turn a `source` (local directory, local file or hub id) into local files.

Hub ids go through huggingface_hub, so its cache, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE apply.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import CheckpointError, CheckpointNotFoundError, HubUnavailableError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class HubOptions:
    """Where to look for a model's files: the `from_pretrained` arguments of transformers of that name.

    `subfolder` applies to local directories too; the others only to hub ids (huggingface_hub's meaning).
    """

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    subfolder: str = ""
    force_download: bool = False

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> HubOptions:
        """Take this class's arguments out of `kwargs` (the rest stay)."""
        return cls(**{f.name: kwargs.pop(f.name) for f in fields(cls) if f.name in kwargs})


def looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.endswith((".bin", ".ckpt", ".pt", ".pth", ".safetensors"))


def _hub_download(repo_id: str, filename: str, required: bool, options: HubOptions) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .network import hub_offline, hub_reachable

    where = f"{repo_id!r}" + (f" (revision {options.revision!r})" if options.revision else "")
    shown = f"{options.subfolder}/{filename}" if options.subfolder else filename
    offline = hub_offline()
    # one quick probe instead of ~30 s of download retries when there is no network
    no_network = (not offline and not options.local_files_only and not options.force_download
                  and not hub_reachable())
    try:
        return Path(hf_hub_download(
            repo_id, filename, subfolder=options.subfolder or None, revision=options.revision,
            cache_dir=options.cache_dir, local_files_only=options.local_files_only or no_network,
            token=options.token, force_download=options.force_download))
    except LocalEntryNotFoundError:  # must come first: it is also an EntryNotFoundError
        if not required:
            return None
        raise HubUnavailableError(f"cannot get {shown!r} of {where}: {_why_not_local(offline, options)}") from None
    except EntryNotFoundError:
        if required:
            raise CheckpointNotFoundError(f"hub repo {where} has no file {shown!r}") from None
        return None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"hub repo {repo_id!r} has no revision {options.revision!r}") from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(f"hub repo {repo_id!r} does not exist or is private") from None
    except OSError as exc:  # network errors surface as subclasses of OSError
        raise CheckpointNotFoundError(
            f"cannot download {shown!r} of {where} ({type(exc).__name__}); "
            "pass a local directory or checkpoint file instead") from None


def _why_not_local(offline: bool, options: HubOptions) -> str:
    """Why a hub file could only come from the local cache, and where that cache is: what is true now."""
    from huggingface_hub import constants

    from .network import hub_endpoint

    cache = os.fspath(options.cache_dir or constants.HF_HUB_CACHE)
    if offline:
        cause = f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')} forbids downloads"
    elif options.local_files_only:
        cause = "local_files_only=True forbids downloads"
    else:
        host, port = hub_endpoint()
        cause = f"the hub ({host}:{port}) cannot be reached"
    return f"{cause} and it is not in the local cache ({cache})"


def resolve_file(source: str | os.PathLike, filename: str, required: bool = True,
                 options: HubOptions | None = None) -> Path | None:
    """One file of a local directory or hub repo (in `options.subfolder` when given)."""
    options = options or HubOptions()
    path = Path(source)
    if path.is_dir():
        folder = path / options.subfolder if options.subfolder else path
        candidate = folder / filename
        if candidate.is_file():
            return candidate
        if required:
            raise CheckpointNotFoundError(f"{folder}: no {filename} in this directory")
        return None
    if path.exists():
        raise CheckpointError(f"{path}: expected a directory holding {filename}")
    if looks_like_hub_id(str(source)):
        return _hub_download(str(source), filename, required, options)
    raise CheckpointNotFoundError(f"{source}: no such file or directory (and not a hub id like 'org/name')")


def resolve_weights(source: str | os.PathLike, options: HubOptions | None = None) -> list[Path]:
    """The weight files of a transformers-format directory or hub repo, shards in order."""
    options = options or HubOptions()
    single = resolve_file(source, "model.safetensors", required=False, options=options)
    if single is not None:
        return [single]
    index = resolve_file(source, "model.safetensors.index.json", required=False, options=options)
    if index is not None:
        import json

        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        shards = _shard_names(weight_map, index)
        if Path(source).is_dir():
            return [resolve_file(source, name, options=options) for name in shards]
        return [index.parent / name if (index.parent / name).exists() and not options.force_download
                else resolve_file(source, name, options=options) for name in shards]
    legacy = resolve_file(source, "pytorch_model.bin", required=False, options=options)
    if legacy is not None:
        return [legacy]
    raise CheckpointNotFoundError(
        f"{source}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


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
