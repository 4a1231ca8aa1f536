"""What every dataset reader returns: `Sample`, `DatasetInfo`, the `Dataset` base class and `DatasetError`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from eomt.data.errors import DatasetError

if TYPE_CHECKING:
    from eomt.data.archive import Tree

TASKS = ("semantic", "instance", "panoptic")


@dataclass
class Sample:
    """One image and its ground truth as N binary masks with class ids and crowd flags.

    Masks may overlap (COCO instance annotations do); where they do, the later mask wins in
    `semantic_map` and `panoptic_map`.
    """

    image_id: int | str
    file_name: str
    image: Image.Image
    masks: Tensor  # (N, H, W) bool
    labels: Tensor  # (N,) int64, contiguous class ids
    iscrowd: Tensor  # (N,) bool

    @property
    def height(self) -> int:
        return int(self.masks.shape[-2])

    @property
    def width(self) -> int:
        return int(self.masks.shape[-1])

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def semantic_map(self, ignore_index: int = 255) -> Tensor:
        """(H, W) int64 class map from the non-crowd masks; pixels no such mask covers are `ignore_index`."""
        out = torch.full((self.height, self.width), ignore_index, dtype=torch.int64)
        for mask, label, crowd in zip(self.masks, self.labels.tolist(), self.iscrowd.tolist(), strict=True):
            if not crowd:
                out[mask] = label
        return out

    def panoptic_map(self) -> tuple[Tensor, list[dict[str, Any]]]:
        """(H, W) int64 segment index (0..N-1, -1 where no mask) and the segments.

        Each segment is ``{"id": i, "label_id": class id, "iscrowd": bool}``, ``i`` being its index
        in the map; crowd segments are included.
        """
        seg = torch.full((self.height, self.width), -1, dtype=torch.int64)
        segments = []
        for i, (mask, label, crowd) in enumerate(
                zip(self.masks, self.labels.tolist(), self.iscrowd.tolist(), strict=True)):
            seg[mask] = i
            segments.append({"id": i, "label_id": int(label), "iscrowd": bool(crowd)})
        return seg, segments


@dataclass
class DatasetInfo:
    """What a dataset's classes are and how they map to the dataset's own category ids."""

    name: str
    task: str  # "semantic" | "instance" | "panoptic"
    class_names: list[str]
    thing_classes: set[int] = field(default_factory=set)
    ignore_index: int = 255
    category_ids: list[int] | None = None  # contiguous id -> dataset category id (identity when None)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.category_ids is None:
            self.category_ids = list(range(len(self.class_names)))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"{len(self.category_ids)} category ids for {len(self.class_names)} class names")
        self._contiguous = {int(c): i for i, c in enumerate(self.category_ids)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def stuff_classes(self) -> set[int]:
        return set(range(self.num_classes)) - set(self.thing_classes)

    def to_contiguous(self, category_id: int) -> int:
        """The contiguous class id (0..num_classes-1) of a dataset category id."""
        try:
            return self._contiguous[int(category_id)]
        except KeyError:
            raise DatasetError(f"{self.name}: category id {category_id} is not one of the dataset's "
                               f"{self.num_classes} categories") from None


@dataclass
class Entry:
    """What a reader knows about one image before decoding anything."""

    image_id: int | str
    file_name: str  # the image's file name, without directories
    image_rel: str  # the image's path in the tree
    annotation: Any = None  # reader-specific


class Dataset:
    """Base of the readers: indexing, cheap per-image look-ups and name matching."""

    def __init__(self, tree: Tree, info: DatasetInfo, entries: list[Entry]):
        first: dict[str, Entry] = {}
        for entry in entries:  # results, metrics and prediction files are keyed by image id
            other = first.setdefault(str(entry.image_id), entry)
            if other is not entry:
                raise DatasetError(f"{tree.location(entry.image_rel)}: has image id {entry.image_id!r}, as "
                                   f"{tree.location(other.image_rel)} does; every image needs its own id")
        self.tree = tree
        self.info = info
        self.entries = entries
        self._names: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.info.name!r}, {len(self)} images, {self.info.num_classes} classes, "
                f"root={str(self.tree.root)!r})")

    def _index(self, i: int) -> int:
        n = len(self.entries)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dataset indices must be integers, not {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return int(i) % n

    def __getitem__(self, i: int) -> Sample:
        return self._load(self.entries[self._index(i)])

    def _load(self, entry: Entry) -> Sample:
        raise NotImplementedError

    def file_name(self, i: int) -> str:
        """The image's file name (no directories), e.g. ``000000001234.jpg``."""
        return self.entries[self._index(i)].file_name

    def image_id(self, i: int) -> int | str:
        return self.entries[self._index(i)].image_id

    def image_path(self, i: int) -> str:
        """Where the image is: a file path when extracted, ``<archive>.zip/<member>`` inside a zip."""
        return self.tree.location(self.entries[self._index(i)].image_rel)

    def image(self, i: int) -> Image.Image:
        """The RGB image alone, without decoding its annotation."""
        return self.tree.open_image(self.entries[self._index(i)].image_rel)

    def index_of(self, name: str) -> int:
        """The index of the image with this file name, stem or image id (directories are ignored).

        Matches prediction files to samples: ``000000001234.png`` finds ``000000001234.jpg``.
        """
        if self._names is None:
            self._names = self._build_names()
        key = PurePosixPath(str(name).replace("\\", "/")).name
        for candidate in (key, PurePosixPath(key).stem):
            index = self._names.get(candidate)
            if index is not None:
                if index < 0:
                    raise DatasetError(f"{self.info.name}: {candidate!r} names more than one image of the dataset")
                return index
        raise DatasetError(f"{self.info.name}: no image named {name!r} in the dataset ({len(self)} images)")

    def _build_names(self) -> dict[str, int]:
        names: dict[str, int] = {}
        for i, entry in enumerate(self.entries):
            keys = {entry.file_name, PurePosixPath(entry.file_name).stem, str(entry.image_id)}
            for key in keys:
                names[key] = -1 if names.get(key, i) != i else i  # -1: ambiguous
        return names


