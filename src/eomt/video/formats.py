"""Result files of a segmented video: one record per frame, then the whole-video files built from them.

Per frame `NNNNNN` (in `OUT/<video>/`):
- instance: `NNNNNN.json` {"frame", "instances": [{"track_id", "label_id", "label", "score", "segmentation"
  (COCO RLE), "bbox", "area"}]};
- panoptic: `NNNNNN.png` (COCO panoptic: id = R + 256 G + 256^2 B, 0 = void; id = track id + 1, so an object
  keeps its id in every frame: the VIPSeg convention) + `NNNNNN.json` {"frame", "file_name", "segments_info"};
- semantic: `NNNNNN.png` (class ids, 8-bit, 16-bit above 255 classes).
Whole video (`OUT/<video>.json`): instance -> YouTube-VIS results (a list of {"video_id", "category_id", "score",
"segmentations": [RLE or null per frame]}, plus "track_id" and "label"); panoptic -> {"annotations": [{"video_id",
"annotations": [per frame {"image_id", "file_name", "segments_info"}]}], "categories"} (VIPSeg predictions);
semantic -> {"video", "frames", "labels"}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..outputs.coco_formats import instance_results, panoptic_segments_info, panoptic_to_rgb, rgb_to_panoptic

# YouTube-VIS numbers its categories from 1: category_id = the model's label id + 1.
YTVIS_CATEGORY_OFFSET = 1


def frame_stem(index: int) -> str:
    return f"{index:06d}"


def instance_record(prediction) -> dict[str, Any]:
    """The per-frame JSON of an instance FramePrediction."""
    info = [{"id": s.id, "label_id": s.label_id, "score": s.score} for s in prediction.segments]
    coco = instance_results(prediction.masks, info, prediction.index) if info else []
    instances = [{"track_id": s.id, "label_id": s.label_id, "label": s.label, "score": s.score,
                  "segmentation": c["segmentation"], "bbox": c["bbox"], "area": c["area"]}
                 for s, c in zip(prediction.segments, coco, strict=True)]
    return {"frame": prediction.index, "instances": instances}


def panoptic_record(prediction, things: Iterable[int] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The per-frame PNG array and JSON of a panoptic FramePrediction (PNG id = track id + 1)."""
    info = [{"id": s.id, "label_id": s.label_id, "score": s.score} for s in prediction.segments]
    rgb = panoptic_to_rgb(prediction.segmentation, None)
    segments = panoptic_segments_info(prediction.segmentation, info, None, set(things) if things is not None else None)
    labels = {s.id: s.label for s in prediction.segments}
    for entry in segments:
        entry["track_id"] = entry["id"] - 1
        entry["label"] = labels[entry["track_id"]]
    stem = frame_stem(prediction.index)
    return rgb, {"frame": prediction.index, "file_name": f"{stem}.png", "segments_info": segments}


def panoptic_track_map(rgb: np.ndarray) -> np.ndarray:
    """A per-frame panoptic PNG array back to (H, W) track ids (-1 void)."""
    return rgb_to_panoptic(rgb)


def youtube_vis_results(records: Iterable[Mapping[str, Any]], num_frames: int, video_id: int) -> list[dict]:
    """Per-frame instance records -> YouTube-VIS results: one entry per (track, class) seen, its per-frame RLE
    (null where absent) and as score the mean of its per-frame scores."""
    tracks: dict[tuple[int, int], dict[str, Any]] = {}
    for record in records:
        frame = int(record["frame"])
        for instance in record["instances"]:
            key = (int(instance["track_id"]), int(instance["label_id"]))
            track = tracks.setdefault(key, {"segmentations": [None] * num_frames, "scores": [],
                                            "label": instance["label"]})
            track["segmentations"][frame] = instance["segmentation"]
            track["scores"].append(float(instance["score"]))
    results = []
    for (track_id, label_id), track in sorted(tracks.items()):
        results.append({"video_id": video_id, "category_id": label_id + YTVIS_CATEGORY_OFFSET,
                        "score": round(sum(track["scores"]) / len(track["scores"]), 6),
                        "segmentations": track["segmentations"], "track_id": track_id, "label": track["label"]})
    return results


def vipseg_results(name: str, records: Iterable[Mapping[str, Any]], id2label: Mapping[int, str],
                   things: Iterable[int] | None) -> dict[str, Any]:
    """Per-frame panoptic records -> one video's VIPSeg-style predictions JSON (file names relative to `OUT`)."""
    annotations = [{"image_id": frame_stem(int(r["frame"])), "file_name": f"{name}/{r['file_name']}",
                    "segments_info": r["segments_info"]} for r in records]
    thing_set = set(things) if things is not None else None
    categories = [{"id": int(i), "name": label, **({"isthing": int(i) in thing_set} if thing_set is not None else {})}
                  for i, label in sorted(id2label.items())]
    return {"annotations": [{"video_id": name, "annotations": annotations}], "categories": categories}
