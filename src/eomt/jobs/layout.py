"""Which images a job reads and where each one's result files go.

Layout rule: the result files of an image mirror its folder relative to the deepest folder holding
every source (a folder source counts as itself, a file as its parent, a glob pattern as its part
before the first wildcard). `eomt predict photos/` writes `photos/a/x.jpg` to `OUT/a/x.png`;
`eomt predict a/IMG_1.jpg b/IMG_1.jpg` writes `OUT/a/IMG_1.png` and `OUT/b/IMG_1.png`. Images of one
folder whose stems match (`x.jpg`, `x.png`) keep their extension in the name (`x_jpg`, `x_png`), so
every input image gets its own files. The plan is sorted by output name, which makes it the same
list in every process.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
RESERVED_NAMES = {"summary"}  # OUT/summary.json is the job's own summary


@dataclass(frozen=True)
class PlannedImage:
    """An input image and its output name: a relative path without extension (`a/IMG_1`)."""

    path: Path
    name: str


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def collect_images(sources: list[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Files, folders (searched recursively) and glob patterns -> (image, root of its source) pairs,
    and (source, reason) for sources that yield nothing. The same file named twice is kept once."""
    found: list[tuple[Path, Path]] = []
    problems: list[tuple[str, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                problems.append((source, "folder holds no image files"))
            found.extend((f, path) for f in files)
        elif path.exists():
            found.append((path, path.parent))
        elif glob.has_magic(source):
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
            if not matches:
                problems.append((source, "pattern matches no file"))
            found.extend((m, _glob_root(source)) for m in matches)
        else:
            problems.append((source, "no such file or directory"))
    seen: set[Path] = set()
    unique = []
    for path, root in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, root))
    return unique, problems


def plan_outputs(images: list[tuple[Path, Path]]) -> list[PlannedImage]:
    """Give every image its own output name (see the module docstring); sorted by that name."""
    from ..outputs.result_files import fit_name  # a name too long for the file system is shortened

    if not images:
        return []
    common = os.path.commonpath([os.path.abspath(root) for _, root in images])
    base: dict[Path, str] = {}
    for path, _ in images:
        folder = os.path.relpath(os.path.abspath(path.parent), common)
        base[path] = path.stem if folder == "." else Path(folder, path.stem).as_posix()
    # case-insensitive: x.JPG and x.jpg would share files on macOS and Windows file systems
    groups: dict[str, list[Path]] = {}
    for path, name in base.items():
        groups.setdefault(name.casefold(), []).append(path)
    names: dict[Path, str] = {}
    for key, paths in groups.items():
        clash = len(paths) > 1 or key in RESERVED_NAMES
        for path in paths:
            names[path] = f"{base[path]}_{path.suffix.lstrip('.').lower()}" if clash else base[path]
    taken: set[str] = set()
    planned = []
    for path in sorted(names, key=lambda p: (names[p], str(p))):
        name, n = fit_name(names[path]), 1
        while name.casefold() in taken or name.casefold() in RESERVED_NAMES:  # x.jpg + x.JPG, or x_jpg.png
            n += 1
            name = fit_name(f"{names[path]}_{n}")
        taken.add(name.casefold())
        planned.append(PlannedImage(path, name))
    return sorted(planned, key=lambda p: p.name)


def shard(items: list, rank: int, world_size: int) -> list:
    """The items process `rank` of `world_size` handles: every world_size-th, from position `rank`."""
    return items[rank::world_size]
