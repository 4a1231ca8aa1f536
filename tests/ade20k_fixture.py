"""A small ADE20K-panoptic dataset on disk (the layout `open_dataset("ade20k_panoptic", ...)` reads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from eomt.data.ade20k import ADE20K_CLASSES, ADE20K_PANOPTIC_STUFF

# (split name in file names, images folder)
SPLITS = {"train": "training", "val": "validation"}


def default_layout(index: int, height: int, width: int) -> tuple[np.ndarray, list[dict]]:
    """Wall (stuff) everywhere, a floor band (stuff) and a bed (thing, category 8) that moves with `index`."""
    ids = np.ones((height, width), np.int64)
    ids[height * 3 // 4:] = 2
    top, left = height // 8, (index * 7) % (width // 2)
    ids[top:top + height // 3, left:left + width // 3] = 3
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 4, "iscrowd": 0},
                {"id": 3, "category_id": 8, "iscrowd": 0}]
    return ids, segments


def write_ade20k_panoptic(root: Path, counts: dict[str, int], height: int = 64, width: int = 64,
                          layout=default_layout) -> Path:
    """`counts` images per split ("train", "val"); `layout(index, h, w)` gives (id map, segments_info)."""
    stuff = set(ADE20K_PANOPTIC_STUFF)
    categories = [{"id": i + 1, "name": name, "isthing": int(i not in stuff)} for i, name in enumerate(ADE20K_CLASSES)]
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        folder = SPLITS[split]
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / f"ade20k_panoptic_{split}").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            stem = f"ADE_{split}_{i:08d}"
            ids, segments = layout(i, height, width)
            colours = rng.integers(0, 256, (int(ids.max()) + 1, 3), dtype=np.uint8)
            Image.fromarray(colours[ids]).save(root / "images" / folder / f"{stem}.jpg", quality=95)
            rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / f"ade20k_panoptic_{split}" / f"{stem}.png")
            images.append({"id": stem, "file_name": f"{stem}.jpg", "height": height, "width": width})
            annotations.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments})
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (root / f"ade20k_panoptic_{split}.json").write_text(json.dumps(doc))
    return root
