"""The `eomt` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..checkpoints.errors import CheckpointError
from .checks import (
    OneLineParser,
    device_name,
    memory_size,
    non_negative_int,
    positive_int,
    probability,
    tile_overlap,
)
from .errors import naming_model_flag

# Heavy modules (torch and everything built on it) are imported inside each command, so that
# `eomt --help` and argument errors answer at once.

DEFAULT_MODEL = "tue-mps/coco_panoptic_eomt_large_640"
DEFAULT_VIDEO_MODEL = "tue-mps/videomt-dinov2-small-ytvis2019"  # eomt.video.segmenter's (a test checks)
# The choices of `eomt eval --dataset`; equal to eomt.data.DATASET_KINDS (a test checks), kept here so that
# building the parser does not import the readers (and torch).
DATASET_KINDS = ("coco_panoptic", "coco_instance", "ade20k_semantic", "ade20k_panoptic", "cityscapes_semantic",
                 "custom")


def _parse_override(text: str) -> tuple[str, object]:
    """`key=value` with value parsed as JSON when it can be (numbers, booleans), else kept as a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _describe(config) -> list[str]:
    import torch

    from ..modeling.eomt import EomtForUniversalSegmentation

    video = config.model_type == "videomt"
    if video:
        from ..modeling.videomt import VideomtForUniversalSegmentation as network
    else:
        network = EomtForUniversalSegmentation
    with torch.device("meta"):
        params = sum(p.numel() for p in network(config).parameters())
    backbone = "DINOv3" if config.is_dinov3 else "DINOv2 with registers"
    mlp = ("gated MLP" if config.use_gated_mlp else "MLP") if config.is_dinov3 else (
        "SwiGLU MLP" if config.use_swiglu_ffn else "GELU MLP")
    h, w = config.image_hw
    return [
        f"backbone     {backbone}, {config.num_hidden_layers} blocks, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, {mlp}",
        f"input        {h}x{w} (patch {config.patch_size}; any multiple of the patch size runs)",
        f"queries      {config.num_queries}, in the last {config.num_blocks} blocks"
        + (", carried from frame to frame (VidEoMT, video)" if video else ""),
        f"registers    {config.num_register_tokens}",
        f"classes      {config.num_labels} (+ no-object)",
        f"parameters   {params / 1e6:.1f}M",
    ]


