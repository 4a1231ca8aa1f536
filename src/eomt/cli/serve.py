"""`eomt serve`: its arguments, and the command that checks them and runs the service (`eomt.serve`)."""

from __future__ import annotations

import argparse
import math
import os

from .checks import _number, device_name, positive_int

API_KEY_VARIABLE = "EOMT_API_KEY"


def _seconds(text: str) -> float:
    value = _number(text, float, "seconds")
    if not math.isfinite(value) or not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be seconds in [0, 60], got {text!r}")
    return value


def _megabytes(text: str) -> float:
    value = _number(text, float, "megabytes")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of megabytes, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _number(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: a free port), got {value}")
    return value


def add_serve_parser(sub: argparse._SubParsersAction, default_model: str, dtype_choices: list[str],
                     dtype_help: str) -> None:
    serve = sub.add_parser(
        "serve", help="run an HTTP segmentation service with a demo page",
        description="Serve MODEL over HTTP: POST /v1/segment (the image as the body or the multipart field "
                    "`image`; ?task=&threshold=&format=json|hf|png), GET /v1/model, /health, /metrics (Prometheus) "
                    "and / (a demo page). Concurrent requests are batched onto the model; a full queue answers 503 "
                    "with Retry-After. SIGTERM finishes the requests in flight and exits 0. Needs pip install "
                    "'eomt[serve]'.")
    serve.add_argument("model", metavar="MODEL",
                       help=f"hub id, transformers-format directory, checkpoint file or `eomt export` directory "
                            f"(e.g. {default_model})")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for all)")
    serve.add_argument("--port", type=_port, default=8000, help="default: 8000; 0 picks a free port")
    serve.add_argument("--task", "-t", choices=["semantic", "instance", "panoptic"],
                       help="the task of requests that name none (default: the checkpoint's)")
    serve.add_argument("--device", "-d", type=device_name,
                       help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    serve.add_argument("--dtype", choices=dtype_choices, help=dtype_help)
    serve.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                       help="torch (default) or onnxruntime (MODEL an `eomt export` directory or any model, exported "
                            "once into the cache; needs 'eomt[onnx]')")
    serve.add_argument("--max-batch-size", type=positive_int, default=8, metavar="N",
                       help="most images per forward pass (default: 8; 1 turns batching off)")
    serve.add_argument("--batch-timeout", type=_seconds, default=0.01, metavar="SECONDS",
                       help="how long the first request of a batch waits for others (default: 0.01)")
    serve.add_argument("--workers", type=positive_int, default=1, metavar="N",
                       help="model workers taking batches from the queue (default: 1); with --device cuda, worker "
                            "i runs on cuda:i (one model per GPU)")
    serve.add_argument("--max-queue", type=positive_int, default=64, metavar="N",
                       help="requests waiting or being segmented at once; more are answered 503 (default: 64)")
    serve.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_VARIABLE),
                       help=f"require Authorization: Bearer KEY on every request but /health and the demo page's "
                            f"files (default: ${API_KEY_VARIABLE}, which keeps the key out of the process list)")
    serve.add_argument("--max-image-pixels", type=positive_int, default=40_000_000, metavar="P",
                       help="larger images are refused with 413 before they are decoded (default: 40000000)")
    serve.add_argument("--max-body-mb", type=_megabytes, default=20.0, metavar="M",
                       help="larger request bodies are refused with 413 (default: 20)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Check the arguments and the serve extra, then serve until SIGTERM / Ctrl-C."""
    from .checks import check_device, check_runtime

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"eomt serve needs the serve extra ({exc.name} is missing): pip install 'eomt[serve]'") \
            from None
    check_device(args.device)
    check_runtime(args.dtype, args.backend)
    from ..serve.options import ServeOptions
    from ..serve.server import serve

    options = ServeOptions(model=args.model, host=args.host, port=args.port, task=args.task, device=args.device,
                           dtype=args.dtype, backend=args.backend, max_batch_size=args.max_batch_size,
                           batch_timeout=args.batch_timeout, workers=args.workers, api_key=args.api_key,
                           max_image_pixels=args.max_image_pixels, max_body_mb=args.max_body_mb,
                           max_queue=args.max_queue)
    return serve(options.check())
