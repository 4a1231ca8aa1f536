"""Is the hub reachable? One quick connection attempt, so that an offline machine gets one line at once
instead of half a minute of download retries."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


@lru_cache(maxsize=4)
def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub endpoint (HF_ENDPOINT, default huggingface.co) opens, once per process."""
    return _reachable(*hub_endpoint())
