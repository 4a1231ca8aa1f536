"""`eomt predict VIDEO ...`: the video branch of `eomt predict` (VidEoMT; the work is `eomt.video.job`)."""

from __future__ import annotations

import argparse
import sys

# options of `eomt predict` that apply to images only, with the value meaning "not given"
_IMAGE_ONLY = {"batch_size": ("--batch-size", 1), "backend": ("--backend", None), "compile": ("--compile", False),
               "tile": ("--tile", None), "tile_overlap": ("--tile-overlap", None), "devices": ("--devices", 1),
               "num_nodes": ("--num-nodes", 1), "max_memory": ("--max-memory", None)}


def cmd_predict_video(args: argparse.Namespace) -> int:
    """Segment video files (or frame folders with --video); exit code 1 when any video failed or broke off."""
    from ..checkpoints.errors import CheckpointError
    from ..outputs.folders import check_writable_dir
    from ..video.job import predict_videos
    from ..video.sources import is_video_source
    from .checks import check_device
    from .errors import naming_model_flag

    images = [s for s in args.sources if not is_video_source(s, args.video)]
    if images:
        raise ValueError(f"{images[0]}: not a video, and videos and images cannot be mixed in one run: run "
                         "eomt predict once for the videos and once for the images")
    for attribute, (option, unset) in _IMAGE_ONLY.items():
        if getattr(args, attribute, unset) != unset:
            raise ValueError(f"{option} applies to images, not to videos (which run one frame at a time)")
    if args.dtype == "int8":
        raise ValueError("--dtype int8 applies to images (onnxruntime); videos run in float32, bfloat16 or float16")
    check_writable_dir(args.out)
    check_device(args.device)
    try:
        reports = predict_videos(args.sources, args.out, args.model, task=args.task, device=args.device,
                                 dtype=args.dtype, threshold=args.threshold, skip_existing=args.skip_existing,
                                 overwrite=args.overwrite, progress=not args.quiet, frame_folders=args.video)
    except CheckpointError as exc:
        raise naming_model_flag(exc) from None
    from .errors import to_command_line

    for report in reports:
        print(to_command_line(report.line(), getattr(args, "flags", {})), file=sys.stderr)
    return 1 if any(r.failed for r in reports) else 0
