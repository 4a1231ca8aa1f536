"""The serve tests' fixtures: a tiny named model, test images, and a real `eomt serve` process on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import PROCESSOR_SETTINGS, make_confident, make_reference
from PIL import Image, ImageOps

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LABELS = ["person", "cat", "cup", "table", "wall", "sky"]
STUFF = [4, 5]
START_TIMEOUT_S = 120  # a loaded 2-core CI machine imports torch slowly


def save_named_model(directory: Path) -> Path:
    """A tiny confident panoptic model with class names and two stuff classes, as `eomt train` would record them."""
    import transformers

    model = make_confident(make_reference("eomt", seed=2, num_labels=len(LABELS), num_queries=12,
                                          id2label=dict(enumerate(LABELS)),
                                          label2id={n: i for i, n in enumerate(LABELS)}), 10.0, 30.0)
    model.attn_mask_probs.zero_()
    model.save_pretrained(directory)
    transformers.EomtImageProcessor(**PROCESSOR_SETTINGS["panoptic"]).save_pretrained(directory)
    config = directory / "preprocessor_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "stuff_classes": STUFF, "task": "panoptic"}))
    return directory


@pytest.fixture(scope="session")
def named_model(tmp_path_factory) -> Path:
    return save_named_model(tmp_path_factory.mktemp("serve_model") / "tiny_panoptic")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Four small images in three formats (small: the tests send hundreds of them)."""
    folder = tmp_path_factory.mktemp("serve_images")
    coffee = Image.open(EXAMPLES / "coffee.png").convert("RGB")
    chelsea = Image.open(EXAMPLES / "chelsea.png").convert("RGB")
    coffee.resize((180, 120)).save(folder / "coffee.png")
    chelsea.resize((150, 130)).save(folder / "chelsea.jpg", quality=92)
    ImageOps.mirror(coffee).resize((96, 160)).save(folder / "mirrored.webp", quality=90)
    ImageOps.grayscale(chelsea).resize((120, 90)).save(folder / "grey.png")
    return {p.name: p for p in sorted(folder.iterdir())}


class ServerProcess:
    """`python -m eomt serve ...` in a subprocess; its stderr is collected in a thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "eomt", "serve", *args, "--host", "127.0.0.1",
                                         "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if not self.url and "listening on http://" in line:
                self.url = line.split("listening on ", 1)[1].split()[0]
                self._listening.set()
        self._listening.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        deadline = time.monotonic() + timeout
        self._listening.wait(timeout)
        assert self.url, f"the server did not start:\n{self.log}"
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited with {self.process.returncode}:\n{self.log}"
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/health did not answer 200 within {timeout} s:\n{self.log}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def server(named_model):
    """The service most tests talk to: two workers, batches of up to 8, small limits for the bad-input tests."""
    process = ServerProcess([str(named_model), "--workers", "2", "--max-batch-size", "8", "--batch-timeout", "0.05",
                             "--max-body-mb", "1", "--max-image-pixels", "4000000", "--max-queue", "64"])
    try:
        yield process.wait_ready()
    finally:
        code = process.stop()
        assert code == 0, f"the server exited with {code} on SIGTERM:\n{process.log}"
