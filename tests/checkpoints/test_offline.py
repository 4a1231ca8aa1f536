"""Without network, a hub id fails at once with one line that says what to do (no minutes of retries)."""

from __future__ import annotations

import shutil
import socket

import pytest
from helpers import write_hub_cache

from eomt import EomtConfig
from eomt.checkpoints import network
from eomt.cli.commands import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused at once


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    network._reachable.cache_clear()
    yield
    network._reachable.cache_clear()


def test_no_network_and_no_cache_is_one_line_naming_the_ways_out(unreachable_hub, monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert not network.hub_reachable()
    assert main(["predict", str(tmp_path / "x.png"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Retrying" not in err
    assert "cannot be reached" in err and "not in the local cache" in err and str(tmp_path / "empty_cache") in err
    assert "--model PATH" in err and "quick start" in err and "HF_HUB_OFFLINE" not in err


def test_no_network_still_uses_the_local_cache(unreachable_hub, monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as hub_constants

    EomtConfig(num_labels=3, hidden_size=64, num_attention_heads=2).save_pretrained(tmp_path / "src")
    write_hub_cache(tmp_path / "cache", "org/tiny", tmp_path / "src")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main(["info", "org/tiny"]) == 0
    assert "hidden 64" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "cache")