def cmd_info(args: argparse.Namespace) -> int:
    """Architecture of a checkpoint; reads only config.json for directories and hub ids."""
    from ..checkpoints.load import load_checkpoint_file
    from ..config import ConfigError, EomtConfig, VideomtConfig

    path = Path(args.source)
    try:
        config = load_checkpoint_file(path)[0] if path.is_file() else EomtConfig.from_pretrained(args.source)
    except ConfigError as exc:
        if "VidEoMT" not in str(exc) or path.is_file():
            raise
        config = VideomtConfig.from_pretrained(args.source)
    print(f"{args.source}")
    for line in _describe(config):
        print(f"  {line}")
    names = list(config.id2label.values())
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    print(f"  labels       {shown}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Any supported checkpoint -> a transformers-format directory (config.json + model.safetensors, and the
    source's preprocessor_config.json); the folder is written whole or not at all."""
    from ..jobs.convert import convert

    written = convert(args.source, args.out, dict(args.overrides or []), overwrite=args.overwrite)
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Segment image files and write standard result files; non-zero exit when any image failed."""
    from ..jobs.predict import predict_folder
    from ..outputs.folders import check_writable_dir
    from ..video.sources import is_video_source
    from .checks import check_device, check_runtime

    if any(is_video_source(source, args.video) for source in args.sources):  # VidEoMT: see eomt.cli.video
        from .video import cmd_predict_video

        return cmd_predict_video(args)
    check_writable_dir(args.out)
    check_device(args.device)
    _resolve_backend(args)
    check_runtime(args.dtype, args.backend, args.compile)
    threshold = 0.8 if args.threshold is None else args.threshold
    try:
        summary = predict_folder(args.sources, args.out, args.model or DEFAULT_MODEL, task=args.task,
                                 devices=args.devices, num_nodes=args.num_nodes, device=args.device, dtype=args.dtype,
                                 batch_size=args.batch_size, num_workers=args.num_workers, threshold=threshold,
                                 skip_existing=args.skip_existing, overwrite=args.overwrite, progress=not args.quiet,
                                 backend=args.backend, compile=args.compile, tile=args.tile,
                                 tile_overlap=args.tile_overlap, max_memory=args.max_memory)
    except CheckpointError as exc:
        raise naming_model_flag(exc) from None
    if summary.rank == 0:
        from .errors import to_command_line

        print(to_command_line("\n".join(summary.lines()), getattr(args, "flags", {})), file=sys.stderr)
    return 1 if summary.failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on a dataset, or score prediction files that already exist."""
    from ..evaluation.report import format_table
    from ..evaluation.runner import evaluate, evaluate_predictions, strict_json
    from ..outputs.folders import check_writable_dir
    from .checks import check_device, check_runtime

    if args.out:
        check_writable_dir(args.out)
    check_device(args.device)
    _resolve_backend(args)
    check_runtime(args.dtype, args.backend, args.compile)
    if args.predictions:
        from ..data import DatasetError

        try:
            result = evaluate_predictions(args.predictions, args.data, args.dataset, task=args.task,
                                          split=args.split, label_ids=args.label_ids)
        except DatasetError as exc:  # the function's keyword is this command's flag
            raise DatasetError(str(exc).replace("label_ids=True", "--label-ids")) from None
        if args.out:
            from ..evaluation.runner import check_eval_out
            from ..outputs.atomic import write_json_atomic
            from ..outputs.lock import is_eomt_output, output_lock

            out = Path(args.out)
            ours = out.is_dir() and is_eomt_output(out)
            with output_lock(out, "eomt eval"):
                check_eval_out(out, [], ours, args.overwrite)
                write_json_atomic(out / "metrics.json", strict_json(result))
    else:
        try:
            result = evaluate(args.model, args.data, args.dataset, task=args.task, split=args.split,
                              batch_size=args.batch_size, device=args.device, dtype=args.dtype, out=args.out,
                              limit=args.limit, progress=not args.quiet, backend=args.backend, compile=args.compile,
                              devices=args.devices, num_nodes=args.num_nodes, tile=args.tile,
                              tile_overlap=args.tile_overlap, max_memory=args.max_memory,
                              overwrite=args.overwrite)
        except CheckpointError as exc:
            raise naming_model_flag(exc) from None
    if _is_main_process():
        print(format_table(result, per_class=args.per_class))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train or fine-tune with a recipe; the final model lands in OUT/final (transformers format)."""
    from ..training.errors import TrainingError
    from ..training.recipe import load_recipe
    from ..training.run_folder import prepare_run_folder

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.out:
        overrides.append(f"train.out={args.out}")
    recipe = load_recipe(args.recipe, overrides)
    if not recipe.data.path:
        raise TrainingError("no data path: pass --data PATH or set data.path in the recipe")
    if not Path(recipe.data.path).exists():
        raise TrainingError(f"{recipe.data.path}: dataset path does not exist (--data / data.path)")
    from ..outputs.folders import check_writable_dir
    from ..outputs.lock import main_process_by_environment, output_lock
    from ..training.trainer import Trainer, scored_on

    check_writable_dir(recipe.train.out, "train.out")  # before the lock creates it

    # one run per folder: a second `eomt train` into it (or its --overwrite) would remove this one's files
    with output_lock(recipe.train.out, "eomt train", enabled=main_process_by_environment(), option="train.out"):
        prepare_run_folder(recipe.train.out, resume=args.resume, overwrite=args.overwrite)
        summary = Trainer(recipe, progress=not args.quiet).fit(resume=args.resume)
    if summary.get("nothing_to_do"):
        print(f"nothing to do: {Path(recipe.train.out) / 'last.ckpt'} is at step {summary['steps']} of "
              f"{summary['total']}, the run is complete ({summary['final']}); to train on, raise train.max_steps "
              "or train.epochs")
        return 0
    if summary.get("exported_only"):
        print(f"{Path(recipe.train.out) / 'last.ckpt'} is at step {summary['steps']} of {summary['total']}: no step "
              f"to train; wrote the final model to {summary['final']}")
        return 0
    if summary["final"]:
        best = summary["best"]
        extra = (f"; best val {best['metric']} {best['score']:.2f} at step {best['step']} {scored_on(best)}"
                 if best else "")
        print(f"trained {summary['steps']} steps -> {summary['final']}{extra}")
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    """Write the synthetic shapes dataset (COCO panoptic layout) for the offline quick start."""
    from ..training.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                                  overwrite=args.overwrite)
    print(f"wrote {args.train} train and {args.val} val images to {root} (COCO panoptic layout)")
    return 0


DTYPE_CHOICES = ["float32", "bfloat16", "float16", "int8"]
DTYPE_HELP = ("model precision (default: float32); int8 (with --backend onnxruntime, CPU): the encoder blocks "
              "before the queries in int8, 0.4%% of pixels changed segment in our benchmark")


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["torch", "onnxruntime"],
                        help="torch or onnxruntime: --model is then an `eomt export` directory, or any model, "
                             "exported once into the cache (needs pip install 'eomt[onnx]'); default: onnxruntime "
                             "when --model is an `eomt export` directory, else torch")
    parser.add_argument("--compile", action="store_true",
                        help="run the torch model through torch.compile (max-autotune on CUDA)")


def _resolve_backend(args: argparse.Namespace) -> None:
    """--backend's default: onnxruntime for a folder `eomt export` wrote, torch for anything else."""
    if args.backend is None:
        from ..runtimes.export import is_export_dir

        args.backend = "onnxruntime" if args.model and is_export_dir(args.model) else "torch"


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=positive_int, default=1,
                        help="processes per node, one per GPU (or CPU processes); each takes a disjoint share of "
                             "the images (default: 1)")
    parser.add_argument("--num-nodes", type=positive_int, default=1,
                        help="machines, for torchrun / SLURM launches as in training (default: 1)")


