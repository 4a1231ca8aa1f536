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


def unique_images(records: object, location: str, fields: Sequence[str] = ("id", "file_name")) -> dict:
    """The `images` list of a COCO json as id -> record; two records sharing an `id` or a `file_name` are an
    error naming both (a dict would silently keep one of them)."""
    if not isinstance(records, list):
        raise DatasetError(f"{location}: 'images' must be a list, got {type(records).__name__}")
    images: dict[int | str, dict] = {}
    by_id: dict[int | str, int] = {}
    by_file: dict[str, int] = {}
    for k, image in enumerate(records):
        require(image, fields, f"images[{k}]", location)
        image_id, file_name = image["id"], str(image["file_name"])
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise DatasetError(f"{location}: images[{k}] ({file_name}) has id {image_id!r}: a number or a string")
        if image_id in by_id:
            first = by_id[image_id]
            raise DatasetError(f"{location}: images[{k}] ({file_name}) has id {image_id!r}, which images[{first}] "
                               f"({records[first]['file_name']}) already has; every image needs its own 'id'")
        if file_name in by_file:
            first = by_file[file_name]
            raise DatasetError(f"{location}: images[{k}] (id {image_id!r}) has file_name {file_name!r}, as "
                               f"images[{first}] (id {records[first]['id']!r}) does: two records of one image file")
        by_id[image_id], by_file[file_name] = k, k
        images[image_id] = image
    return images


def unique_segments(ann: dict, where: str, image: str, location: str) -> list[dict]:
    """An annotation's `segments_info`, each segment id once.

    panopticapi keys segments by id, so a repeated id counts once, with the last entry's fields: a repeat
    whose category_id and iscrowd equal the first's is dropped the same way; one that differs is an error
    (which of the two is meant cannot be known).
    """
    segments = ann["segments_info"]
    if not isinstance(segments, list):
        raise DatasetError(f"{location}: {where}.segments_info of {image} must be a list, got "
                           f"{type(segments).__name__}")
    kept: dict[int, tuple[int, dict]] = {}
    for j, segment in enumerate(segments):
        require(segment, ("id", "category_id"), f"{where}.segments_info[{j}]", location)
        try:
            segment_id, _ = int(segment["id"]), int(segment["category_id"])
        except (TypeError, ValueError):
            raise DatasetError(f"{location}: {where}.segments_info[{j}] of {image}: id {segment['id']!r} and "
                               f"category_id {segment['category_id']!r} must be whole numbers") from None
        if segment_id in kept:
            first, earlier = kept[segment_id]
            fields = [(name, earlier.get(name, 0), segment.get(name, 0)) for name in ("category_id", "iscrowd")]
            differ = [f"{name} {a!r} vs {b!r}" for name, a, b in fields if int(a) != int(b)]
            if differ:
                raise DatasetError(f"{location}: {where}.segments_info of {image} lists segment id {segment_id} "
                                   f"twice, at [{first}] and [{j}], with different fields ({', '.join(differ)})")
        kept[segment_id] = (kept[segment_id][0] if segment_id in kept else j, segment)  # first place, last entry
    return [segment for _, segment in sorted(kept.values(), key=lambda item: item[0])]


class PanopticJsonDataset(Dataset):
    """Images + a COCO panoptic json + a folder of segment-id PNGs."""

    def __init__(self, tree: Tree, name: str, json_rel: str, base: str, png_dirs: Sequence[str],
                 image_dirs: Sequence[str]):
        data = tree.read_json(json_rel)
        self.json_location = loc = tree.location(json_rel)
        self.json_name = json_rel.rpartition("/")[2]
        require(data, ("images", "annotations", "categories"), "the top level", loc)
        info = categories_info(data, loc, name, "panoptic")

        images = unique_images(data["images"], loc)
        known = set(info.category_ids)
        annotations: dict[int | str, dict] = {}
        position: dict[int | str, int] = {}
        for k, ann in enumerate(data["annotations"]):
            require(ann, ("image_id", "file_name", "segments_info"), f"annotations[{k}]", loc)
            if ann["image_id"] not in images:
                raise DatasetError(f"{loc}: annotations[{k}] ({ann['file_name']}) refers to image id "
                                   f"{ann['image_id']}, which is not in 'images'")
            if ann["image_id"] in annotations:
                raise DatasetError(f"{loc}: annotations[{k}] ({ann['file_name']}) is a second annotation of image "
                                   f"{images[ann['image_id']]['file_name']} (image_id {ann['image_id']!r}), after "
                                   f"annotations[{position[ann['image_id']]}] "
                                   f"({annotations[ann['image_id']]['file_name']}); an image takes one")
            segments = unique_segments(ann, f"annotations[{k}]", images[ann["image_id"]]["file_name"], loc)
            for segment in segments:
                if int(segment["category_id"]) not in known:
                    raise DatasetError(f"{loc}: segment {segment['id']} of {ann['file_name']} has category_id "
                                       f"{segment['category_id']}, not one of {category_range(info)}")
            annotations[ann["image_id"]] = {**ann, "segments_info": segments}
            position[ann["image_id"]] = k
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
