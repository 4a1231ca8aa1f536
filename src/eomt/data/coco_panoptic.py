"""COCO panoptic (and any COCO-panoptic-style json + PNG dataset, such as ADE20K panoptic).

Layout, relative to the root (or to one of its top-level folders, e.g. ``coco/``), extracted or zipped:

- ``annotations/panoptic_{split}2017.json`` (or ``panoptic_{split}2017.json``);
- the PNGs in ``annotations/panoptic_{split}2017/`` (where the inner zip ``annotations/panoptic_{split}2017.zip``
  of ``panoptic_annotations_trainval2017.zip`` puts them) or ``panoptic_{split}2017/``;
- the images in ``{split}2017/`` (``val2017.zip``) or ``images/{split}2017/``.

A PNG pixel's segment id is R + 256 G + 256^2 B (0 = void); the json's ``segments_info`` gives each
segment's ``category_id`` and ``iscrowd``. Categories, sorted by id, become contiguous classes 0..K-1
(133 for COCO), things being those with ``isthing`` = 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from eomt.data.archive import Tree
from eomt.data.sample import Dataset, DatasetError, DatasetInfo, Entry, Sample, check_same_size, require
from eomt.outputs.coco_formats import rgb_to_panoptic


def coco_split(split: str) -> str:
    """"val" -> "val2017", "train2017" -> "train2017"."""
    match = re.fullmatch(r"(train|val)(\d{4})?", str(split))
    if match is None:
        raise DatasetError(f"unknown COCO split {split!r} (expected train or val)")
    return match.group(1) + (match.group(2) or "2017")


def find_dir(tree: Tree, dirs: Sequence[str], first_file: str, what: str, bases: Sequence[str]) -> str:
    """The first of `dirs` (under each of `bases`) that holds `first_file`."""
    _, path = tree.find([f"{d}/{first_file}" for d in dirs], f"{first_file} ({what})", bases=bases)
    return path[: -len(first_file) - 1]


def categories_info(data: dict, location: str, name: str, task: str) -> DatasetInfo:
    """A DatasetInfo from a COCO-style ``categories`` list, sorted by id."""
    categories = data["categories"]
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{location}: 'categories' must be a non-empty list")
    for k, category in enumerate(categories):
        require(category, ("id", "name") + (("isthing",) if task == "panoptic" else ()), f"categories[{k}]",
                location)
    categories = sorted(categories, key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in categories]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{location}: category ids are not unique")
    things = {i for i, c in enumerate(categories) if task != "panoptic" or int(c["isthing"])}
    return DatasetInfo(name=name, task=task, class_names=[str(c["name"]) for c in categories],
                       thing_classes=things, category_ids=ids)


def category_range(info: DatasetInfo) -> str:
    return f"the {info.num_classes} category ids {min(info.category_ids)}..{max(info.category_ids)}"


class PanopticJsonDataset(Dataset):
    """Images + a COCO panoptic json + a folder of segment-id PNGs."""

    def __init__(self, tree: Tree, name: str, json_rel: str, base: str, png_dirs: Sequence[str],
                 image_dirs: Sequence[str]):
        data = tree.read_json(json_rel)
        self.json_location = loc = tree.location(json_rel)
        self.json_name = json_rel.rpartition("/")[2]
        require(data, ("images", "annotations", "categories"), "the top level", loc)
        info = categories_info(data, loc, name, "panoptic")

        images: dict[int | str, dict] = {}
        for k, image in enumerate(data["images"]):
            require(image, ("id", "file_name"), f"images[{k}]", loc)
            images[image["id"]] = image
        known = set(info.category_ids)
        annotations: dict[int | str, dict] = {}
        for k, ann in enumerate(data["annotations"]):
            require(ann, ("image_id", "file_name", "segments_info"), f"annotations[{k}]", loc)
            if ann["image_id"] not in images:
                raise DatasetError(f"{loc}: annotations[{k}] ({ann['file_name']}) refers to image id "
                                   f"{ann['image_id']}, which is not in 'images'")
            for j, segment in enumerate(ann["segments_info"]):
                require(segment, ("id", "category_id"), f"annotations[{k}].segments_info[{j}]", loc)
                if int(segment["category_id"]) not in known:
                    raise DatasetError(f"{loc}: segment {segment['id']} of {ann['file_name']} has category_id "
                                       f"{segment['category_id']}, not one of {category_range(info)}")
            annotations[ann["image_id"]] = ann
        for image_id, image in images.items():
            if image_id not in annotations:
                raise DatasetError(f"{loc}: image {image['file_name']} (id {image_id}) has no annotation "
                                   f"in 'annotations'")

        entries = [Entry(image_id=image_id, file_name=image["file_name"].rpartition("/")[2],
                         image_rel=image["file_name"], annotation=annotations[image_id])
                   for image_id, image in images.items()]
        bases = [base] + ([""] if base else [])
        if entries:
            first = entries[0]
            self.png_dir = find_dir(tree, png_dirs, first.annotation["file_name"], f"panoptic PNG of {self.json_name}",
                                    bases)
            image_dir = find_dir(tree, image_dirs, first.image_rel, "image", bases)
            for entry in entries:
                entry.image_rel = f"{image_dir}/{entry.image_rel}"
        super().__init__(tree, info, entries)

    def _load(self, entry: Entry) -> Sample:
        ann = entry.annotation
        png_rel = f"{self.png_dir}/{ann['file_name']}"
        if not self.tree.is_file(png_rel):
            raise DatasetError(f"{self.tree.location(png_rel)}: panoptic PNG missing (annotation of image "
                               f"{entry.file_name} in {self.json_name})")
        if not self.tree.is_file(entry.image_rel):
            raise DatasetError(f"{self.tree.location(entry.image_rel)}: image missing (listed in {self.json_name})")
        png = self.tree.open_image(png_rel, mode=None)
        png_location = self.tree.location(png_rel)
        if png.mode not in ("RGB", "RGBA"):
            raise DatasetError(f"{png_location}: a panoptic PNG must be RGB, got mode {png.mode}")
        ids = rgb_to_panoptic(np.asarray(png), raw=True)
        segments = ann["segments_info"]
        segment_ids = np.array([int(s["id"]) for s in segments], dtype=np.int64)
        present = np.unique(ids)
        unknown = np.setdiff1d(present[present != 0], segment_ids)
        if len(unknown):
            shown = ", ".join(str(v) for v in unknown[:10].tolist()) + (", ..." if len(unknown) > 10 else "")
            raise DatasetError(f"{png_location}: segment ids {shown} are not in the segments_info of "
                               f"{ann['file_name']} in {self.json_name}")
        image = self.tree.open_image(entry.image_rel)
        check_same_size(image, ids.shape[0], ids.shape[1], self.tree.location(entry.image_rel), png_location)
        masks = ids[None] == segment_ids[:, None, None]
        labels = [self.info.to_contiguous(s["category_id"]) for s in segments]
        crowd = [bool(s.get("iscrowd", 0)) for s in segments]
        return Sample(image_id=entry.image_id, file_name=entry.file_name, image=image,
                      masks=torch.from_numpy(masks), labels=torch.tensor(labels, dtype=torch.int64),
                      iscrowd=torch.tensor(crowd, dtype=torch.bool))


class CocoPanoptic(PanopticJsonDataset):
    def __init__(self, tree: Tree, split: str = "val"):
        split = coco_split(split)
        name = f"panoptic_{split}"
        base, json_rel = tree.find([f"annotations/{name}.json", f"{name}.json"], f"{name}.json")
        super().__init__(tree, "coco_panoptic", json_rel, base,
                         png_dirs=[f"annotations/{name}", name], image_dirs=[split, f"images/{split}"])