def _add_tile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=positive_int, metavar="SIZE",
                        help="segment at native resolution: overlapping SIZE x SIZE pixel windows, each resized to "
                             "the model's input size, merged into one full-resolution result")
    parser.add_argument("--tile-overlap", type=tile_overlap, metavar="F",
                        help="with --tile: the fraction of a window its neighbours overlap, in [0, 0.9) "
                             "(default: 0.25)")
    parser.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                        help="memory one image's full-resolution post-processing may use, e.g. 2GB or 512MiB "
                             "(default: from the free RAM / GPU memory); it sizes the work, never the result")


def _tiling_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the --tile options of a parsed command line, if anything (a usage error)."""
    if getattr(args, "tile_overlap", None) is not None and args.tile is None:
        return "--tile-overlap needs --tile SIZE"
    if getattr(args, "tile", None) is not None and getattr(args, "predictions", None):
        return "--tile applies to running a model (--model), not to scoring --predictions files"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="eomt", description="EoMT: Encoder-only Mask Transformer segmentation models.")
    parser.add_argument("--version", action="version", version=f"eomt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="show a checkpoint's architecture",
                          description="Show the architecture, size and labels of a checkpoint. SOURCE is a hub "
                                      "id (only config.json is fetched), a transformers-format directory, or an "
                                      "authors' checkpoint file (.bin/.ckpt), whose config is inferred.")
    info.add_argument("source", metavar="SOURCE")
    info.set_defaults(func=cmd_info)

    convert = sub.add_parser("convert", help="convert a checkpoint to transformers format",
                             description="Load SOURCE (hub id, transformers directory, or an authors' .bin/.ckpt "
                                         "file) and write it to OUT as config.json + model.safetensors, which both "
                                         "eomt and transformers load.")
    convert.add_argument("source", metavar="SOURCE")
    convert.add_argument("out", metavar="OUT", help="output directory (created if missing)")
    convert.add_argument("--set", dest="overrides", metavar="KEY=VALUE", type=_parse_override, action="append",
                         help="config override, e.g. --set num_attention_heads=6 (repeatable)")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT when it already holds files")
    convert.set_defaults(func=cmd_convert)

    predict = sub.add_parser(
        "predict", help="segment images and write result files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment images with an EoMT model. For each image <stem> it writes to --out:\n"
                    "  semantic: <stem>.png     label map of class ids (8-bit, 16-bit when > 255 classes)\n"
                    "  panoptic: <stem>.png     COCO panoptic PNG (id = R + 256 G + 256^2 B; 0 = void)\n"
                    "            <stem>.json    segments_info (id, category_id, area, bbox, score) + labels\n"
                    "  instance: <stem>.json    COCO results (category_id, RLE segmentation, bbox, score)\n"
                    "  all:      <stem>_overlay.jpg  the image with coloured masks, outlines and class names\n"
                    "Output files mirror the images' folders relative to the deepest folder holding every SOURCE\n"
                    "(a/IMG_1.jpg, b/IMG_1.jpg -> OUT/a/IMG_1.png, OUT/b/IMG_1.png; x.jpg + x.png -> x_jpg, x_png).\n"
                    "Unreadable images are reported and skipped; the exit code is 1 when any image failed.\n"
                    "Video files (.mp4, .mkv, .mov, .avi, .webm, ...; folders of frames with --video) are segmented\n"
                    "by a VidEoMT model frame by frame, ids tracked: OUT/<name>.json (instance: YouTube-VIS results;\n"
                    "panoptic: VIPSeg-style), per-frame files in OUT/<name>/, OUT/<name>_overlay.mp4.\n"
                    "OUT/summary.json counts done / skipped / failed images (with reasons) and images/s.\n"
                    "OUT holds .eomt-lock while the job runs: a second job into OUT refuses. Folders are searched\n"
                    "through symbolic links, leaving out eomt's own output folders; non-image files are counted.\n"
                    "Many GPUs or nodes: --devices N (and --num-nodes; torchrun and SLURM launches are picked up).")
    predict.add_argument("sources", metavar="SOURCE", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--model", "-m",
                         help=f"hub id, transformers-format directory or checkpoint file (default: {DEFAULT_MODEL}; "
                              f"videos: {DEFAULT_VIDEO_MODEL})")
    predict.add_argument("--task", "-t", choices=["semantic", "instance", "panoptic"],
                         help="default: the checkpoint's task")
    predict.add_argument("--out", "-o", default="predictions", help="output directory (default: predictions)")
    predict.add_argument("--device", "-d", type=device_name,
                         help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    predict.add_argument("--dtype", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    predict.add_argument("--batch-size", "-b", type=positive_int, default=1,
                         help="images per forward pass (default: 1)")
    _add_runtime_arguments(predict)
    predict.add_argument("--threshold", type=probability,
                         help="minimum segment score for instance / panoptic (default: 0.8; videos: instance 0.5, "
                              "panoptic 0.8)")
    predict.add_argument("--video", action="store_true",
                         help="a folder SOURCE is one video, its images the frames in file-name order (video files "
                              "are recognised by their suffix)")
    _add_tile_arguments(predict)
    predict.add_argument("--num-workers", "-j", type=non_negative_int, default=2,
                         help="image-decoding worker processes per process (default: 2; 0 decodes in the process)")
    _add_process_options(predict)
    resume = predict.add_mutually_exclusive_group()
    resume.add_argument("--skip-existing", action="store_true",
                        help="continue an interrupted run: images whose result files all exist are skipped")
    resume.add_argument("--overwrite", action="store_true", help="replace result files that already exist")
    predict.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)

    evaluation = sub.add_parser(
        "eval", help="compute mIoU / PQ / mask AP on a dataset",
        description="Run a model over a dataset and print the task's metrics (semantic: mIoU; panoptic: PQ, SQ, RQ "
                    "for all / things / stuff; instance: COCO mask AP with pycocotools). With --predictions, score "
                    "prediction files that already exist without a model: a folder written by `eomt predict` "
                    "(the model's label ids) or `eomt eval --out` (dataset category ids) records which ids its "
                    "JSON files hold and needs no flag; other folders hold dataset category ids unless "
                    "--label-ids. Dataset folders or the original zip archives both work.")
    source = evaluation.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", "-m", help="hub id, transformers-format directory or checkpoint file")
    source.add_argument("--predictions", "-p", metavar="DIR", help="score the prediction files in DIR")
    evaluation.add_argument("--data", required=True, metavar="PATH", help="dataset root (folder or zip archives)")
    evaluation.add_argument("--dataset", required=True, choices=DATASET_KINDS, help="dataset layout")
    evaluation.add_argument("--task", "-t", choices=["semantic", "instance", "panoptic"],
                            help="default: the dataset's task")
    evaluation.add_argument("--split", default="val", help="dataset split (default: val)")
    evaluation.add_argument("--out", "-o", help="write metrics.json (and, with --model, the prediction files) here")
    evaluation.add_argument("--device", "-d", type=device_name, help="cpu, cuda, ... (default: cuda when available)")
    evaluation.add_argument("--dtype", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    evaluation.add_argument("--batch-size", "-b", type=positive_int, default=1,
                            help="images per forward pass (default: 1)")
    _add_runtime_arguments(evaluation)
    _add_tile_arguments(evaluation)
    evaluation.add_argument("--limit", type=positive_int, help="evaluate the first N images only")
    evaluation.add_argument("--label-ids", action="store_true", default=None,
                            help="with --predictions, for a folder that eomt did not write: its JSON files hold "
                                 "the model's label ids 0..K-1, not dataset category ids (folders of `eomt predict` "
                                 "and `eomt eval --out` say which they hold)")
    evaluation.add_argument("--per-class", action="store_true", help="also print the per-class metric")
    evaluation.add_argument("--overwrite", action="store_true",
                            help="replace an earlier evaluation in --out (only files eomt wrote are replaced)")
    _add_process_options(evaluation)
    evaluation.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    evaluation.set_defaults(func=cmd_eval)

    from .export import add_export_parser

    add_export_parser(sub, DEFAULT_MODEL)

    from .serve import add_serve_parser

    add_serve_parser(sub, DEFAULT_MODEL, DTYPE_CHOICES, DTYPE_HELP)

    from ..training.recipe import available_recipes

    train = sub.add_parser(
        "train", help="train or fine-tune with a recipe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train with the EoMT recipe (mask annealing, layer-wise lr decay, two-stage warmup + poly).\n"
                    "RECIPE is a preset name or a YAML file; KEY=VALUE pairs override it, e.g. train.lr=2e-4\n"
                    "train.devices=2 model.config.num_queries=100 (an unknown key is an error).\n"
                    "Writes OUT/last.ckpt (resumable), OUT/best.ckpt, OUT/logs/version_N/metrics.csv and OUT/final/\n"
                    "(config.json + model.safetensors + preprocessor_config.json, for eomt predict and transformers).\n"
                    "Multi-GPU: set train.devices (and train.num_nodes); torchrun and SLURM launches are picked up.\n\n"
                    "presets: " + ", ".join(available_recipes()))
    train.add_argument("--recipe", "-r", required=True, help="preset name or YAML file")
    train.add_argument("--data", help="dataset root (sets data.path)")
    train.add_argument("--out", "-o", help="run directory (sets train.out)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt (which must exist)")
    train.add_argument("--overwrite", action="store_true",
                       help="start afresh in a run folder that holds an earlier run (its checkpoints are removed)")
    train.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    train.set_defaults(func=cmd_train)

    synthetic = sub.add_parser("synthetic", help="write the synthetic shapes dataset for the offline quick start",
                               description="Write a small synthetic panoptic dataset (shapes over textured stuff, "
                                           "COCO panoptic layout) to OUT.")
    synthetic.add_argument("out", metavar="OUT")
    synthetic.add_argument("--train", type=non_negative_int, default=300, help="training images (default: 300)")
    synthetic.add_argument("--val", type=non_negative_int, default=50, help="validation images (default: 50)")
    synthetic.add_argument("--seed", type=non_negative_int, default=0)
    synthetic.add_argument("--overwrite", action="store_true", help="replace OUT when it already holds files")
    synthetic.set_defaults(func=cmd_synthetic)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 success, 1 an error (one line on stderr), 2 a usage error, 130 interrupted."""
    from .errors import command_flags, command_parser, run_command

    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _tiling_usage(args)
    if problem:
        OneLineParser(prog=f"eomt {args.command}").error(problem)
    sub = command_parser(parser, args.command)
    args.flags = command_flags(sub) if sub is not None else {}  # for lines the command prints itself
    return run_command(args.command, args.func, args, args.flags)


if __name__ == "__main__":
    sys.exit(main())
