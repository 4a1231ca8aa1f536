"""`eomt export`: its arguments, and the command that checks them, loads the model and writes the ONNX folder
(`eomt.runtimes.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runtimes.export import DTYPES  # the runtime module imports only the standard library at the top


def add_export_parser(sub: argparse._SubParsersAction, default_model: str) -> None:
    export = sub.add_parser(
        "export", help="export a model to ONNX",
        description="Export MODEL (hub id, transformers-format directory or checkpoint file) to the directory "
                    "OUT: model.onnx + config.json + preprocessor_config.json + export.json. The batch size is "
                    "free; the image size is fixed (--height/--width, default the model's) or, with --dynamic, "
                    "any multiple of the patch size. onnxruntime reproduces eager PyTorch's logits (1e-4).")
    export.add_argument("model", metavar="MODEL",
                        help=f"hub id, transformers-format directory or checkpoint file (e.g. {default_model})")
    export.add_argument("out", metavar="OUT", help="output directory (must not exist or be empty)")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="default: onnx")
    export.add_argument("--height", type=int, help="input height of a static file (multiple of the patch size)")
    export.add_argument("--width", type=int, help="input width of a static file (multiple of the patch size)")
    export.add_argument("--dynamic", action="store_true", help="any height and width (multiples of the patch size)")
    export.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="weights and compute precision inside the graph (default: float32; inputs and "
                             "outputs stay float32). int8: the blocks before the queries join have int8 linear "
                             "layers, the rest float32 (CPU onnxruntime; 0.4%% of pixels changed segment in our "
                             "benchmark)")
    export.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model; every check on the arguments runs before the model is loaded."""
    from ..checkpoints.errors import CheckpointError
    from ..runtimes.export import ONNX_FILE, ExportError, check_out_dir, check_size, export_onnx

    out = Path(args.out)
    check_out_dir(out, args.overwrite)
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        if args.dtype == "int8":
            import onnxruntime  # noqa: F401  (the quantizer)
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'eomt[onnx]'") from None
    from ..config import EomtConfig
    from ..modeling.eomt import EomtForUniversalSegmentation
    from ..processing.image_processor import EomtImageProcessor

    source = Path(args.model)
    try:
        if not source.is_file():  # a directory or hub id: check the size against its config before loading weights
            check_size(EomtConfig.from_pretrained(args.model), args.height, args.width, args.dynamic)
        model = EomtForUniversalSegmentation.from_pretrained(args.model)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (MODEL must be a hub id, a model directory or a checkpoint file)") from None
    try:
        processor = EomtImageProcessor.from_pretrained(args.model)
    except (ValueError, OSError):  # no preprocessor_config.json (e.g. an authors' checkpoint file)
        processor = EomtImageProcessor()
    export_onnx(model, processor, out, args.height, args.width, args.dynamic, args.dtype, args.overwrite, args.opset)
    height, width = check_size(model.config, args.height, args.width, False) if not args.dynamic else (0, 0)
    size = f"any multiple of {model.config.patch_size} (dynamic)" if args.dynamic else f"{height}x{width}"
    print(f"wrote {out}/{ONNX_FILE} (input size {size}, {args.dtype}) and its config files")
    return 0
