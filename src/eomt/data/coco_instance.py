"""COCO instance segmentation.

Layout, relative to the root (or to one of its top-level folders), extracted or zipped:

- ``annotations/instances_{split}2017.json`` (``annotations_trainval2017.zip``) or ``instances_{split}2017.json``;
- the images in ``{split}2017/`` (``val2017.zip``) or ``images/{split}2017/``.

Every image of the json is a sample (images without annotations give empty samples). Segmentations are
polygons, uncompressed RLE (``counts`` a list, crowd annotations) or compressed RLE (``counts`` a string),
decoded with pycocotools. Categories, sorted by id, become contiguous classes 0..K-1 (80 for COCO), all
things. Masks may overlap.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from pycocotools import mask as mask_utils

from eomt.data.archive import Tree
from eomt.data.coco_panoptic import categories_info, category_range, coco_split, find_dir, unique_images
from eomt.data.sample import Dataset, DatasetError, Entry, Sample, check_same_size, require


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons or RLE) -> (H, W) bool mask. Raises ValueError when malformed."""
    if isinstance(segmentation, list):
        if any(not isinstance(p, list) or len(p) % 2 for p in segmentation):
            raise ValueError("polygons must be lists of x, y pairs")
        polygons = [p for p in segmentation if len(p) >= 6]  # degenerate ones (< 3 points) cover nothing
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {height} x {width}")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise ValueError("segmentation must be a list of polygons or an RLE object with 'size' and 'counts'")
    return mask_utils.decode(rle).astype(bool)


class CocoInstance(Dataset):
    def __init__(self, tree: Tree, split: str = "val"):
        split = coco_split(split)
        json_name = f"instances_{split}.json"
        base, json_rel = tree.find([f"annotations/{json_name}", json_name], json_name)
        data = tree.read_json(json_rel)
        self.json_location = loc = tree.location(json_rel)
        self.json_name = json_name
        require(data, ("images", "annotations", "categories"), "the top level", loc)
        info = categories_info(data, loc, "coco_instance", "instance")
        known = set(info.category_ids)

        images = unique_images(data["images"], loc, ("id", "file_name", "height", "width"))
        per_image: dict[int, list[dict]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            require(ann, ("image_id", "category_id", "segmentation"), f"annotations[{k}]", loc)
            if ann["image_id"] not in images:
                raise DatasetError(f"{loc}: annotations[{k}] refers to image id {ann['image_id']}, "
                                   f"which is not in 'images'")
            if int(ann["category_id"]) not in known:
                raise DatasetError(f"{loc}: annotations[{k}] (id {ann.get('id')}) has category_id "
                                   f"{ann['category_id']}, not one of {category_range(info)}")
            per_image[ann["image_id"]].append(ann)

        entries = [Entry(image_id=image_id, file_name=image["file_name"].rpartition("/")[2],
                         image_rel=image["file_name"], annotation=(image, per_image.get(image_id, [])))
                   for image_id, image in images.items()]
        if entries:
            image_dir = find_dir(tree, [split, f"images/{split}"], entries[0].image_rel, "image",
                                 [base] + ([""] if base else []))
            for entry in entries:
                entry.image_rel = f"{image_dir}/{entry.image_rel}"
        super().__init__(tree, info, entries)

    def _load(self, entry: Entry) -> Sample:
        image_record, anns = entry.annotation
        height, width = int(image_record["height"]), int(image_record["width"])
        if not self.tree.is_file(entry.image_rel):
            raise DatasetError(f"{self.tree.location(entry.image_rel)}: image missing (listed in {self.json_name})")
        image = self.tree.open_image(entry.image_rel)
        check_same_size(image, height, width, self.tree.location(entry.image_rel), self.json_name)
        masks = np.zeros((len(anns), height, width), dtype=bool)
        for k, ann in enumerate(anns):
            try:
                masks[k] = decode_segmentation(ann["segmentation"], height, width)
            except (ValueError, TypeError, KeyError) as exc:
                raise DatasetError(f"{self.json_location}: bad segmentation in annotation {ann.get('id')} of "
                                   f"image {entry.file_name}: {exc}") from None
        labels = [self.info.to_contiguous(ann["category_id"]) for ann in anns]
        crowd = [bool(ann.get("iscrowd", 0)) for ann in anns]
        return Sample(image_id=entry.image_id, file_name=entry.file_name, image=image,
                      masks=torch.from_numpy(masks), labels=torch.tensor(labels, dtype=torch.int64),
                      iscrowd=torch.tensor(crowd, dtype=torch.bool))
