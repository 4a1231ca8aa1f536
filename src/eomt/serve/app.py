"""The HTTP routes of `eomt serve` (FastAPI): /health, /v1/model, /v1/segment, /metrics and the demo page.

Every error is a JSON body `{"error": "one line"}` with its status. The API key (when set) guards everything but
/health and the demo page's files (the page asks for the key and sends it with its requests).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import QueueFull
from .decoding import RequestError, check_content_type, check_length, decode_image, image_bytes, too_large
from .metrics import CONTENT_TYPE_LATEST
from .options import DEFAULT_THRESHOLD, FORMATS, TASKS
from .responses import segmentation_png, to_hf, to_json
from .service import Service

STATIC = Path(__file__).resolve().parent / "static"
QUERY_PARAMETERS = ("task", "threshold", "format")
PUBLIC = ("/health", "/", "/static")  # answered without the API key
ENDPOINTS = ("/health", "/v1/model", "/v1/segment", "/metrics", "/", "/static")
RETRY_AFTER_LOADING_S = "5"
RETRY_AFTER_FULL_S = "1"
CLIENT_CLOSED = 499  # recorded for requests whose client left before the answer (nginx's convention)


def endpoint_of(path: str) -> str:
    """The metrics label of a request path: one of ENDPOINTS, or "other" (unknown paths must not add labels)."""
    if path.startswith("/static/"):
        return "/static"
    return path if path in ENDPOINTS else "other"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Gate:
    """ASGI middleware: the API key check, and requests counted by endpoint and status with their latency."""

    def __init__(self, app, service: Service) -> None:
        self.app = app
        self.service = service
        key = service.options.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    def _authorized(self, scope) -> bool:
        given = next((value for name, value in scope.get("headers", []) if name == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_of(scope["path"])
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.expected is not None and endpoint not in PUBLIC and not self._authorized(scope):
                response = error(401, "missing or wrong API key: send the header Authorization: Bearer KEY",
                                 {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(endpoint, str(status["code"])).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def parse_query(params, default_task: str) -> tuple[str, float, str]:
    """task, threshold and format of a segment request; 422 for anything else or a value out of range."""
    unknown = sorted(set(params) - set(QUERY_PARAMETERS))
    if unknown:
        raise RequestError(422, f"unknown query parameter {unknown[0]!r} (expected {', '.join(QUERY_PARAMETERS)})")
    task = params.get("task", default_task)
    if task not in TASKS:
        raise RequestError(422, f"task={task!r}: expected one of {', '.join(TASKS)}")
    text = params.get("threshold", str(DEFAULT_THRESHOLD))
    try:
        threshold = float(text)
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise RequestError(422, f"threshold={text!r}: expected a number in [0, 1]")
    fmt = params.get("format", "json")
    if fmt not in FORMATS:
        raise RequestError(422, f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "png" and task == "instance":
        raise RequestError(422, "format=png holds panoptic and semantic results; instance results overlap: ask "
                                "for format=json (COCO RLE per instance) or format=hf (a mask per instance)")
    return task, threshold, fmt


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit` bytes."""
    check_length(request.headers.get("content-length"), limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, too_large(total, limit).replace("of", "of more than", 1))
        chunks.append(chunk)
    return b"".join(chunks)


def encode(result, fmt: str) -> Response:
    if fmt == "png":
        return Response(segmentation_png(result), media_type="image/png")
    body = to_json(result) if fmt == "json" else to_hf(result)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Response(text.encode("utf-8"), media_type="application/json")


def failure(exc: BaseException) -> JSONResponse:
    """An exception from segmenting one image: bad values are the request's fault (422), the rest ours (500)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(lines)[:500] or type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return error(500, f"out of memory segmenting this image ({text[:200]}); send a smaller image")
    if isinstance(exc, ValueError):
        return error(422, text)
    return error(500, f"segmentation failed ({type(exc).__name__}: {text})")


def create_app(service: Service) -> FastAPI:
    """The application of one service; its lifespan starts loading the model and stops the workers."""
    options = service.options

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="eomt serve", lifespan=lifespan, docs_url=None, redoc_url=None)  # the docs pages use a CDN
    app.state.service = service
    app.add_middleware(Gate, service=service)

    @app.exception_handler(RequestError)
    async def _refused(_: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(str(e.get("msg", e)) for e in exc.errors()))

    def not_ready() -> JSONResponse | None:
        if service.error is not None:
            return error(503, f"the model failed to load: {service.error}")
        if not service.ready.is_set():
            return error(503, "the model is still loading", {"Retry-After": RETRY_AFTER_LOADING_S})
        return None

    @app.get("/health")
    async def health() -> Response:
        """200 {"status": "ok"} once the model is loaded and warmed up; 503 before."""
        return not_ready() or JSONResponse({"status": "ok"})

    @app.get("/v1/model")
    async def model() -> Response:
        """Task, labels (id -> name, thing or stuff), input size, backend, dtype, devices."""
        return not_ready() or JSONResponse(service.description)

    @app.post("/v1/segment")
    async def segment(request: Request) -> Response:
        """Segment the image in the body (or its multipart field `image`); ?task=&threshold=&format=json|hf|png."""
        if (refusal := not_ready()) is not None:
            return refusal
        task, threshold, fmt = parse_query(request.query_params, service.description["task"])
        content_type = request.headers.get("content-type")
        check_content_type(content_type)
        if service.batcher.full:  # refuse before reading and decoding the body
            return error(503, f"the service is busy (--max-queue {options.max_queue} requests waiting); retry",
                         {"Retry-After": RETRY_AFTER_FULL_S})
        body = await read_body(request, options.max_body_bytes)
        image = await run_in_threadpool(lambda: decode_image(image_bytes(body, content_type),
                                                             options.max_image_pixels))
        try:
            future = service.batcher.submit(image, task, threshold)
        except QueueFull as exc:
            return error(503, f"the service is busy ({exc}); retry", {"Retry-After": RETRY_AFTER_FULL_S})
        answer = asyncio.wrap_future(future)
        gone = asyncio.ensure_future(request.receive())  # after the body, the next message is the disconnect
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():  # the client went away: its image leaves the queue unless already running
            answer.cancel()
            service.metrics.abandoned.inc()
            return Response(status_code=CLIENT_CLOSED)
        gone.cancel()
        try:
            result = answer.result()
        except Exception as exc:  # noqa: BLE001 - one image's failure is that request's answer
            return failure(exc)
        return await run_in_threadpool(encode, result, fmt)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def page() -> Response:
        """The demo page."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
