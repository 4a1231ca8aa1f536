"""`eomt export`: a model as an ONNX file whose outputs under onnxruntime equal eager PyTorch's.

OUT is a directory holding everything a runtime needs, written under a temporary name and renamed
when complete (nothing half-written is ever left at OUT):

    model.onnx                 input `pixel_values` (batch, 3, H, W) float32, ImageNet-normalised;
                               outputs `class_queries_logits` (batch, Q, K+1) and
                               `masks_queries_logits` (batch, Q, H/4, W/4), float32
    config.json                the model config (labels, patch size, ...), as `save_pretrained` writes it
    preprocessor_config.json   the image processor
    export.json                how it was exported: size or dynamic, dtype, opset, torch version

The batch size is always free. A static file takes one height and width (default: the model's
training size); `dynamic=True` takes any height and width that are multiples of the patch size,
with the DINOv2 position embeddings resampled inside the graph by two matrix products equal to
torch's antialiased bicubic resize (see `modeling/embeddings.py`).

The processor config of a static file is that of its size (`fit_processor`): images are resized to
min(H, W) on the long side and padded to a square of that side (sliding windows of that side for
semantic processors), which a square file takes as it is; for a non-square file the runtime pads
that square up to H x W and crops the mask logits back (see `OnnxRuntimeModel`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..outputs.interrupts import cleanup_on_signals

ONNX_FILE = "model.onnx"
EXPORT_INFO_FILE = "export.json"
DTYPES = ("float32", "float16", "bfloat16", "int8")  # int8: see runtimes/quantize.py
MAX_SIDE_IN_PATCHES = 1024  # upper bound declared for dynamic height/width (16384 pixels at patch 16)


class ExportError(ValueError):
    """An export cannot be done or an exported file cannot be used; the message names what and why."""


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty OUT (unless `overwrite`) and an OUT whose parent cannot be written."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: directory exists and is not empty (pass `overwrite=True` to replace it)")
    parent = out.resolve().parent
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"{out}: cannot write here ({existing} is not a writable directory)")


def check_size(config, height: int | None, width: int | None, dynamic: bool) -> tuple[int, int]:
    """The example input size: the given one (multiples of the patch size) or the model's own."""
    p = config.patch_size
    if dynamic and (height or width):
        raise ExportError("give either `height`/`width` (a static file) or `dynamic=True`, not both")
    if (height is None) != (width is None):
        raise ExportError("give both `height` and `width`")
    if height is None:
        height, width = config.image_hw
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % p:
            raise ExportError(f"{name} {value} is not a positive multiple of the patch size {p}")
    return height, width


def is_export_dir(path: str | os.PathLike) -> bool:
    """`path` is a folder written by `export_onnx` (model.onnx and export.json)."""
    path = Path(path)
    return (path / ONNX_FILE).is_file() and (path / EXPORT_INFO_FILE).is_file()


def fit_processor(processor, height: int, width: int):
    """A copy of `processor` whose network inputs fit a static file of `height` x `width`: padded squares
    (or, for a sliding-window processor, windows) of side min(height, width)."""
    side = min(height, width)
    settings = processor.to_dict()
    if processor.do_split_image:
        settings["size"] = {"shortest_edge": side}
    else:  # padded inference; a processor without padding would give inputs of every size
        settings.update(size={"shortest_edge": side, "longest_edge": side}, do_pad=True)
    return type(processor).from_dict(settings)


def _logits_module(model):
    import torch

    class Logits(torch.nn.Module):
        """pixel_values -> (class_queries_logits, masks_queries_logits) in float32: the exported graph."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model(pixel_values, return_dict=True)
            return out.class_queries_logits.float(), out.masks_queries_logits.float()

    return Logits().eval()


def export_onnx(model, processor, out: str | os.PathLike, height: int | None = None, width: int | None = None,
                dynamic: bool = False, dtype: str = "float32", overwrite: bool = False,
                opset: int | None = None) -> Path:
    """Write `model` (an EomtForUniversalSegmentation) and `processor` to the directory `out` (see module doc).

    `model` itself is left as it is (a copy is cast when `dtype` differs from its own).
    """
    import copy

    import torch

    out = Path(out)
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    check_out_dir(out, overwrite)
    height, width = check_size(model.config, height, width, dynamic)
    compute = torch.float32 if dtype == "int8" else getattr(torch, dtype)  # int8 quantizes a float32 graph
    if model.dtype != compute:
        model = copy.deepcopy(model).to(compute)
    model.eval()
    model.mask_probs()  # the exporter bakes the probabilities read now (0 for a finished model)
    p = model.config.patch_size
    example = torch.randn(2, model.config.num_channels, height, width)  # batch 2: batch 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = {0: batch}
    if dynamic:
        shapes.update({2: p * torch.export.Dim("height_patches", min=1, max=MAX_SIDE_IN_PATCHES),
                       3: p * torch.export.Dim("width_patches", min=1, max=MAX_SIDE_IN_PATCHES)})
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.resolve().parent))
    with cleanup_on_signals(lambda: shutil.rmtree(tmp, ignore_errors=True)) as signals:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _logits_module(model), (example,), dynamo=True, opset_version=opset,
                input_names=["pixel_values"], output_names=["class_queries_logits", "masks_queries_logits"],
                dynamic_shapes={"pixel_values": shapes}, verbose=False)
        big = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > 1_800_000_000
        program.save(str(tmp / ONNX_FILE), external_data=big)  # protobuf holds at most 2 GB
        if dtype == "int8":
            _quantize_in_place(tmp, model.config, big)
        model.config.save_pretrained(tmp)
        (processor if dynamic else fit_processor(processor, height, width)).save_pretrained(tmp)
        info = {"format": "onnx", "dynamic": dynamic, "height": None if dynamic else height,
                "width": None if dynamic else width, "dtype": dtype, "patch_size": p,
                "opset": program.model.opset_imports.get("", None), "torch": torch.__version__}
        (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())
        signals.check()  # a Ctrl-C that torch's exporter caught and reported as its own error, or SIGTERM
        _replace_dir(tmp, out)
    return out


def _quantize_in_place(folder: Path, config, external_data: bool) -> None:
    from .quantize import quantize_encoder

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError("`dtype='int8'` quantizes with onnxruntime: pip install 'eomt[onnx]'") from None
    source = folder / ONNX_FILE
    float_dir = folder / "float32"
    float_dir.mkdir()
    for path in folder.iterdir():  # the float graph and any external weight files it wrote
        if path.is_file():
            path.rename(float_dir / path.name)
    quantize_encoder(float_dir / ONNX_FILE, source, config.num_hidden_layers, config.num_blocks, external_data)
    shutil.rmtree(float_dir)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished directory into place; an old OUT is removed only once the new one is complete."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def read_export_info(directory: Path) -> dict[str, Any]:
    path = Path(directory) / EXPORT_INFO_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read export info ({exc})") from None
