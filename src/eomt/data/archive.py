"""Read a dataset root that is an extracted folder, the original zip archive(s), or both, without extracting.

`open_tree(path)` gives one read-only namespace of relative POSIX paths:

- a folder's own files are there under their paths relative to the folder;
- every ``*.zip`` in the folder or in one of its immediate subfolders is mounted where it lies: the
  members of ``annotations/x.zip`` appear under ``annotations/`` (as if it had been extracted in place);
- a path to a zip file mounts that zip at the root;
- a zip inside a mounted zip is mounted the same way (COCO's ``panoptic_annotations_trainval2017.zip``
  holds ``annotations/panoptic_val2017.zip``, whose ``panoptic_val2017/*.png`` thus appear under
  ``annotations/panoptic_val2017/``). An inner zip stored without compression is read in place; a
  compressed one is decompressed into memory once per process.

Where a path exists in several places, the extracted file wins, then the zips in name order. Zip files
are opened lazily and reopened when the process id changes, so a tree can be used from forked
DataLoader workers (and pickled, for spawned ones).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from eomt.data.errors import DatasetError, DatasetFileMissingError
from eomt.processing.image_io import jpeg_fill_start, to_rgb_pil

__all__ = ["Tree", "open_tree"]

_IGNORED_PREFIXES = ("__MACOSX/",)


def _norm(relpath: str) -> str:
    """A relative POSIX path without leading ./ or /, or trailing /."""
    rel = str(relpath).replace("\\", "/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {relpath!r} leaves the dataset root")
    return "/".join(parts)


class _SliceFile(io.RawIOBase):
    """A read-only, seekable window [offset, offset + size) of a file (an uncompressed zip member)."""

    def __init__(self, path: str, offset: int, size: int):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed with the slice
        self._offset, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        self._file.seek(self._offset + self._pos)
        data = self._file.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


class _Source:
    """Files mounted at `mount` ("" or "dir/") of the tree."""

    mount = ""

    def relative(self, relpath: str) -> str | None:
        """`relpath` relative to this source, or None when it lies outside the mount."""
        if not self.mount:
            return relpath
        return relpath[len(self.mount):] if relpath.startswith(self.mount) else None


class _DirSource(_Source):
    def __init__(self, root: Path):
        self.root = root

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def is_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def files(self, prefix: str) -> Iterable[str]:
        start = self.root / prefix if prefix else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start, followlinks=True):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            for name in filenames:
                yield rel_dir + name

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def location(self, rel: str) -> str:
        return str(self.root / rel) if rel else str(self.root)

    def top_dirs(self) -> list[str]:
        return sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())


class _ZipSource(_Source):
    """A zip file on disk (`path`) or a zip member of another zip source (`parent`, `member`)."""

    def __init__(self, tree: Tree, mount: str, display: str, path: str | None = None,
                 parent: _ZipSource | None = None, member: str | None = None):
        self.tree, self.mount, self.display = tree, mount, display
        self.path, self.parent, self.member = path, parent, member
        self.stem = PurePosixPath(display).stem
        self._members: dict[str, zipfile.ZipInfo] | None = None  # normalised name -> info
        self._dirs: set[str] = set()
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zip"] = None
        state["_pid"] = None
        return state

    def zip(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            try:
                if self.path is not None:
                    self._zip = zipfile.ZipFile(self.path)
                else:
                    self._zip = zipfile.ZipFile(self.parent.member_file(self.member))
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DatasetError(f"{self.display}: not a readable zip archive ({exc})") from None
            self._pid = os.getpid()
        return self._zip

    def member_file(self, rel: str) -> io.IOBase:
        """A seekable file object over one member (a nested zip)."""
        info = self.members()[rel]
        if self.path is not None and info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            with open(self.path, "rb") as f:  # the data starts after the member's local header
                f.seek(info.header_offset)
                header = f.read(30)
            if len(header) == 30 and header[:4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                return io.BufferedReader(_SliceFile(self.path, info.header_offset + 30 + name_len + extra_len,
                                                    info.file_size), buffer_size=1 << 16)
        return io.BytesIO(self.read(rel))

    def members(self) -> dict[str, zipfile.ZipInfo]:
        if self._members is None:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in self.zip().infolist():
                name = info.filename.replace("\\", "/")
                if info.is_dir() or name.startswith(_IGNORED_PREFIXES):
                    continue
                try:
                    name = _norm(name)
                except ValueError:
                    continue
                members[name] = info
                parts = name.split("/")
                for k in range(1, len(parts)):
                    self._dirs.add("/".join(parts[:k]))
            self._members = members
            for name in sorted(members):
                if name.lower().endswith(".zip"):
                    parent_dir = name.rpartition("/")[0]
                    self.tree._add_zip(_ZipSource(
                        self.tree, self.mount + (parent_dir + "/" if parent_dir else ""),
                        f"{self.display}/{name}", parent=self, member=name))
        return self._members

    def is_file(self, rel: str) -> bool:
        return rel in self.members()

    def is_dir(self, rel: str) -> bool:
        self.members()
        return rel == "" or rel in self._dirs

    def files(self, prefix: str) -> Iterable[str]:
        start = prefix + "/" if prefix else ""
        return [name for name in self.members() if name.startswith(start)]

    def read(self, rel: str) -> bytes:
        info = self.members()[rel]
        check_member_size(info, self.location(rel))
        try:
            return self.zip().read(info.filename)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
            raise DatasetError(f"{self.location(rel)}: cannot read from the zip archive ({exc})") from None

    def location(self, rel: str) -> str:
        return f"{self.display}/{rel}" if rel else self.display

    def top_dirs(self) -> list[str]:
        self.members()
        return sorted(d for d in self._dirs if "/" not in d)


# A zip member is read into memory only when its declared size is plausible: deflate reaches ~1000:1 on
# constant data (a zip bomb), while real images and annotation JSON stay far below MAX_RATIO. Python's
# zipfile never returns more than the declared size, so checking it bounds the memory used.
MAX_RATIO = 200
RATIO_CHECKED_ABOVE = 64 << 20
MAX_MEMBER_BYTES = 16 << 30


def check_member_size(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a member whose uncompressed size is absurd, or far larger than its compressed size."""
    size, packed = info.file_size, max(info.compress_size, 1)
    if size > MAX_MEMBER_BYTES or (size > RATIO_CHECKED_ABOVE and size > MAX_RATIO * packed):
        raise DatasetError(f"{where}: refused, it would expand from {packed} to {size} bytes (a zip bomb?)")


