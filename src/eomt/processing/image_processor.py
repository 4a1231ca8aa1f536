"""EomtImageProcessor: images in, network inputs out; network outputs in, segmentations out.

Torch-native and batched: images become uint8 tensors on the chosen device, are resized with
torchvision's values (antialiased, as transformers' torchvision processor does; `resize.py`), then either padded
(instance / panoptic: long side = S, zero pad to S x S) or cut into overlapping windows along the
long side (semantic: short side = S), and finally normalised.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import postprocess
from .image_io import to_rgb_tensor
from .resize import mode_for, resize
from .sizes import resized_size, size_pair, window_starts

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PROCESSOR_TYPES = ("EomtImageProcessor", "EomtImageProcessorFast", "EomtImageProcessorPil")


class BatchFeature(dict):
    """A dict of model inputs that also reads as attributes and moves with `.to(device_or_dtype)`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, *args, **kwargs) -> BatchFeature:
        """Move tensors; a dtype applies to floating tensors only (pixel values), never to labels."""
        def move(value):
            if isinstance(value, Tensor):
                if value.is_floating_point():
                    return value.to(*args, **kwargs)
                device = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
                return value.to(device) if device is not None else value
            if isinstance(value, list):
                return [move(v) for v in value]
            return value
        return BatchFeature({k: move(v) for k, v in self.items()})


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


