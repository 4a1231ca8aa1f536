"""ADE20K: semantic (ADEChallengeData2016) and panoptic (COCO-panoptic-style json + PNGs).

Layouts, relative to the root or to one of its top-level folders (``ADEChallengeData2016/``, which is
how ``ADEChallengeData2016.zip`` holds them), extracted or zipped; ``{sub}`` is ``training`` or
``validation`` (splits "train" / "val"):

- semantic: ``images/{sub}/*.jpg`` and ``annotations/{sub}/*.png`` with the same stems; a label PNG
  holds 1..150 for the 150 classes (-> 0..149) and 0 for unlabelled (-> ignore 255);
- panoptic: ``ade20k_panoptic_{split}.json`` (or ``annotations/ade20k_panoptic_{split}.json``), the PNGs in
  ``ade20k_panoptic_{split}/`` (or ``annotations/ade20k_panoptic_{split}/``), the images in ``images/{sub}/``;
  150 categories (100 things, 50 stuff, as the json's ``isthing`` says).
"""

from __future__ import annotations

import numpy as np

from eomt.data.archive import Tree
from eomt.data.coco_panoptic import PanopticJsonDataset
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

# The 50 stuff classes of ADE20K panoptic (contiguous ids into ADE20K_CLASSES; the other 100 are things), as
# the panoptic json's `isthing` and the authors' configs list them.
ADE20K_PANOPTIC_STUFF = [0, 1, 2, 3, 4, 5, 6, 9, 11, 13, 16, 17, 21, 25, 26, 28, 29, 34, 40, 46, 48, 51, 52, 54, 59,
                         60, 61, 63, 68, 77, 79, 84, 91, 94, 96, 99, 100, 101, 105, 106, 109, 113, 114, 117, 122, 128,
                         131, 140, 141, 145]

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]

_SUBDIRS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def ade_split(split: str) -> tuple[str, str]:
    """"val" -> ("val", "validation")."""
    sub = _SUBDIRS.get(str(split))
    if sub is None:
        raise DatasetError(f"unknown ADE20K split {split!r} (expected train or val)")
    return ("train" if sub == "training" else "val"), sub


class ADE20KSemantic(Dataset):
    def __init__(self, tree: Tree, split: str = "val"):
        _, sub = ade_split(split)
        base, image_dir = tree.find([f"images/{sub}"], f"images/{sub}/ (ADEChallengeData2016 images)")
        _, label_dir = tree.find([f"annotations/{sub}"], f"annotations/{sub}/ (ADEChallengeData2016 labels)",
                                 bases=[base])
        entries = pair_with_labels(tree, image_dir, ".jpg", label_dir, ".png")
        info = DatasetInfo(name="ade20k_semantic", task="semantic", class_names=list(ADE20K_CLASSES),
                           ignore_index=255, category_ids=list(range(1, 151)))
        super().__init__(tree, info, entries)

    def _load(self, entry: Entry) -> Sample:
        location = self.tree.location(entry.annotation)
        raw = read_label_png(self.tree, entry.annotation)
        top = int(raw.max(initial=0))
        if top > 150:
            raise DatasetError(f"{location}: label id {top} out of range (0..150, 0 = unlabelled)")
        image = self.tree.open_image(entry.image_rel)
        check_same_size(image, raw.shape[0], raw.shape[1], self.tree.location(entry.image_rel), location)
        label_map = np.where(raw == 0, 255, raw - 1)
        return semantic_sample(entry, image, label_map, 255)


class ADE20KPanoptic(PanopticJsonDataset):
    def __init__(self, tree: Tree, split: str = "val"):
        short, sub = ade_split(split)
        name = f"ade20k_panoptic_{short}"
        base, json_rel = tree.find([f"{name}.json", f"annotations/{name}.json"], f"{name}.json")
        super().__init__(tree, "ade20k_panoptic", json_rel, base, png_dirs=[name, f"annotations/{name}"],
                         image_dirs=[f"images/{sub}"])
