"""An exported model (see `eomt.runtimes.export`) run by onnxruntime, behind the interface `Segmenter` uses.

`OnnxRuntimeModel(directory, device)` is called like the torch model (`model(pixel_values)` ->
an `EomtOutput` with class and mask logits) and carries its `config`, `device` and `dtype`.
A static file takes inputs up to its size: smaller ones (the padded squares of a non-square file's
processor) are padded bottom and right with the normalised value of a black pixel, as the processor
pads, and the mask logits are cropped back to the input's extent.
On CUDA it uses onnxruntime's TensorRT and CUDA execution providers when they are installed.
`cached_export(source)` exports a model once and reuses the file afterwards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor

from ..config import EomtConfig
from ..modeling.eomt import EomtOutput
from .export import ONNX_FILE, ExportError, export_onnx, read_export_info


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("the onnxruntime backend needs the onnx extra: pip install 'eomt[onnx]'") from None
    return onnxruntime


def providers_for(device: torch.device, available: list[str]) -> list[str]:
    """Execution providers in order of preference for `device`, among those installed."""
    wanted = ["CPUExecutionProvider"]
    if device.type == "cuda":
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", *wanted]
    return [p for p in wanted if p in available]


class OnnxRuntimeModel:
    """An exported directory (model.onnx + config.json + export.json) ready to run."""

    def __init__(self, directory: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        ort = _import_onnxruntime()
        directory = Path(directory)
        path = directory / ONNX_FILE
        if not path.is_file():
            raise ExportError(f"{path}: no such file (export one with `eomt export MODEL {directory}`)")
        self.info = read_export_info(directory)
        self.config = EomtConfig.from_pretrained(directory)
        self._pad_value = _black(directory)
        self.device = torch.device(device)
        self.dtype = torch.float32  # the graph takes and returns float32, whatever it computes in
        providers = providers_for(self.device, ort.get_available_providers())
        if self.device.type == "cuda" and providers == ["CPUExecutionProvider"]:
            raise ExportError("device cuda asked for, but this onnxruntime has no CUDA provider "
                              "(pip install onnxruntime-gpu) ")
        options = ort.SessionOptions()
        # worker threads sleep as soon as a run ends instead of spinning for more work: spinning threads
        # take the cores from the post-processing that follows each run (1.8x slower post-processing on CPU)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{path}: not a usable ONNX model ({reason})") from None

    def eval(self) -> OnnxRuntimeModel:
        return self

    def mask_probs(self) -> list[float]:
        return []  # baked into the graph at export

    def _check(self, pixel_values: Tensor) -> None:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        p = self.config.patch_size
        if not self.info.get("dynamic") and (height > self.info["height"] or width > self.info["width"]):
            raise ValueError(f"input size {height}x{width}: this ONNX file was exported for at most "
                             f"{self.info['height']}x{self.info['width']} (an export with dynamic shapes, "
                             "`eomt export --dynamic`, takes any size)")
        if height % p or width % p:
            raise ValueError(f"input size {height}x{width} is not a multiple of the patch size {p}")

    def __call__(self, pixel_values: Tensor, patch_offsets: list[Tensor] | None = None, **_: object) -> EomtOutput:
        self._check(pixel_values)
        pixels = pixel_values.detach().to("cpu", torch.float32)
        height, width = pixels.shape[-2:]
        full = (height, width) if self.info.get("dynamic") else (self.info["height"], self.info["width"])
        if (height, width) != full:  # a smaller input of a static file: pad as the processor pads
            canvas = self._pad_value.view(1, -1, 1, 1).expand(pixels.shape[0], -1, *full).clone()
            canvas[..., :height, :width] = pixels
            pixels = canvas
        class_logits, mask_logits = self.session.run(None, {"pixel_values": pixels.contiguous().numpy()})
        masks = torch.from_numpy(mask_logits)
        if (height, width) != full:  # the mask grid is the input's at a fixed stride: crop to the input's extent
            masks = masks[..., :masks.shape[-2] * height // full[0], :masks.shape[-1] * width // full[1]]
        return EomtOutput(class_queries_logits=torch.from_numpy(class_logits).to(self.device),
                          masks_queries_logits=masks.contiguous().to(self.device), patch_offsets=patch_offsets)


def _black(directory: Path) -> Tensor:
    """The per-channel value a black pixel has after the folder's processor normalises it (its padding)."""
    from ..processing.image_processor import EomtImageProcessor

    try:
        processor = EomtImageProcessor.from_pretrained(directory)
    except (ValueError, OSError):
        processor = EomtImageProcessor()
    if processor.do_normalize:  # (0 - mean * scale) / (std * scale), whatever the rescale factor
        return -torch.tensor(processor.image_mean, dtype=torch.float32) / torch.tensor(processor.image_std)
    return torch.zeros(len(processor.image_mean), dtype=torch.float32)


def cache_root() -> Path:
    """`$EOMT_CACHE`, else `$XDG_CACHE_HOME/eomt`, else `~/.cache/eomt`."""
    if os.environ.get("EOMT_CACHE"):
        return Path(os.environ["EOMT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eomt"


def _identity(source: str | os.PathLike, dtype: str) -> str:
    """What makes an export reusable: the source's files (path, size, mtime) or hub snapshot, dtype, versions."""
    from .. import __version__

    parts = [str(dtype), torch.__version__, __version__]
    path = Path(source)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts += [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    else:  # a hub id: its snapshot folder names the commit
        from ..checkpoints.resolve import resolve_file

        parts.append(str(resolve_file(source, "config.json").parent))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_export(source: str | os.PathLike, dtype: str = "float32") -> Path:
    """A dynamic-size ONNX export of `source`, made on first use and kept in the cache."""
    directory = cache_root() / "onnx" / _identity(source, dtype)
    if (directory / ONNX_FILE).is_file():
        return directory
    from ..modeling.eomt import EomtForUniversalSegmentation
    from ..processing.image_processor import EomtImageProcessor

    model = EomtForUniversalSegmentation.from_pretrained(source)
    try:
        processor = EomtImageProcessor.from_pretrained(source)
    except (ValueError, OSError):
        processor = EomtImageProcessor()
    return export_onnx(model, processor, directory, dynamic=True, dtype=dtype, overwrite=True)