class EomtImageProcessor:
    """Prepares images (and optional segmentation maps) for EoMT and post-processes its outputs."""

    def __init__(self, do_resize: bool = True, size: dict[str, int] | int | None = None, resample: int = 2,
                 do_rescale: bool = True, rescale_factor: float = 1 / 255, do_normalize: bool = True,
                 do_split_image: bool = False, do_pad: bool = False,
                 image_mean: float | list[float] | None = None, image_std: float | list[float] | None = None,
                 ignore_index: int | None = None, num_labels: int | None = None, **kwargs: Any) -> None:
        self.size = _size_dict(size) if size is not None else {"shortest_edge": 640, "longest_edge": 640}
        self.do_resize = do_resize
        self.resample = int(resample)
        if self.resample not in range(6):
            raise ValueError(f"resample must be a PIL resampling code 0-5, got {resample}")
        self.do_rescale, self.rescale_factor = do_rescale, rescale_factor
        self.do_normalize = do_normalize
        self.do_split_image, self.do_pad = do_split_image, do_pad
        self.image_mean = list(image_mean) if isinstance(image_mean, (list, tuple)) else (
            [image_mean] * 3 if image_mean is not None else list(IMAGENET_MEAN))
        self.image_std = list(image_std) if isinstance(image_std, (list, tuple)) else (
            [image_std] * 3 if image_std is not None else list(IMAGENET_STD))
        self.ignore_index, self.num_labels = ignore_index, num_labels
        self.extra = {k: v for k, v in kwargs.items() if k not in ("image_processor_type", "processor_class")}

    # ---- configuration files -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dict(do_resize=self.do_resize, size=self.size, resample=self.resample, do_rescale=self.do_rescale,
                    rescale_factor=self.rescale_factor, do_normalize=self.do_normalize,
                    do_split_image=self.do_split_image, do_pad=self.do_pad, image_mean=self.image_mean,
                    image_std=self.image_std, image_processor_type="EomtImageProcessor")
        if self.ignore_index is not None:
            data["ignore_index"] = self.ignore_index
        if self.num_labels is not None:
            data["num_labels"] = self.num_labels
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> EomtImageProcessor:
        kind = data.get("image_processor_type")
        if kind is not None and kind not in _PROCESSOR_TYPES:
            raise ValueError(f"image_processor_type {kind!r} is not an EoMT processor ({', '.join(_PROCESSOR_TYPES)})")
        return cls(**{**data, **overrides})

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike, **overrides: Any) -> EomtImageProcessor:
        """Read a preprocessor config file."""
        path = Path(json_file)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read preprocessor config ({exc})") from None
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs: Any) -> EomtImageProcessor:
        """Read `preprocessor_config.json` from a hub id or a local directory; `kwargs` are settings
        overrides and transformers' location arguments (revision, cache_dir, subfolder, ...)."""
        from ..checkpoints.resolve import HubOptions, resolve_file

        options = HubOptions.pop_from(kwargs)
        return cls.from_json_file(resolve_file(source, "preprocessor_config.json", options=options), **kwargs)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Write `to_json_string` to a file (atomically: never a half-written file)."""
        from ..outputs.atomic import write_bytes_atomic

        write_bytes_atomic(Path(json_file_path), self.to_json_string().encode())

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write `save_directory/preprocessor_config.json`; returns the written files, as transformers does."""
        path = Path(save_directory) / "preprocessor_config.json"
        self.to_json_file(path)
        return [str(path)]

    def __repr__(self) -> str:
        return f"EomtImageProcessor({json.dumps(self.to_dict(), sort_keys=True)})"

    # ---- preprocessing -------------------------------------------------------------------------

    def __call__(self, images, segmentation_maps=None, instance_id_to_semantic_id=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, segmentation_maps, instance_id_to_semantic_id, **kwargs)

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        settings = {k: getattr(self, k) for k in (
            "do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "do_split_image",
            "do_pad", "image_mean", "image_std", "ignore_index")}
        for key, value in overrides.items():
            if key in settings:
                if value is not None:
                    settings[key] = value
            elif key not in ("data_format", "input_data_format", "do_convert_rgb", "disable_grouping"):
                raise TypeError(f"preprocess() got an unexpected keyword argument {key!r}")
        settings["size"] = _size_dict(settings["size"])
        return settings

    def _resize(self, images: list[Tensor], s: dict[str, Any], mode: str) -> list[Tensor]:
        if not s["do_resize"]:
            return images
        out = []
        for image in images:
            size = resized_size(*image.shape[-2:], s["size"]["shortest_edge"], s["size"].get("longest_edge"))
            out.append(resize(image, size, mode))
        return out

    def _split(self, images: list[Tensor], window: int) -> tuple[list[Tensor], list[Tensor]]:
        """Overlapping windows along each image's long side; offsets are (image index, start, end)."""
        crops, offsets = [], []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            for start in window_starts(max(height, width), window):
                end = start + window
                crops.append(image[..., start:end, :] if height > width else image[..., :, start:end])
                offsets.append(torch.tensor([index, start, end]))
        return crops, offsets

    @staticmethod
    def _pad(images: list[Tensor], target: tuple[int, int]) -> list[Tensor]:
        """Zero-pad bottom and right up to `target` (never crops)."""
        return [F.pad(im, (0, max(0, target[1] - im.shape[-1]), 0, max(0, target[0] - im.shape[-2])))
                for im in images]

    def _normalize(self, image: Tensor, s: dict[str, Any]) -> Tensor:
        image = image.float()
        if s["do_normalize"]:
            scale = 1.0 / s["rescale_factor"] if s["do_rescale"] else 1.0
            mean = torch.tensor(s["image_mean"], device=image.device).view(-1, 1, 1) * scale
            std = torch.tensor(s["image_std"], device=image.device).view(-1, 1, 1) * scale
            return (image - mean) / std
        if s["do_rescale"]:
            return image * s["rescale_factor"]
        return image

    def _layout(self, images: list[Tensor], s: dict[str, Any], mode: str):
        images = self._resize(images, s, mode)
        offsets: list[Tensor] = []
        if s["do_split_image"]:
            images, offsets = self._split(images, s["size"]["shortest_edge"])
        if s["do_pad"]:
            images = self._pad(images, size_pair(s["size"]))
        return images, offsets

    def preprocess(self, images, segmentation_maps=None, instance_id_to_semantic_id=None,
                   device: str | torch.device | None = None, return_tensors: str | None = "pt",
                   **kwargs: Any) -> BatchFeature:
        """`pixel_values` and `patch_offsets` (window offsets; empty unless splitting), plus
        `mask_labels` / `class_labels` for segmentation maps.

        `images`: a PIL image, a numpy (H, W[, C]) array, a torch (C, H, W) tensor, a file path, or a list
        of them (a 4-D array / tensor is a batch). `device` places the work (e.g. "cuda").
        `return_tensors`: "pt" stacks `pixel_values` into one tensor (a list when sizes differ), "np"
        into a numpy array, None leaves a list of tensors, as transformers' processor does.
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        s = self._settings(kwargs)
        tensors = [to_rgb_tensor(image) for image in _as_list(images)]
        if device is not None:
            tensors = [t.to(device) for t in tensors]
        pixels, offsets = self._layout(tensors, s, mode_for(s["resample"]))
        pixels = [self._normalize(p, s) for p in pixels]
        if return_tensors is not None and len({p.shape for p in pixels}) == 1:
            pixels = torch.stack(pixels)
            if return_tensors == "np":
                pixels = pixels.cpu().numpy()
        data = BatchFeature(pixel_values=pixels, patch_offsets=offsets)
        if segmentation_maps is not None:
            data.update(self._targets(segmentation_maps, instance_id_to_semantic_id, s, device, len(tensors)))
        return data

    def _targets(self, maps, instance_id_to_semantic_id, s: dict[str, Any], device, count: int) -> dict[str, list]:
        maps = [_map_tensor(m) for m in _as_list(maps)]
        if len(maps) != count:
            raise ValueError(f"got {count} images but {len(maps)} segmentation maps")
        if device is not None:
            maps = [m.to(device) for m in maps]
        maps, offsets = self._layout([m[None] for m in maps], s, "nearest-exact")
        owners = [int(o[0]) for o in offsets] if offsets else list(range(len(maps)))  # window -> image
        mask_labels, class_labels = [], []
        for seg, owner in zip(maps, owners, strict=True):
            mapping = instance_id_to_semantic_id[owner] if isinstance(instance_id_to_semantic_id, list) else (
                instance_id_to_semantic_id)
            masks, classes = binary_masks(seg[0].long(), mapping, s["ignore_index"])
            mask_labels.append(masks)
            class_labels.append(classes)
        return {"mask_labels": mask_labels, "class_labels": class_labels}

    # ---- post-processing -----------------------------------------------------------------------

    def post_process_semantic_segmentation(self, outputs, target_sizes: list[tuple[int, int]],
                                           size: dict[str, int] | None = None,
                                           return_segmentation_scores: bool = False) -> list:
        """Per image, an (H, W) map of class ids (sliding windows merged when `outputs.patch_offsets`)."""
        return postprocess.semantic_segmentation(
            outputs.masks_queries_logits, outputs.class_queries_logits, target_sizes, size or self.size,
            patch_offsets=getattr(outputs, "patch_offsets", None), return_scores=return_segmentation_scores)

    def post_process_instance_segmentation(self, outputs, target_sizes: list[tuple[int, int]],
                                           threshold: float = 0.8, size: dict[str, int] | None = None,
                                           mode: str = "threshold", top_k: int = 100,
                                           stuff_classes: list[int] | None = None) -> list[dict]:
        """Per image, {"segmentation", "segments_info", "masks"}; `mode="topk"` is the authors' AP mode
        (top `top_k` query-class pairs, no threshold); classes in `stuff_classes` are never instances."""
        return postprocess.instance_segmentation(
            outputs.masks_queries_logits, outputs.class_queries_logits, target_sizes, size or self.size,
            threshold=threshold, mode=mode, top_k=top_k, stuff_classes=stuff_classes)

    def post_process_panoptic_segmentation(self, outputs, target_sizes: list[tuple[int, int]],
                                           threshold: float = 0.8, mask_threshold: float = 0.5,
                                           overlap_mask_area_threshold: float = 0.8,
                                           stuff_classes: list[int] | None = None,
                                           size: dict[str, int] | None = None) -> list[dict]:
        """Per image, {"segmentation": (H, W) segment ids, -1 void, "segments_info": [{id, label_id, score}]}."""
        return postprocess.panoptic_segmentation(
            outputs.masks_queries_logits, outputs.class_queries_logits, target_sizes, size or self.size,
            threshold=threshold, mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold, stuff_classes=stuff_classes)


EomtImageProcessorFast = EomtImageProcessor


def _size_dict(size: dict[str, int] | int) -> dict[str, int]:
    """A plain int is the shortest edge, as in transformers; a dict needs 'shortest_edge'."""
    if isinstance(size, int) and not isinstance(size, bool):
        return {"shortest_edge": size}
    if not isinstance(size, dict) or "shortest_edge" not in size:
        raise ValueError(f"size must be an int or have a 'shortest_edge' (and optionally 'longest_edge'), got {size}")
    return dict(size)


def _map_tensor(seg) -> Tensor:
    if isinstance(seg, Image.Image):
        seg = np.array(seg)
    tensor = torch.as_tensor(np.asarray(seg) if not isinstance(seg, Tensor) else seg)
    if tensor.ndim == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2:
        raise ValueError(f"a segmentation map must be 2-D (H, W), got shape {tuple(tensor.shape)}")
    return tensor.to(torch.int64)


def binary_masks(seg: Tensor, instance_id_to_semantic_id: dict[int, int] | None,
                 ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """One binary mask per id in the map, and its class (through the mapping when given).

    With `ignore_index`, id 0 is background (ignored) and other ids shift down by one.
    """
    if ignore_index is not None:
        seg = torch.where(seg == 0, ignore_index, seg - 1)
    ids = torch.unique(seg)
    if ignore_index is not None:
        ids = ids[ids != ignore_index]
    masks = (seg[None] == ids[:, None, None]).float()
    if instance_id_to_semantic_id is None:
        return masks, ids.long()
    shift = 1 if ignore_index is not None else 0
    try:
        classes = [instance_id_to_semantic_id[int(i) + shift] - shift for i in ids.tolist()]
    except KeyError as exc:
        raise ValueError(f"segment id {exc.args[0]} has no entry in instance_id_to_semantic_id") from None
    return masks, torch.tensor(classes, dtype=torch.long, device=seg.device)


class AutoImageProcessor:
    """`AutoImageProcessor.from_pretrained(source)`: the EoMT processor described by preprocessor_config.json."""

    @staticmethod
    def from_pretrained(source: str | os.PathLike, **overrides: Any) -> EomtImageProcessor:
        return EomtImageProcessor.from_pretrained(source, **overrides)
