"""The models a service runs: one `Segmenter` per device its workers use, loaded and warmed up before the
service reports itself healthy."""

from __future__ import annotations

from PIL import Image

from ..predictor import Segmenter
from .options import DEFAULT_THRESHOLD, TASKS, ServeOptions, worker_devices


def load_replicas(options: ServeOptions) -> list[Segmenter]:
    """One segmenter per worker; workers on the same device share one (a model in inference mode can be run from
    several threads), so memory grows with devices, not workers."""
    import torch

    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = worker_devices(options.device, options.workers, cuda_count)
    loaded: dict[str, Segmenter] = {}
    for device in devices:
        if device not in loaded:
            loaded[device] = Segmenter.from_pretrained(options.model, device=device, dtype=options.dtype,
                                                       task=options.task, backend=options.backend)
            warm_up(loaded[device])
    return [loaded[device] for device in devices]


def warm_up(segmenter: Segmenter) -> None:
    """One prediction on a blank image of the model's input size, so that the first request does not pay for
    kernel selection and allocator growth."""
    height, width = segmenter.model.config.image_hw
    segmenter.predict(Image.new("RGB", (width, height), (128, 128, 128)))


def model_description(replicas: list[Segmenter], options: ServeOptions) -> dict:
    """What `GET /v1/model` answers: task, labels (id -> name, thing or stuff), input size, backend, dtype."""
    segmenter = replicas[0]
    stuff = set(segmenter.stuff_classes or [])
    height, width = segmenter.model.config.image_hw
    return {
        "model": options.model,
        "task": segmenter.task,
        "tasks": list(TASKS),
        "labels": {str(i): {"name": name, "isthing": i not in stuff} for i, name in sorted(segmenter.id2label.items())},
        "input_size": {"height": height, "width": width},
        "patch_size": segmenter.model.config.patch_size,
        "backend": options.backend,
        "dtype": options.dtype or "float32",
        "devices": sorted({str(r.device) for r in replicas}),
        "workers": options.workers,
        "max_batch_size": options.max_batch_size,
        "threshold": DEFAULT_THRESHOLD,
    }
