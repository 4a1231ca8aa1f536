"""Cityscapes semantic segmentation with the standard 19 train ids.

Layout, relative to the root or to one of its top-level folders, extracted or zipped
(``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` hold these paths):

- ``leftImg8bit/{split}/{city}/{name}_leftImg8bit.png``;
- ``gtFine/{split}/{city}/{name}_gtFine_labelIds.png`` (label ids 0..33).

Label ids become train ids 0..18 by the Cityscapes label definition; every other id is ignored (255).
"""

from __future__ import annotations

import numpy as np

from eomt.data.archive import Tree
from eomt.data.sample import (
    Dataset,
    DatasetError,
    DatasetInfo,
    Entry,
    Sample,
    check_same_size,
    pair_with_labels,
    read_label_png,
    semantic_sample,
)

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]
# label id of each train id (the Cityscapes label definition: labels with a train id other than 255)
CITYSCAPES_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
CITYSCAPES_THINGS = {11, 12, 13, 14, 15, 16, 17, 18}  # person .. bicycle
MAX_LABEL_ID = 33

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def label_to_train_table(ignore_index: int = 255) -> np.ndarray:
    """(256,) int64: label id -> train id; `ignore_index` for label ids without a train id."""
    table = np.full(256, ignore_index, dtype=np.int64)
    table[CITYSCAPES_LABEL_IDS] = np.arange(len(CITYSCAPES_LABEL_IDS))
    return table


class CityscapesSemantic(Dataset):
    def __init__(self, tree: Tree, split: str = "val"):
        if split not in ("train", "val", "test"):
            raise DatasetError(f"unknown Cityscapes split {split!r} (expected train, val or test)")
        base, image_dir = tree.find([f"leftImg8bit/{split}"], f"leftImg8bit/{split}/ (Cityscapes images)")
        _, label_dir = tree.find([f"gtFine/{split}"], f"gtFine/{split}/ (Cityscapes fine labels)", bases=[base])
        entries = pair_with_labels(tree, image_dir, IMAGE_SUFFIX, label_dir, LABEL_SUFFIX)  # keys "{city}/{name}"
        info = DatasetInfo(name="cityscapes_semantic", task="semantic", class_names=list(CITYSCAPES_CLASSES),
                           thing_classes=set(CITYSCAPES_THINGS), ignore_index=255,
                           category_ids=list(CITYSCAPES_LABEL_IDS))
        self._table = label_to_train_table(255)
        super().__init__(tree, info, entries)

    def _load(self, entry: Entry) -> Sample:
        location = self.tree.location(entry.annotation)
        raw = read_label_png(self.tree, entry.annotation)
        top, bottom = int(raw.max(initial=0)), int(raw.min(initial=0))
        if top > MAX_LABEL_ID or bottom < 0:
            raise DatasetError(f"{location}: label id {top if top > MAX_LABEL_ID else bottom} out of range "
                               f"(0..{MAX_LABEL_ID})")
        image = self.tree.open_image(entry.image_rel)
        check_same_size(image, raw.shape[0], raw.shape[1], self.tree.location(entry.image_rel), location)
        return semantic_sample(entry, image, self._table[raw], 255)
