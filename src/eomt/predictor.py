"""Segmenter: from images to segmentations without thinking about processors.

    seg = Segmenter.from_pretrained("tue-mps/coco_panoptic_eomt_large_640", device="cuda")
    result = seg.predict("street.jpg")
    for s in result.segments:
        print(s.label, s.score, s.area, s.bbox)

The task (semantic, instance, panoptic) and the inference mode (sliding window or padded) come from
the checkpoint unless given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from .modeling.eomt import EomtForUniversalSegmentation
from .outputs.instance_masks import InstanceMasks
from .processing.image_io import load_image, to_rgb_pil
from .processing.image_processor import EomtImageProcessor

TASKS = ("semantic", "instance", "panoptic")
BACKENDS = ("torch", "onnxruntime")
DEFAULT_MODEL = "tue-mps/coco_panoptic_eomt_large_640"
COCO_PANOPTIC_THINGS = 80  # contiguous COCO panoptic ids: 80 things, then 53 stuff classes


@dataclass
class Segment:
    """One segment: for semantic results, one per class present."""

    id: int
    label_id: int
    label: str
    score: float | None
    area: int
    bbox: tuple[float, float, float, float]  # x, y, width, height (COCO)
    isthing: bool


@dataclass(init=False)
class Prediction:
    """A segmentation of one image.

    `segmentation` is (H, W) int64: class ids for semantic results; segment ids (-1 = void) for
    panoptic and instance ones. Instance results also carry their masks, since instances may overlap:
    `instance_masks` holds them compactly (one tight crop per instance, `InstanceMasks`), and `masks` gives
    the (N, H, W) bool stack, made on first access. An instance result's `segmentation` (the last instance
    covering each pixel) is also made from the crops on first access: the files `eomt predict` writes for
    instances do not need it (a 12 MP photo: 96 MB and about 0.4 s saved).
    """

    task: str
    segments: list[Segment]
    instance_masks: InstanceMasks | None = field(default=None, repr=False)
    id2label: dict[int, str] = field(default_factory=dict, repr=False)

    def __init__(self, task: str, segmentation: Tensor | None, segments: list[Segment],
                 masks: Tensor | InstanceMasks | None = None, id2label: dict[int, str] | None = None) -> None:
        self.instance_masks = masks if masks is None or isinstance(masks, InstanceMasks) else (
            InstanceMasks.from_dense(masks.cpu()))
        if segmentation is None and self.instance_masks is None:
            raise ValueError("a prediction needs its segmentation map, or instance masks to make it from")
        self.task, self._segmentation, self.segments = task, segmentation, segments
        self.id2label = dict(id2label or {})

    @property
    def segmentation(self) -> Tensor:
        """(H, W) int64 segment (semantic: class) ids, -1 = void."""
        if self._segmentation is None:
            self._segmentation = self.instance_masks.last_covering()
        return self._segmentation

    @property
    def masks(self) -> Tensor | None:
        """The (N, H, W) bool masks of an instance result (built from the crops on first access), else None."""
        return None if self.instance_masks is None else self.instance_masks.dense()

    @property
    def image_size(self) -> tuple[int, int]:
        if self._segmentation is None:
            return self.instance_masks.height, self.instance_masks.width
        return tuple(self._segmentation.shape[-2:])

    def to_coco_panoptic(self, label_to_category: dict[int, int] | None = None):
        """(H, W, 3) uint8 PNG array (id = R + 256 G + 256^2 B, segment id + 1; 0 = void) and segments_info."""
        from .outputs.coco_formats import panoptic_segments_info, panoptic_to_rgb

        if self.task != "panoptic":
            raise ValueError(f"a {self.task} result has no panoptic form")
        info = [{"id": s.id, "label_id": s.label_id, "score": s.score} for s in self.segments]
        things = {s.label_id for s in self.segments if s.isthing}
        return (panoptic_to_rgb(self.segmentation, None),
                panoptic_segments_info(self.segmentation, info, label_to_category, things))

    def to_coco_instances(self, image_id: int | str, label_to_category: dict[int, int] | None = None) -> list[dict]:
        """COCO results: one {image_id, category_id, segmentation (RLE), bbox, score, area} per instance."""
        from .outputs.coco_formats import instance_results

        if self.task != "instance":
            raise ValueError(f"a {self.task} result has no instance form")
        info = [{"id": s.id, "label_id": s.label_id, "score": s.score} for s in self.segments]
        return instance_results(self.instance_masks, info, image_id, label_to_category)

    def overlay(self, image: Image.Image, alpha: float = 0.5) -> Image.Image:
        """The image with coloured masks, outlines and class names."""
        from .outputs.overlay import overlay, overlay_instances

        image = to_rgb_pil(image)
        if self.task == "instance":
            return overlay_instances(image, self.instance_masks, [s.label for s in self.segments],
                                     [s.score for s in self.segments])
        return overlay(image, self.segmentation, [(s.id, s.label, s.score) for s in self.segments], alpha=alpha)


def _areas_and_boxes(segment_map: Tensor, ids: list[int]) -> tuple[list[int], list[tuple[float, ...]]]:
    from .outputs.coco_formats import segment_stats

    areas, boxes = segment_stats(segment_map, ids)
    return [int(a) for a in areas], [tuple(float(v) for v in b) for b in boxes]


class NonFiniteOutputError(ValueError):
    """The network produced NaN or inf: there is no result to write, only this error."""


class Segmenter:
    """A model, its processor and the task, ready to segment images.

    `model` is an `EomtForUniversalSegmentation` or an `OnnxRuntimeModel` (an exported file run by
    onnxruntime). `compile=True` runs a torch model through `torch.compile` (mode max-autotune on
    CUDA; one static graph per input size, and inputs take few sizes: padded or sliding windows).
    """

    def __init__(self, model: EomtForUniversalSegmentation, processor: EomtImageProcessor, task: str = "panoptic",
                 stuff_classes: Iterable[int] | None = None, compile: bool = False,
                 max_memory: int | str | None = None) -> None:
        from .processing.memory import parse_size

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
        self.model = model.eval()
        self._forward = self.model
        if compile:
            if not isinstance(model, torch.nn.Module):
                raise ValueError("compile=True applies to the torch backend only")
            self.model.mask_probs()  # read once, outside the graph
            mode = "max-autotune" if self.model.device.type == "cuda" else None
            self._forward = torch.compile(self.model, mode=mode, dynamic=False)
        self.task = task
        self.id2label = dict(model.config.id2label)
        self.stuff_classes = sorted(set(stuff_classes)) if stuff_classes is not None else default_stuff_classes(
            model.config.num_labels)
        self.processor = processor_for_task(processor, task, model.config.image_hw[0])
        self.max_memory = None if max_memory is None else parse_size(max_memory, "max_memory")

    @property
    def budget(self):
        """The `MemoryBudget` of one image's post-processing: `max_memory` bytes, or automatic (from the free
        RAM, or the free GPU memory on CUDA)."""
        from .processing.memory import MemoryBudget

        return MemoryBudget.of(self.max_memory, self.device)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, task: str | None = None, backend: str = "torch",
                        compile: bool = False, max_memory: int | str | None = None,
                        **config_overrides: Any) -> Segmenter:
        """Load model and processor; `device` defaults to CUDA when available, `dtype` to float32.

        `max_memory` (bytes or "2GB", "512MiB") bounds what one image's full-resolution post-processing may use
        (default: from the free memory); it sizes the chunks of queries upsampled at once, never the result.
        An image that cannot fit even streamed fails with MemoryBudgetError, whose message says what would fit.

        With `dtype` bfloat16 or float16 the backbone runs in that precision and the heads in float32.

        `backend="onnxruntime"` runs an exported directory (`eomt export`) given as `source`, or
        exports `source` once (any input size, `dtype`) into the cache (`$EOMT_CACHE`, else
        ~/.cache/eomt) and runs that; it needs `pip install 'eomt[onnx]'`. `dtype="int8"` (onnxruntime
        only) quantizes the encoder blocks before the queries join (see `eomt.runtimes.quantize`).
        """
        from .processing.memory import parse_size

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
        if max_memory is not None:
            parse_size(max_memory, "max_memory")  # a bad value fails before any model is read
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available here; use `device='cpu'`")
        if backend == "onnxruntime":
            segmenter = cls._from_onnx(source, device, dtype, task, compile, config_overrides)
            segmenter.max_memory = None if max_memory is None else parse_size(max_memory, "max_memory")
            return segmenter
        if dtype in ("int8", torch.int8):
            raise ValueError("dtype int8 runs on the onnxruntime backend only (`backend='onnxruntime'`)")
        model = EomtForUniversalSegmentation.from_pretrained(source, **config_overrides)
        try:
            processor = EomtImageProcessor.from_pretrained(source)
        except (ValueError, OSError):  # no preprocessor_config.json (e.g. an authors' checkpoint file)
            from .checkpoints.run_checkpoint import run_processor

            settings = run_processor(source) if os.path.isfile(source) else None  # eomt train's last/best.ckpt
            processor = EomtImageProcessor.from_dict(settings) if settings else None
        task = task or infer_task(processor, model.config.extra, str(source))
        if processor is None:
            processor = EomtImageProcessor()
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
        stuff = processor.extra.get("stuff_classes")  # written by `eomt train`
        model = model.to(device=device, dtype=dtype)
        if dtype in (torch.bfloat16, torch.float16):
            model.float32_heads()  # half-precision backbone, float32 mask logits (see its docstring)
        return cls(model, processor, task, stuff_classes=stuff, compile=compile, max_memory=max_memory)

    @classmethod
    def _from_onnx(cls, source: str | os.PathLike, device: torch.device, dtype: torch.dtype | str | None,
                   task: str | None, compile: bool, config_overrides: dict[str, Any]) -> Segmenter:
        from .runtimes.export import ONNX_FILE
        from .runtimes.onnx_runtime import OnnxRuntimeModel, cached_export

        if compile or config_overrides:
            raise ValueError("the onnxruntime backend takes no compile=True or config overrides")
        dtype = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
        exported = Path(source).is_dir() and (Path(source) / ONNX_FILE).exists()
        directory = Path(source) if exported else cached_export(source, dtype)
        model = OnnxRuntimeModel(directory, device)
        processor = EomtImageProcessor.from_pretrained(directory)
        task = task or infer_task(processor, model.config.extra, str(source))
        return cls(model, processor, task, stuff_classes=processor.extra.get("stuff_classes"))

    @property
    def device(self) -> torch.device:
        return self.model.device

    def predict(self, images, task: str | None = None, batch_size: int = 1, threshold: float = 0.8,
                tile: int | None = None, tile_overlap: float | None = None,
                **post_kwargs: Any) -> Prediction | list[Prediction]:
        """Segment one image (path, PIL, array, tensor) or a list of them; returns one result or a list.

        `tile=SIZE` segments each image at native resolution: overlapping SIZE x SIZE windows (`tile_overlap`,
        a fraction in [0, 0.9), default 0.25), each processed like a model-size input, `batch_size` windows per
        forward pass, merged into one full-resolution result (see `eomt.processing.tiling`).
        """
        single = not isinstance(images, (list, tuple))
        results = [r for _, r in self.predict_iter([images] if single else images, task, batch_size, threshold,
                                                     tile=tile, tile_overlap=tile_overlap, **post_kwargs)]
        return results[0] if single else results

    def predict_iter(self, images: Iterable, task: str | None = None, batch_size: int = 1, threshold: float = 0.8,
                     tile: int | None = None, tile_overlap: float | None = None,
                     **post_kwargs: Any) -> Iterator[tuple[int, Prediction]]:
        """Yield (index, result) batch by batch; files are read lazily, a batch at a time."""
        task = task or self.task
        if tile is not None or tile_overlap is not None:
            tile_overlap = self.check_tiling(task, tile, tile_overlap, post_kwargs)
            for index, image in enumerate(images):
                image = load_image(image) if isinstance(image, (str, os.PathLike)) else image
                yield index, self._predict_tiled(image, task, tile, tile_overlap, batch_size, threshold, post_kwargs)
            return
        processor = self.processor if task == self.task else processor_for_task(
            self.processor, task, self.model.config.image_hw[0])
        batch: list[tuple[int, Image.Image]] = []
        for index, image in enumerate(images):
            batch.append((index, load_image(image) if isinstance(image, (str, os.PathLike)) else image))
            if len(batch) == batch_size:
                yield from zip([i for i, _ in batch], self._run([im for _, im in batch], task, processor,
                                                               threshold, post_kwargs), strict=True)
                batch = []
        if batch:
            yield from zip([i for i, _ in batch], self._run([im for _, im in batch], task, processor, threshold,
                                                           post_kwargs), strict=True)

    @torch.inference_mode()
    def _run(self, images: list, task: str, processor: EomtImageProcessor, threshold: float,
             post_kwargs: dict[str, Any]) -> list[Prediction]:
        sizes = [tuple(_image_hw(im)) for im in images]
        budget = self.budget
        self.check_memory(task, sizes, budget)
        inputs = processor(images, device=self.device)
        out = self._forward(inputs.pixel_values.to(self.model.dtype), patch_offsets=inputs.get("patch_offsets"))
        out.masks_queries_logits = out.masks_queries_logits.float()
        out.class_queries_logits = out.class_queries_logits.float()
        from .processing import postprocess

        logits, classes = out.masks_queries_logits, out.class_queries_logits
        options = dict(post_kwargs)
        size = options.pop("size", None) or processor.size
        self._check_finite(classes, logits)
        if task == "semantic":
            scores = options.pop("return_segmentation_scores", False)
            maps = postprocess.semantic_segmentation(logits, classes, sizes, size,
                                                     patch_offsets=inputs.get("patch_offsets"), return_scores=scores,
                                                     max_memory=budget, **options)
            return [self._semantic(m[0] if scores else m) for m in maps]
        if task == "panoptic":
            post = postprocess.panoptic_segmentation(logits, classes, sizes, size, threshold=threshold,
                                                     stuff_classes=self.stuff_classes, max_memory=budget, **options)
        else:
            # a panoptic model's stuff classes (recorded, or a published model's) are no instances; the
            # last-covering map is left for `Prediction.segmentation` to make when asked
            post = [{"segmentation": None, "segments_info": info, "masks": masks}
                    for masks, info in postprocess.instance_masks(
                        logits, classes, sizes, size, threshold=threshold, max_memory=budget,
                        **{"stuff_classes": self.stuff_classes, **options})]
        return [self._segments(task, p) for p in post]

    def check_memory(self, task: str, sizes: Sequence[tuple[int, int]], budget=None, tile: int | None = None) -> None:
        """MemoryBudgetError, before anything is allocated, for the first (height, width) whose streamed
        post-processing and result files cannot fit the budget; its one-line message says what would fit."""
        from .processing.memory import MemoryBudgetError, estimate, fit_hint, format_size

        budget = budget or self.budget
        limit = budget.limit()
        for height, width in sizes:
            need = estimate(task, height, width, tile)
            if need > limit:
                where = "the `max_memory` budget" if budget.explicit else "the memory available"
                raise MemoryBudgetError(
                    f"a {width}x{height} image needs about {format_size(need)} for {task} results at full "
                    f"resolution, more than {where} ({format_size(limit)}); {fit_hint(task, height, width, limit)}")

    def check_tiling(self, task: str, tile: int | None, tile_overlap: float | None,
                     post_kwargs: dict[str, Any] | None = None) -> float:
        """ValueError unless `tile` / `tile_overlap` can tile `task` with this model; returns the overlap."""
        from .processing.tiling import DEFAULT_OVERLAP, check_tiling

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
        if tile is None:
            raise ValueError("tile_overlap applies to tiled inference only: give tile=SIZE too")
        overlap = DEFAULT_OVERLAP if tile_overlap is None else tile_overlap
        check_tiling(tile, overlap, self.model.config.patch_size)
        if (post_kwargs or {}).get("return_segmentation_scores"):
            raise ValueError("return_segmentation_scores is not available with tile= (the scores are merged "
                             "cell by cell and not kept)")
        return overlap

    @torch.inference_mode()
    def _predict_tiled(self, image, task: str, tile: int, overlap: float, batch_size: int, threshold: float,
                       post_kwargs: dict[str, Any]) -> Prediction:
        """One image at native resolution: its windows, `batch_size` per forward pass, merged by `tiling`."""
        from .processing import tiling
        from .processing.image_io import to_rgb_tensor
        from .processing.sizes import size_pair

        pixels = to_rgb_tensor(image)
        self.check_memory(task, [tuple(pixels.shape[-2:])], tile=tile)
        plan = tiling.plan_windows(*pixels.shape[-2:], tile, overlap)
        processor = processor_for_task(self.processor, "panoptic", self.model.config.image_hw[0])  # padded input
        if task == "semantic":
            merger = tiling.SemanticMerger(plan, size_pair(processor.size))
        elif task == "instance":
            merger = tiling.InstanceMerger(plan, processor.size, threshold=threshold, **post_kwargs)
        else:
            merger = tiling.PanopticMerger(plan, processor.size, threshold=threshold,
                                           stuff_classes=self.stuff_classes, **post_kwargs)
        for start in range(0, len(plan.windows), batch_size):
            windows = plan.windows[start:start + batch_size]
            inputs = processor([pixels[:, w.top:w.bottom, w.left:w.right] for w in windows], device=self.device)
            out = self._forward(inputs.pixel_values.to(self.model.dtype))
            self._check_finite(out.class_queries_logits, out.masks_queries_logits)
            merger.add(windows, out.masks_queries_logits.float(), out.class_queries_logits.float())
        return self._semantic(merger.result()) if task == "semantic" else self._segments(task, merger.result())

    def _check_finite(self, class_logits: Tensor, mask_logits: Tensor) -> None:
        """NaN or inf logits would post-process into an empty result that looks like "nothing found"."""
        if bool(torch.isfinite(class_logits).all()) and bool(torch.isfinite(mask_logits).all()):
            return
        half = self.model.dtype in (torch.float16, torch.bfloat16)
        raise NonFiniteOutputError(
            "the model's outputs are not finite (NaN or inf in its class / mask logits)"
            + (f"; in {str(self.model.dtype).removeprefix('torch.')} this can be an overflow: try float32" if half
               else "; its weights may hold NaN or inf"))

    def _label(self, label_id: int) -> str:
        return self.id2label.get(label_id, str(label_id))

    def _semantic(self, label_map: Tensor) -> Prediction:
        label_map = label_map.long()
        if label_map.numel() and int(label_map.min()) >= 0:  # class ids: counts, not unique's sorted copy
            ids = torch.bincount(label_map.flatten()).nonzero().flatten().tolist()
        else:
            ids = torch.unique(label_map).tolist()
        areas, boxes = _areas_and_boxes(label_map, ids)
        segments = [Segment(i, i, self._label(i), None, a, b, False) for i, a, b in zip(ids, areas, boxes, strict=True)]
        return Prediction("semantic", label_map.cpu(), segments, id2label=self.id2label)

    def _segments(self, task: str, post: dict) -> Prediction:
        segmentation = None if post["segmentation"] is None else post["segmentation"].long().cpu()
        info = post["segments_info"]
        masks = post.get("masks")
        if task == "instance" and masks is not None:
            masks = masks if isinstance(masks, InstanceMasks) else InstanceMasks.from_dense(masks.bool().cpu())
            areas = masks.areas()
            boxes = [tuple(b) for b in masks.coco_boxes()]
        else:
            areas, boxes = _areas_and_boxes(segmentation, [s["id"] for s in info])
        stuff = set(self.stuff_classes or [])
        segments = [Segment(s["id"], s["label_id"], self._label(s["label_id"]), s["score"], a, b,
                            s["label_id"] not in stuff)
                    for s, a, b in zip(info, areas, boxes, strict=True)]
        return Prediction(task, segmentation, segments, masks, id2label=self.id2label)


def _image_hw(image) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, Tensor):
        return tuple(image.shape[-2:]) if image.ndim == 3 and image.shape[0] in (1, 3, 4) else tuple(image.shape[:2])
    return tuple(image.shape[:2])


def default_stuff_classes(num_labels: int) -> list[int] | None:
    """The stuff classes of a published panoptic model that did not record them, known by its class count:
    133 is COCO panoptic (contiguous ids: 80 things, then 53 stuff), 150 is ADE20K panoptic (50 stuff)."""
    if num_labels == 133:
        return list(range(COCO_PANOPTIC_THINGS, 133))
    if num_labels == 150:
        from .data.ade20k import ADE20K_PANOPTIC_STUFF

        return list(ADE20K_PANOPTIC_STUFF)
    return None


def infer_task(processor: EomtImageProcessor | None, extra: dict[str, Any], source: str) -> str:
    """Sliding-window processors mean semantic; otherwise a recorded task, then the checkpoint's name."""
    if processor is not None and processor.do_split_image:
        return "semantic"
    for hint in (processor.extra.get("task") if processor else None, extra.get("task")):
        if hint in TASKS:
            return hint
    name = os.path.basename(str(source).rstrip("/")).lower()
    for task in ("semantic", "instance", "panoptic"):
        if task in name:
            return task
    return "panoptic"


def processor_for_task(processor: EomtImageProcessor, task: str, crop: int) -> EomtImageProcessor:
    """The checkpoint's processor when it fits the task, else one set up for the task's inference mode."""
    settings = processor.to_dict()
    side = processor.size.get("shortest_edge", crop)
    if task == "semantic" and not processor.do_split_image:
        settings.update(size={"shortest_edge": side}, do_split_image=True, do_pad=False)
    elif task != "semantic" and (processor.do_split_image or not processor.do_pad):
        settings.update(size={"shortest_edge": side, "longest_edge": side}, do_split_image=False, do_pad=True)
    else:
        return processor
    return EomtImageProcessor.from_dict(settings)
