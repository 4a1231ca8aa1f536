"""`open_dataset(kind, path, split)`: a reader for one of the supported dataset layouts."""

from __future__ import annotations

import os
from collections.abc import Callable

from eomt.data.ade20k import ADE20KPanoptic, ADE20KSemantic
from eomt.data.archive import Tree, open_tree
from eomt.data.cityscapes import CityscapesSemantic
from eomt.data.coco_instance import CocoInstance
from eomt.data.coco_panoptic import CocoPanoptic
from eomt.data.custom import CustomDataset
from eomt.data.sample import Dataset

READERS: dict[str, Callable[[Tree, str], Dataset]] = {
    "coco_panoptic": CocoPanoptic,
    "coco_instance": CocoInstance,
    "ade20k_semantic": ADE20KSemantic,
    "ade20k_panoptic": ADE20KPanoptic,
    "cityscapes_semantic": CityscapesSemantic,
    "custom": CustomDataset,
}
DATASET_KINDS = tuple(READERS)


def open_dataset(kind: str, path: str | os.PathLike, split: str = "val") -> Dataset:
    """Open the dataset of `kind` at `path` (a folder, extracted or holding the original zips, or a zip).

    Raises ValueError for an unknown kind and `DatasetError` (a ValueError) for a dataset that cannot be read.
    """
    reader = READERS.get(kind)
    if reader is None:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    return reader(open_tree(path), split)
