"""Which images a job reads and where each one's result files go.

Layout rule: the result files of an image mirror its folder relative to the deepest folder holding
every source (a folder source counts as itself, a file as its parent, a glob pattern as its part
before the first wildcard). `eomt predict photos/` writes `photos/a/x.jpg` to `OUT/a/x.png`;
`eomt predict a/IMG_1.jpg b/IMG_1.jpg` writes `OUT/a/IMG_1.png` and `OUT/b/IMG_1.png`. Images of one
folder whose stems match (`x.jpg`, `x.png`) keep their extension in the name (`x_jpg`, `x_png`), so
every input image gets its own files. The plan is sorted by output name, which makes it the same
list in every process.

Folders are searched recursively, through symbolic links (each real folder once); folders that eomt
wrote (`eomt.outputs.lock.is_eomt_output`) and the job's own output folder are not searched, so results
of an earlier run inside an input folder are never taken as inputs. Files without an image extension
are counted (`Collected.non_images`), not read.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
RESERVED_NAMES = {"summary", "metrics"}  # OUT/summary.json is the job's own summary, metrics.json eval's


@dataclass(frozen=True)
class PlannedImage:
    """An input image and its output name: a relative path without extension (`a/IMG_1`)."""

    path: Path
    name: str


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


@dataclass
class Collected:
    """What the sources hold: (image, root of its source) pairs, (source, reason) for sources that yield
    nothing, how many files of the folders searched are not images, and the eomt output folders left out."""

    images: list[tuple[Path, Path]]
    problems: list[tuple[str, str]]
    non_images: int = 0
    output_folders: list[str] = field(default_factory=list)


def _walk(root: Path, exclude: Path | None, collected: Collected) -> list[Path]:
    """The image files under `root`, following symbolic links to folders (each real folder once), leaving out
    eomt's output folders below `root` and `exclude`; non-image files (not hidden ones) are counted."""
    from ..outputs.lock import is_eomt_output

    files: list[Path] = []
    seen: set[str] = set()
    def unreadable(error: OSError) -> None:
        collected.problems.append((str(error.filename), f"cannot read folder ({error.strerror or error})"))

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unreadable):
        real = os.path.realpath(folder)
        here = Path(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            subfolders.clear()
            continue
        seen.add(real)
        keep = []
        for name in sorted(subfolders):
            sub = here / name
            if exclude is not None and os.path.realpath(sub) == os.path.realpath(exclude):
                continue
            if is_eomt_output(sub):
                collected.output_folders.append(str(sub))
                continue
            keep.append(name)
        subfolders[:] = keep
        for name in names:
            path = here / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                if path.is_file():
                    files.append(path)
                elif path.is_symlink() and not path.exists():
                    collected.problems.append((str(path), "broken symbolic link"))
            elif not name.startswith(".") and path.is_file():
                collected.non_images += 1
    return sorted(files)


def collect(sources: list[str], exclude: str | os.PathLike | None = None) -> Collected:
    """Files, folders (searched recursively, see the module docstring) and glob patterns -> images. The same
    file named twice is kept once; `exclude` (the job's output folder) is never searched."""
    collected = Collected([], [])
    found: list[tuple[Path, Path]] = []
    problems = collected.problems
    exclude = Path(exclude) if exclude is not None else None
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = _walk(path, exclude, collected)
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
    for path, root in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            collected.images.append((path, root))
    return collected


def collect_images(sources: list[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """`collect`'s images and problems: (image, root of its source) pairs, (source, reason) pairs."""
    collected = collect(sources)
    return collected.images, collected.problems


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
