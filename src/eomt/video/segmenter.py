"""VideoSegmenter: VidEoMT online, one frame per call, with the query state carried from call to call.

    seg = VideoSegmenter.from_pretrained("tue-mps/videomt-dinov2-small-ytvis2019")
    for frame in frames:                      # PIL images, (H, W, 3) uint8 arrays or (3, H, W) tensors
        result = seg.step(frame)
        for s in result.segments:             # s.id is the track id: the same object keeps it
            print(result.index, s.id, s.label, s.score)

Each call runs the whole network on one frame and keeps only that frame's query tokens (num_queries x
hidden floats) for the next: memory does not grow with the video. The results equal transformers'
whole-clip forward and post-processing on the same frames (tests/video/test_segmenter.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..modeling.videomt import VideomtForUniversalSegmentation
from ..processing.image_io import to_rgb_tensor
from ..processing.image_processor import IMAGENET_MEAN, IMAGENET_STD
from ..processing.resize import mode_for, resize
from . import postprocess

TASKS = ("instance", "panoptic", "semantic")
DEFAULT_VIDEO_MODEL = "tue-mps/videomt-dinov2-small-ytvis2019"
# checkpoint names -> task, for files that do not record one (the published VidEoMT checkpoints)
_NAME_HINTS = (("vipseg", "panoptic"), ("vspw", "semantic"), ("ytvis", "instance"), ("youtube", "instance"),
               ("ovis", "instance"), ("panoptic", "panoptic"), ("semantic", "semantic"), ("instance", "instance"))


@dataclass
class TrackSegment:
    """One object (or class, for semantic results) in one frame. `id` is the track id: the query's index,
    the same in every frame the object is seen (a merged stuff class: num_queries + class id)."""

    id: int
    label_id: int
    label: str
    score: float | None
    area: int


@dataclass
class FramePrediction:
    """The segmentation of one frame.

    `segmentation` (H, W) int64: class ids for semantic results; track ids (-1 = none) for instance and
    panoptic ones. Instance results also carry `masks` (N, H, W) bool in `segments` order (whole masks:
    instances may overlap; in `segmentation` a higher track id paints over a lower one).
    """

    index: int
    task: str
    segmentation: Tensor
    segments: list[TrackSegment]
    masks: Tensor | None = None
    id2label: dict[int, str] = field(default_factory=dict, repr=False)


class VideoSegmenter:
    """A VidEoMT model, its preprocessing and a task, segmenting a video frame after frame.

    `size` (height, width) is the network input (default: the config's image size); frames are resized to
    it (bilinear, antialiased), scaled by 1/255 and normalised by `mean` / `std` (ImageNet), as transformers'
    `VideomtVideoProcessor`. `threshold` defaults to transformers' (instance 0.5, panoptic 0.8).
    """

    def __init__(self, model: VideomtForUniversalSegmentation, task: str = "instance", threshold: float | None = None,
                 size: tuple[int, int] | None = None, mean: Iterable[float] = IMAGENET_MEAN,
                 std: Iterable[float] = IMAGENET_STD, resample: int = 2, stuff_classes: Collection[int] | None = None,
                 mask_threshold: float = 0.5, overlap_mask_area_threshold: float = 0.8) -> None:
        if not isinstance(model, VideomtForUniversalSegmentation):
            raise TypeError(f"VideoSegmenter runs a VideomtForUniversalSegmentation, got {type(model).__name__}")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
        threshold = postprocess.THRESHOLDS.get(task, 0.0) if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.model = model.eval()
        self.task = task
        self.threshold = threshold
        self.size = tuple(size) if size is not None else model.config.image_hw
        patch = model.config.patch_size
        if len(self.size) != 2 or min(self.size) <= 0 or self.size[0] % patch or self.size[1] % patch:
            raise ValueError(f"size {self.size} must be (height, width), multiples of the patch size {patch}")
        self.mode = mode_for(int(resample))
        self.scale = torch.tensor([255.0 * m for m in mean]).view(3, 1, 1)
        self.spread = torch.tensor([255.0 * s for s in std]).view(3, 1, 1)
        self.stuff_classes = sorted(set(stuff_classes)) if stuff_classes else None
        self.mask_threshold = mask_threshold
        self.overlap_mask_area_threshold = overlap_mask_area_threshold
        self.id2label = dict(model.config.id2label)
        self.source: str | None = None  # the checkpoint, when loaded by from_pretrained
        self.reset()

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = DEFAULT_VIDEO_MODEL, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, task: str | None = None,
                        threshold: float | None = None, **config_overrides: Any) -> VideoSegmenter:
        """Load a VidEoMT checkpoint (hub id or transformers-format directory) and its video processor settings.

        `device` defaults to CUDA when available; `dtype` bfloat16 / float16 runs the backbone in that precision
        and the heads in float32. The task comes from the checkpoint (recorded, or its name: ytvis / ovis ->
        instance, vipseg -> panoptic, vspw -> semantic; instance otherwise) unless given.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available here; use `device='cpu'`")
        if dtype in ("int8", torch.int8):
            raise ValueError("dtype int8 is not available for video models (float32, bfloat16 or float16)")
        model = VideomtForUniversalSegmentation.from_pretrained(source, **config_overrides)
        settings = read_video_processor(source)
        task = task or infer_video_task(settings, model.config.extra, str(source))
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
        model = model.to(device=device, dtype=dtype)
        if dtype in (torch.bfloat16, torch.float16):
            model.float32_heads()
        size = settings.get("size") or {}
        segmenter = cls(model, task, threshold,
                        size=(int(size["height"]), int(size["width"])) if {"height", "width"} <= set(size) else None,
                        mean=settings.get("image_mean", IMAGENET_MEAN), std=settings.get("image_std", IMAGENET_STD),
                        resample=int(settings.get("resample", 2)), stuff_classes=settings.get("stuff_classes"))
        segmenter.source = str(source)
        return segmenter

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the video: the next frame is a first frame."""
        self.queries: Tensor | None = None
        self.frame_index = 0

    def state(self) -> dict[str, Any]:
        """What the next frame depends on: the frame index and the last frame's query tokens (or None)."""
        return {"frame_index": self.frame_index, "queries": None if self.queries is None else self.queries.clone()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue a video from `state()` (saved by an interrupted run)."""
        queries = state.get("queries")
        if queries is not None:
            expected = (1, self.model.config.num_queries, self.model.config.hidden_size)
            if tuple(queries.shape) != expected:
                raise ValueError(f"saved query state has shape {tuple(queries.shape)}, this model needs {expected}")
            queries = queries.to(device=self.device, dtype=self.model.dtype)
        self.queries = queries
        self.frame_index = int(state["frame_index"])

    # ---- frames --------------------------------------------------------------------------------

    def preprocess(self, frame: Any) -> Tensor:
        """A frame (PIL image, (H, W, 3) uint8 array, (3, H, W) tensor) -> (1, 3, h, w) network input."""
        pixels = to_rgb_tensor(frame).to(self.device)
        pixels = resize(pixels, self.size, self.mode).float()
        return ((pixels - self.scale.to(self.device)) / self.spread.to(self.device))[None].to(self.model.dtype)

    @torch.inference_mode()
    def logits(self, frame: Any) -> tuple[Tensor, Tensor]:
        """Advance the video by one frame: its mask logits (Q, h, w) and class logits (Q, K + 1), float32."""
        pixel_values = self.preprocess(frame)
        grid = (self.size[0] // self.model.config.patch_size, self.size[1] // self.model.config.patch_size)
        tokens = self.model.encode_frames(pixel_values)
        mask_logits, class_logits, _, self.queries = self.model.decode_frame(tokens, grid, self.queries)
        self.frame_index += 1
        return mask_logits[0].float(), class_logits[0].float()

    def step(self, frame: Any, task: str | None = None) -> FramePrediction:
        """Segment the next frame of the video; ids in the result are track ids."""
        task = task or self.task
        height, width = _frame_hw(frame)
        index = self.frame_index
        mask_logits, class_logits = self.logits(frame)
        return self.finish(index, task, mask_logits, class_logits, (height, width))

    def stream(self, frames: Iterable[Any]) -> Iterator[FramePrediction]:
        """Segment frames as they come (a generator: one frame in memory at a time)."""
        for frame in frames:
            yield self.step(frame)

    @torch.inference_mode()
    def finish(self, index: int, task: str, mask_logits: Tensor, class_logits: Tensor,
               size: tuple[int, int]) -> FramePrediction:
        """Post-process one frame's logits at the frame's own `size` (height, width)."""
        if task == "semantic":
            label_map = postprocess.semantic_frame(mask_logits, class_logits, size).cpu()
            ids, counts = torch.unique(label_map, return_counts=True)
            segments = [TrackSegment(int(i), int(i), self._label(int(i)), None, int(c))
                        for i, c in zip(ids.tolist(), counts.tolist(), strict=True)]
            return FramePrediction(index, task, label_map, segments, id2label=self.id2label)
        if task == "instance":
            post = postprocess.instance_frame(mask_logits, class_logits, size, self.threshold)
            masks = post["masks"].cpu()
            areas = masks.flatten(1).sum(1).tolist()
        elif task == "panoptic":
            post = postprocess.panoptic_frame(mask_logits, class_logits, size, self.threshold, self.mask_threshold,
                                              self.overlap_mask_area_threshold, self.stuff_classes)
            masks = None
            ids = [s["id"] for s in post["segments_info"]]
            counts = torch.bincount(post["segmentation"].flatten() + 1, minlength=max(ids, default=0) + 2)
            areas = [int(counts[i + 1]) for i in ids]
        else:
            raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
        segments = [TrackSegment(s["id"], s["label_id"], self._label(s["label_id"]), s["score"], int(a))
                    for s, a in zip(post["segments_info"], areas, strict=True)]
        return FramePrediction(index, task, post["segmentation"].cpu(), segments, masks, id2label=self.id2label)

    def _label(self, label_id: int) -> str:
        return self.id2label.get(label_id, str(label_id))


def _frame_hw(frame: Any) -> tuple[int, int]:
    if hasattr(frame, "height") and hasattr(frame, "width") and not isinstance(frame, Tensor):
        return int(frame.height), int(frame.width)
    if isinstance(frame, Tensor):
        return tuple(int(v) for v in frame.shape[-2:]) if frame.ndim == 3 and frame.shape[0] in (1, 3, 4) else (
            int(frame.shape[0]), int(frame.shape[1]))
    return int(frame.shape[0]), int(frame.shape[1])


def read_video_processor(source: str | os.PathLike) -> dict[str, Any]:
    """The settings of a checkpoint's `video_preprocessor_config.json` (or `preprocessor_config.json`); {} if none."""
    from ..checkpoints.resolve import resolve_file

    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        try:
            path = resolve_file(source, name, required=False)
        except (OSError, ValueError):
            path = None
        if path is None:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read video processor config ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: video processor config must be a JSON object")
        return data
    return {}


def infer_video_task(settings: dict[str, Any], extra: dict[str, Any], source: str) -> str:
    """A recorded task, else one the checkpoint's name implies; instance (YouTube-VIS) otherwise."""
    for hint in (settings.get("task"), extra.get("task")):
        if hint in TASKS:
            return hint
    name = os.path.basename(str(source).rstrip("/")).lower()
    return next((task for part, task in _NAME_HINTS if part in name), "instance")