class Tree:
    """Read-only access to the files of a dataset root, extracted or zipped (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._dir: _DirSource | None = None
        self._zips: list[_ZipSource] = []
        if not self.root.exists():
            raise DatasetError(f"{self.root}: dataset path does not exist")
        if self.root.is_dir():
            self._dir = _DirSource(self.root)
            for zip_path in self._zip_files():
                rel = zip_path.relative_to(self.root).as_posix()
                parent = rel.rpartition("/")[0]
                self._add_zip(_ZipSource(self, parent + "/" if parent else "", str(zip_path), path=str(zip_path)))
        elif zipfile.is_zipfile(self.root):
            self._add_zip(_ZipSource(self, "", str(self.root), path=str(self.root)))
        else:
            raise DatasetError(f"{self.root}: not a folder or a zip archive")

    def __repr__(self) -> str:
        return f"Tree({str(self.root)!r})"

    def _zip_files(self) -> list[Path]:
        found = []
        with os.scandir(self.root) as entries:
            top = sorted(entries, key=lambda e: e.name)
        for entry in top:
            if entry.is_file() and entry.name.lower().endswith(".zip"):
                found.append(Path(entry.path))
        for entry in top:
            if entry.is_dir():
                with os.scandir(entry.path) as sub:
                    found.extend(sorted(Path(e.path) for e in sub if e.name.lower().endswith(".zip") and e.is_file()))
        return found

    def _add_zip(self, source: _ZipSource) -> None:
        self._zips.append(source)

    def _sources(self, rel: str) -> Iterable[tuple[_Source, str]]:
        """The sources that may hold `rel`, most likely first, with `rel` relative to each."""
        if self._dir is not None:
            yield self._dir, rel
        seen: set[int] = set()
        while True:  # loading a zip's member list may mount nested zips: look again until none is new
            pending = [z for z in self._zips if id(z) not in seen and z.relative(rel) is not None]
            if not pending:
                return
            # "x.zip" most likely holds "x/...": try those first (avoids opening unrelated nested zips)
            pending.sort(key=lambda z: z.relative(rel).split("/", 1)[0] != z.stem)
            for source in pending:
                seen.add(id(source))
                yield source, source.relative(rel)

    def _find(self, relpath: str) -> tuple[_Source, str] | None:
        rel = _norm(relpath)
        for source, sub in self._sources(rel):
            if source.is_file(sub):
                return source, sub
        return None

    # ------------------------------------------------------------------------------------------ public

    def exists(self, relpath: str) -> bool:
        """Whether a file or folder exists at `relpath`."""
        rel = _norm(relpath)
        if rel == "":
            return True
        return any(source.is_file(sub) or source.is_dir(sub) for source, sub in self._sources(rel))

    def is_file(self, relpath: str) -> bool:
        return self._find(relpath) is not None

    def list(self, prefix: str = "", suffix: str = "") -> list[str]:
        """Sorted relative paths of the files under the folder `prefix` (recursively) ending with `suffix`."""
        prefix = _norm(prefix)
        start = prefix + "/" if prefix else ""
        found: set[str] = set()

        def add(names: Iterable[str], mount: str) -> None:
            for name in names:
                path = mount + name
                if path.startswith(start) and path.endswith(suffix):
                    found.add(path)

        if self._dir is not None:
            add(self._dir.files(prefix), "")
        done: set[int] = set()
        while True:  # listing a zip may mount nested zips: go on until none is new
            new = [z for z in self._zips
                   if id(z) not in done and (z.mount.startswith(start) or start.startswith(z.mount))]
            if not new:
                break
            for source in new:
                done.add(id(source))
                sub = start[len(source.mount):].rstrip("/") if start.startswith(source.mount) else ""
                add(source.files(sub), source.mount)
        return sorted(found)

    def read_bytes(self, relpath: str) -> bytes:
        hit = self._find(relpath)
        if hit is None:
            raise DatasetError(f"{self.location(relpath)}: no such file")
        source, sub = hit
        try:
            return source.read(sub)
        except OSError as exc:
            raise DatasetError(f"{source.location(sub)}: cannot read ({exc.strerror or exc})") from None

    def read_json(self, relpath: str) -> Any:
        """A JSON file's content; a malformed file is a DatasetError naming it."""
        data = self.read_bytes(relpath)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.location(relpath)}: invalid JSON ({exc.msg} at line {exc.lineno} "
                               f"column {exc.colno})") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{self.location(relpath)}: invalid JSON (not UTF-8 text)") from None
        except RecursionError:
            raise DatasetError(f"{self.location(relpath)}: invalid JSON (nested too deeply)") from None

    def open_image(self, relpath: str, mode: str | None = "RGB") -> Image.Image:
        """Decode an image. `mode="RGB"` converts any mode to RGB; `mode=None` keeps the stored mode
        (label PNGs). No EXIF rotation is applied: annotations refer to the stored pixels."""
        data = self.read_bytes(relpath)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Image.DecompressionBombError:
            raise DatasetError(f"{self.location(relpath)}: image too large to decode safely") from None
        except UnidentifiedImageError:
            raise DatasetError(f"{self.location(relpath)}: not an image, or a format Pillow cannot read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{self.location(relpath)}: truncated or corrupt image ({exc})") from None
        fill = jpeg_fill_start(image)
        if fill is not None:
            raise DatasetError(f"{self.location(relpath)}: JPEG data ends early (truncated or corrupt file): rows "
                               f"{fill}-{image.height - 1} of {image.height} are the decoder's flat grey fill")
        return to_rgb_pil(image) if mode == "RGB" else (image if mode is None else image.convert(mode))

    def location(self, relpath: str) -> str:
        """Where `relpath` is, for messages: a file path, or ``<archive>.zip/<member>`` inside a zip."""
        rel = _norm(relpath)
        hit = self._find(rel) if rel else None
        if hit is not None:
            return hit[0].location(hit[1])
        return str(self.root / rel) if rel else str(self.root)

    def top_dirs(self) -> list[str]:
        """The folders at the root of the tree (extracted or in root-mounted zips), sorted."""
        names: set[str] = set()
        if self._dir is not None:
            names.update(self._dir.top_dirs())
        for source in list(self._zips):
            if source.mount == "":
                names.update(source.top_dirs())
            else:
                names.add(source.mount.split("/", 1)[0])
        return sorted(names - {p.rstrip("/") for p in _IGNORED_PREFIXES})

    def find(self, candidates: Sequence[str], what: str, bases: Sequence[str] | None = None) -> tuple[str, str]:
        """The first of `candidates` that exists, tried under each of `bases` in turn.

        `bases` defaults to the root and then each top-level folder (so that ``coco/annotations/...``
        or ``ADEChallengeData2016/images/...`` are found from their parent). Returns ``(base, path)``
        with ``path`` including the base. Raises a DatasetError listing what was tried.
        """
        tried_bases = []
        for base in bases if bases is not None else self._default_bases():
            tried_bases.append(base)
            for candidate in candidates:
                path = _norm(f"{base}/{candidate}")
                if self.exists(path):
                    return base, path
        folders = [b for b in tried_bases if b]
        where = f" (at the root and in the folders {', '.join(folders)})" if folders else ""
        raise DatasetFileMissingError(f"{self.root}: expected file missing: {what}; tried {', '.join(candidates)}"
                                      f"{where}")

    def _default_bases(self) -> Iterable[str]:
        yield ""
        yield from self.top_dirs()  # only listed when the root does not have it


def open_tree(path: str | os.PathLike) -> Tree:
    """A `Tree` over a dataset folder or zip archive (see the module docstring)."""
    return Tree(path)