# ------------------------------------------------------------------------------------ helpers for readers


def semantic_sample(entry: Entry, image: Image.Image, label_map: np.ndarray, ignore_index: int) -> Sample:
    """A sample with one mask per class present in an (H, W) class map (`ignore_index` = unlabelled)."""
    labels = np.unique(label_map)
    labels = labels[labels != ignore_index]
    masks = label_map[None] == labels[:, None, None]
    return Sample(image_id=entry.image_id, file_name=entry.file_name, image=image,
                  masks=torch.from_numpy(masks), labels=torch.from_numpy(labels.astype(np.int64)),
                  iscrowd=torch.zeros(len(labels), dtype=torch.bool))


def pair_with_labels(tree, image_dir: str, image_suffix: str, label_dir: str, label_suffix: str) -> list[Entry]:
    """One entry per image of `image_dir` whose label file (same relative name) is in `label_dir`;
    an image without one is an error naming both paths."""
    labels = {path[len(label_dir) + 1:-len(label_suffix)]: path for path in tree.list(label_dir, label_suffix)}
    entries = []
    for path in tree.list(image_dir, image_suffix):
        key = path[len(image_dir) + 1:-len(image_suffix)]
        if key not in labels:
            raise DatasetError(f"{tree.location(path)}: image without its annotation "
                               f"{tree.location(f'{label_dir}/{key}{label_suffix}')}")
        entries.append(Entry(image_id=key.rpartition("/")[2], file_name=path.rpartition("/")[2], image_rel=path,
                             annotation=labels[key]))
    return entries


def read_label_png(tree, rel: str) -> np.ndarray:
    """A one-channel label PNG as an (H, W) int64 array."""
    label = tree.open_image(rel, mode=None)
    if label.mode not in ("L", "P", "I", "I;16"):
        raise DatasetError(f"{tree.location(rel)}: a label PNG must have one channel, got mode {label.mode}")
    return np.asarray(label).astype(np.int64)


def check_same_size(image: Image.Image, height: int, width: int, image_location: str, annotation: str) -> None:
    if (image.height, image.width) != (height, width):
        raise DatasetError(f"{image_location}: image is {image.width}x{image.height} pixels but its annotation "
                           f"{annotation} is {width}x{height}")


def require(mapping: Any, fields: Sequence[str], where: str, location: str) -> None:
    """Raise a DatasetError naming the first of `fields` missing from `mapping` (`where` says which record)."""
    if not isinstance(mapping, dict):
        raise DatasetError(f"{location}: {where} must be an object, got {type(mapping).__name__}")
    for name in fields:
        if name not in mapping:
            raise DatasetError(f"{location}: missing field '{name}' in {where}")
