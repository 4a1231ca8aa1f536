"""An interrupted `eomt export` ends as one line `interrupted` and leaves no hidden temporary folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import save_task_model

from eomt.cli.commands import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_task_model(tmp_path_factory.mktemp("model") / "m", "panoptic")


def test_ctrl_c_that_the_exporter_wraps_is_still_interrupted(model_dir, tmp_path, monkeypatch, capsys):
    """torch's exporter may catch the KeyboardInterrupt and raise an export error of its own (it did, as
    TorchExportError, when Ctrl-C landed in one of its imports): the command still ends as `interrupted`."""
    def exporter_that_swallows_ctrl_c(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt as exc:
            raise RuntimeError("export failed: module 'torch._dynamo' has no attribute 'exc'") from exc
        raise AssertionError("SIGINT did not arrive")

    monkeypatch.setattr(torch.onnx, "export", exporter_that_swallows_ctrl_c)
    capsys.readouterr()
    assert main(["export", str(model_dir), str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == "eomt export: interrupted"
    assert os.listdir(tmp_path) == []  # no .out.*.tmp
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


@pytest.mark.parametrize("signum, code, line", [(signal.SIGTERM, 143, "eomt export: interrupted (SIGTERM)"),
                                                (signal.SIGINT, 130, "eomt export: interrupted")])
def test_a_signal_while_the_temporary_folder_exists_removes_it(model_dir, tmp_path, signum, code, line):
    """The real command, signalled once its hidden temporary folder exists (during torch's export)."""
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.Popen([sys.executable, "-m", "eomt", "export", str(model_dir), "out"], cwd=work,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not any(name.startswith(".out.") for name in os.listdir(work)):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    time.sleep(0.5)  # inside torch's exporter by now
    run.send_signal(signum)
    _, err = run.communicate(timeout=240)
    assert run.returncode == code, err
    assert err.strip().splitlines()[-1] == line, err
    assert "Error" not in err
    assert os.listdir(work) == []
