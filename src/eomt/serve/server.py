"""Running a service: bind the socket (a clear error when the address is taken), run uvicorn, stop gracefully.

SIGTERM (and Ctrl-C) make uvicorn stop accepting connections, finish the requests in flight, then run the
lifespan's shutdown (the workers end once the queue is empty); the process then exits 0.
"""

from __future__ import annotations

import signal
import socket
import sys

from .options import ServeOptions


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or ValueError naming the address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ValueError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(options: ServeOptions) -> int:
    """Serve until SIGTERM / Ctrl-C; returns 0, or raises the model's loading error after shutting down."""
    options.check()
    sock = bind(options.host, options.port)  # before the heavy imports: a taken port is reported at once
    try:
        return _run(options, sock)
    finally:
        sock.close()


def _run(options: ServeOptions, sock: socket.socket) -> int:
    import uvicorn

    from .app import create_app
    from .service import Service

    host, port = sock.getsockname()[:2]
    service = Service(options)
    config = uvicorn.Config(create_app(service), lifespan="on", log_level="info", timeout_graceful_shutdown=None,
                            backlog=2048)
    server = uvicorn.Server(config)

    def stop_on_failure() -> None:
        server.should_exit = True

    service.on_failure = stop_on_failure
    shown = f"[{host}]" if ":" in host else host
    print(f"eomt serve: listening on http://{shown}:{port} (loading {options.model}; /health answers 503 until "
          f"the model is ready)", file=sys.stderr, flush=True)
    # uvicorn re-raises the signal it stopped for once it has stopped; keep that from killing the process with
    # status -15 after a clean shutdown
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if service.error is not None:
        raise service.error
    print("eomt serve: stopped", file=sys.stderr, flush=True)
    return 0
