"""A generic layout for one's own data: images, class-id PNGs and a class list.

Relative to the root (or to one of its top-level folders), extracted or zipped:

- ``classes.json`` (or ``classes.yaml`` / ``classes.yml`` when PyYAML is installed): ``{"names": [...],
  "ignore_index": 255, "things": [ids or names], "task": ...}``; only ``names`` is required;
- ``images/{split}/`` when that folder exists, else ``images/``: images (.jpg .jpeg .png .bmp .tif .tiff
  .webp), in subfolders too;
- ``masks/{split}/`` or ``masks/`` (the same choice as for the images): one PNG per image with the same
  relative path and stem, holding class ids 0..K-1 and ``ignore_index`` for unlabelled pixels;
- optionally ``instances/{split}/`` or ``instances/``: one PNG per image of instance ids (0 = no instance;
  one channel, or RGB read as R + 256 G + 256^2 B). Then the dataset is panoptic (unless the class file
  says ``"task": "instance"``) and ``things`` is required: each instance is a segment of the majority class
  of its pixels (a thing class); each stuff class present is one segment of its pixels outside instances;
  the thing-class pixels that no instance covers form one crowd segment per class.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np
import torch

from eomt.data.archive import Tree
from eomt.data.errors import yaml_problem
from eomt.data.sample import (
    Dataset,
    DatasetError,
    DatasetInfo,
    Entry,
    Sample,
    check_same_size,
    require,
    semantic_sample,
)
from eomt.outputs.coco_formats import rgb_to_panoptic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASS_FILES = ("classes.json", "classes.yaml", "classes.yml")


def _read_classes(tree: Tree, rel: str) -> dict:
    location = tree.location(rel)
    if rel.endswith(".json"):
        data = tree.read_json(rel)
    else:
        try:
            import yaml
        except ImportError:
            raise DatasetError(f"{location}: reading YAML needs PyYAML (pip install pyyaml); "
                               f"or write the class list as classes.json") from None
        try:
            data = yaml.safe_load(tree.read_bytes(rel))
        except yaml.YAMLError as exc:
            raise DatasetError(f"{location}: invalid YAML ({yaml_problem(exc)})") from None
    require(data, ("names",), "the class file", location)
    names = data["names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{location}: 'names' must be a non-empty list of class names")
    return data


class CustomDataset(Dataset):
    def __init__(self, tree: Tree, split: str = "val"):
        base, classes_rel = tree.find(CLASS_FILES, " or ".join(CLASS_FILES))
        classes = _read_classes(tree, classes_rel)
        location = tree.location(classes_rel)
        names = [str(n) for n in classes["names"]]
        ignore_index = classes.get("ignore_index", 255)
        if not isinstance(ignore_index, int) or 0 <= ignore_index < len(names):
            raise DatasetError(f"{location}: 'ignore_index' must be an integer outside the class ids "
                               f"0..{len(names) - 1}, got {ignore_index!r}")
        things = set()
        for thing in classes.get("things") or []:
            if isinstance(thing, str) and thing in names:
                things.add(names.index(thing))
            elif isinstance(thing, int) and not isinstance(thing, bool) and 0 <= thing < len(names):
                things.add(thing)
            else:
                raise DatasetError(f"{location}: 'things' entry {thing!r} is neither a class name nor a class id "
                                   f"0..{len(names) - 1}")

        prefix = f"{base}/" if base else ""
        sub = f"/{split}" if tree.exists(f"{prefix}images/{split}") else ""
        image_dir, mask_dir, instance_dir = (f"{prefix}{d}{sub}" for d in ("images", "masks", "instances"))
        if not tree.exists(image_dir):
            raise DatasetError(f"{tree.root}: expected file missing: images/{split}/ or images/ next to "
                               f"{classes_rel}")
        masks = {path[len(mask_dir) + 1:-4]: path for path in tree.list(mask_dir, ".png")}
        has_instances = tree.exists(instance_dir)
        instances = {path[len(instance_dir) + 1:-4]: path for path in tree.list(instance_dir, ".png")}
        task = classes.get("task", "panoptic" if has_instances else "semantic")
        if task not in ("semantic", "instance", "panoptic") or (task != "semantic" and not has_instances):
            raise DatasetError(f"{location}: 'task' must be semantic, or instance / panoptic with an "
                               f"{instance_dir}/ folder; got {task!r}")
        if has_instances and "things" not in classes:
            raise DatasetError(f"{location}: missing field 'things' (required with the folder {instance_dir}/)")

        entries = []
        by_stem: dict[str, str] = {}
        for path in tree.list(image_dir):
            if not path.lower().endswith(IMAGE_EXTENSIONS):
                continue
            stem = str(PurePosixPath(path[len(image_dir) + 1:]).with_suffix(""))
            if stem in by_stem:
                raise DatasetError(f"{tree.location(path)}: {tree.location(by_stem[stem])} has the same name "
                                   f"without its extension, so both would take the annotation "
                                   f"{tree.location(f'{mask_dir}/{stem}.png')}; keep one of them")
            by_stem[stem] = path
            if stem not in masks:
                raise DatasetError(f"{tree.location(path)}: image without its annotation "
                                   f"{tree.location(f'{mask_dir}/{stem}.png')}")
            if has_instances and stem not in instances:
                raise DatasetError(f"{tree.location(path)}: image without its annotation "
                                   f"{tree.location(f'{instance_dir}/{stem}.png')}")
            entries.append(Entry(image_id=stem, file_name=path.rpartition("/")[2], image_rel=path,
                                 annotation=(masks[stem], instances.get(stem))))
        info = DatasetInfo(name="custom", task=task, class_names=names, thing_classes=things,
                           ignore_index=ignore_index)
        super().__init__(tree, info, entries)

    def _read_png(self, rel: str, what: str) -> np.ndarray:
        image = self.tree.open_image(rel, mode=None)
        if image.mode in ("L", "P", "I", "I;16", "1"):
            return np.asarray(image).astype(np.int64)
        if what == "instance" and image.mode in ("RGB", "RGBA"):
            return rgb_to_panoptic(np.asarray(image), raw=True)
        raise DatasetError(f"{self.tree.location(rel)}: a {what} PNG must have one channel, got mode {image.mode}")

    def _load(self, entry: Entry) -> Sample:
        mask_rel, instance_rel = entry.annotation
        location = self.tree.location(mask_rel)
        label_map = self._read_png(mask_rel, "class")
        num_classes, ignore = self.info.num_classes, self.info.ignore_index
        bad = label_map[(label_map >= num_classes) & (label_map != ignore)]
        if bad.size:
            raise DatasetError(f"{location}: label id {int(bad.max())} out of range (0..{num_classes - 1}, "
                               f"ignore {ignore})")
        image = self.tree.open_image(entry.image_rel)
        check_same_size(image, label_map.shape[0], label_map.shape[1], self.tree.location(entry.image_rel), location)
        if instance_rel is None:
            return semantic_sample(entry, image, label_map, ignore)
        return self._panoptic(entry, image, label_map, instance_rel)

    def _panoptic(self, entry: Entry, image, label_map: np.ndarray, instance_rel: str) -> Sample:
        location = self.tree.location(instance_rel)
        ids = self._read_png(instance_rel, "instance")
        if ids.shape != label_map.shape:
            raise DatasetError(f"{location}: instance PNG is {ids.shape[1]}x{ids.shape[0]} pixels but the class "
                               f"PNG is {label_map.shape[1]}x{label_map.shape[0]}")
        ignore, things = self.info.ignore_index, self.info.thing_classes
        masks, labels, crowd = [], [], []
        for instance_id in np.unique(ids[ids > 0]).tolist():
            mask = ids == instance_id
            classes = label_map[mask]
            classes = classes[classes != ignore]
            if classes.size == 0:
                raise DatasetError(f"{location}: instance {instance_id} covers only unlabelled pixels")
            label = int(np.bincount(classes).argmax())
            if label not in things:
                raise DatasetError(f"{location}: instance {instance_id} is mostly class {label} "
                                   f"({self.info.class_names[label]}), which is not a thing class")
            masks.append(mask)
            labels.append(label)
            crowd.append(False)
        free = ids == 0
        present = np.unique(label_map[free & (label_map != ignore)]).tolist()
        for is_crowd in (False, True):  # stuff segments, then the thing pixels without an instance
            for label in present:
                if (label in things) == is_crowd:
                    masks.append(free & (label_map == label))
                    labels.append(label)
                    crowd.append(is_crowd)
        height, width = label_map.shape
        stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
        return Sample(image_id=entry.image_id, file_name=entry.file_name, image=image,
                      masks=torch.from_numpy(stacked), labels=torch.tensor(labels, dtype=torch.int64),
                      iscrowd=torch.tensor(crowd, dtype=torch.bool))
