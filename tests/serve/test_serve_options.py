"""`eomt serve`'s settings: where workers run, and values refused before anything is loaded."""

from __future__ import annotations

import pytest

from eomt.cli.commands import main
from eomt.serve.options import ServeOptions, worker_devices


def test_workers_spread_over_gpus_only_when_asked_for_cuda():
    assert worker_devices(None, 1, 0) == ["cpu"]
    assert worker_devices(None, 2, 0) == ["cpu", "cpu"]
    assert worker_devices(None, 1, 4) == ["cuda"]
    assert worker_devices("cuda", 3, 4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices(None, 2, 2) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda:1", 2, 4) == ["cuda:1", "cuda:1"]
    with pytest.raises(ValueError, match="--workers 3 with --device cuda needs 3 CUDA devices; this machine has 2"):
        worker_devices("cuda", 3, 2)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(task="depth"), "--task depth"),
    (dict(port=70000), "--port 70000"),
    (dict(max_batch_size=0), "--max-batch-size 0"),
    (dict(workers=0), "--workers 0"),
    (dict(batch_timeout=-1.0), "--batch-timeout -1.0"),
    (dict(max_body_mb=0.0), "--max-body-mb 0.0"),
    (dict(max_queue=0), "--max-queue 0"),
    (dict(api_key=" key"), "--api-key"),
])
def test_impossible_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        ServeOptions(model="m", **changes).check()
    ServeOptions(model="m").check()


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "http"], "argument --port: expected a port number, got 'http'"),
    (["--batch-timeout", "-1"], "argument --batch-timeout: must be seconds in [0, 60], got '-1'"),
    (["--max-body-mb", "0"], "argument --max-body-mb: must be a positive number of megabytes, got '0'"),
    (["--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (["--device", "gpu"], "argument --device/-d: unknown device 'gpu'"),
])
def test_bad_flags_are_one_line_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "MODEL", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("eomt serve: error:")


def test_a_missing_device_is_refused_before_loading(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["serve", "MODEL", "--device", "cuda"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err
