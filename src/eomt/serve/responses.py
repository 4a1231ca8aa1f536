"""Results -> response bodies: `json` (what `eomt predict` writes), `hf` (the Hugging Face Inference
image-segmentation response) and `png` (the bare segmentation PNG).

The PNGs are the bytes `eomt predict` writes for the same result (`eomt.outputs.atomic.write_png_atomic` saves
the same image with the same PNG settings): panoptic -> COCO panoptic RGB ids, semantic -> the class-id label map.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from ..outputs.atomic import label_map_to_image
from ..outputs.coco_formats import PANOPTIC_ID_OFFSET, encode_rles
from ..predictor import Prediction
from .decoding import RequestError


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def segmentation_png(result: Prediction) -> bytes:
    """Panoptic: COCO panoptic PNG (id = R + 256 G + 256^2 B = segment id; 0 = void); semantic: class ids."""
    if result.task == "panoptic":
        return png_bytes(Image.fromarray(result.to_coco_panoptic()[0]))
    if result.task == "semantic":
        return png_bytes(label_map_to_image(result.segmentation.numpy()))
    raise RequestError(422, "format=png holds panoptic and semantic results; instance results overlap: ask for "
                            "format=json (COCO RLE per instance) or format=hf (a mask per instance)")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_json(result: Prediction) -> dict:
    """`segments` (id, label_id, label, score, area, bbox, isthing) plus `png` (panoptic, semantic: base64 PNG,
    whose pixel values are the segments' ids) or, per instance segment, `rle` (COCO compressed RLE)."""
    height, width = result.image_size
    offset = PANOPTIC_ID_OFFSET if result.task == "panoptic" else 0  # the id the panoptic PNG holds
    segments = [{"id": s.id + offset, "label_id": s.label_id, "label": s.label, "score": s.score, "area": s.area,
                 "bbox": list(s.bbox), "isthing": s.isthing} for s in result.segments]
    body: dict = {"task": result.task, "width": width, "height": height, "segments": segments}
    if result.task == "instance":
        masks = result.masks if result.masks is not None else np.zeros((0, height, width), dtype=bool)
        for segment, rle in zip(segments, encode_rles(masks), strict=True):
            segment["rle"] = rle
    else:
        body["png"] = _b64(segmentation_png(result))
    return body


def to_hf(result: Prediction) -> list[dict]:
    """[{label, score, mask}], mask a base64 single-channel PNG (255 = the segment), as the Hugging Face
    Inference API's image-segmentation task answers; semantic results have score None there too."""
    out = []
    segmentation = result.segmentation.numpy()
    for i, segment in enumerate(result.segments):
        if result.task == "instance":
            mask = result.masks[i].numpy()
        elif result.task == "semantic":
            mask = segmentation == segment.label_id
        else:
            mask = segmentation == segment.id
        out.append({"label": segment.label, "score": segment.score, "mask": _b64(png_bytes(label_map_to_image(mask)))})
    return out
