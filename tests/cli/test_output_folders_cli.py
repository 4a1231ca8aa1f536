"""Output folders through the real commands: one job per folder (a lock naming the running one), no silent
replacement of an evaluation or of files eomt did not write, no result taken as an input by a later run,
folders followed through symbolic links, non-image files counted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import PROCESSOR_SETTINGS, make_confident, make_reference, save_task_model
from PIL import Image

from eomt.cli.commands import main
from eomt.outputs.lock import LOCK_FILE
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_task_model(tmp_path_factory.mktemp("models") / "tiny_panoptic", "panoptic")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, colour in (("sky", (90, 160, 230)), ("grass", (60, 150, 50))):
        Image.new("RGB", (48, 40), colour).save(folder / f"{name}.png")
    return folder


def _predict(images, model, out, *extra):
    return main(["predict", str(images), "-m", str(model), "-o", str(out), "-q", "-d", "cpu", "-j", "0", *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_second_predict_into_a_busy_folder_refuses_naming_the_running_one(model, images, tmp_path, capsys):
    """Run A (a real `eomt predict` process) holds OUT until the test lets it finish; run B starts meanwhile."""
    out, go = tmp_path / "out", tmp_path / "go"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from eomt.jobs import predict
        real = predict._run
        def wait_then_run(*args, **kwargs):
            while not Path({str(go)!r}).exists():
                time.sleep(0.05)
            return real(*args, **kwargs)
        predict._run = wait_then_run
        from eomt.cli.commands import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-c", script, "predict", str(images), "-m", str(model), "-o", str(out),
                              "-q", "-d", "cpu", "-j", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / LOCK_FILE).exists():
            assert first.poll() is None, first.communicate()  # it ended: its output says why
            assert time.monotonic() < deadline, "run A never took a lock of its output folder"
            time.sleep(0.05)
        capsys.readouterr()
        assert _predict(images, model, out) == 1
        err = _one_line_error(capsys)
        assert "in use by eomt predict" in err and f"pid {first.pid}" in err and socket.gethostname() in err
        assert _predict(images, model, out, "--overwrite") == 1  # no flag takes a busy folder
        assert "in use by eomt predict" in _one_line_error(capsys)
    finally:
        go.touch()
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert not (out / LOCK_FILE).exists()
    assert json.loads((out / "summary.json").read_text())["done"] == 2


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_stale_lock_is_taken_over_and_a_foreign_host_lock_is_not(model, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                             "command": "eomt predict", "started": time.time()}))
    assert _predict(images, model, out) == 0  # the killed job's lock
    assert not (out / LOCK_FILE).exists() and (out / "sky.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "eomt eval"}))
    capsys.readouterr()
    assert _predict(images, model, other) == 1
    err = _one_line_error(capsys)
    assert "in use by eomt eval (pid 1 on elsewhere)" in err and f"delete {other / LOCK_FILE}" in err


def test_a_failed_start_leaves_no_folder(images, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert main(["predict", str(images), "-m", str(tmp_path / "no_model"), "-o", str(out), "-q", "-d", "cpu"]) == 1
    assert not (tmp_path / "new").exists()


def test_files_eomt_did_not_write_are_never_replaced(model, images, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out / "sky.png")  # the user's own file, named like a result
    before = (out / "sky.png").read_bytes()
    for flag in ("--overwrite", "--skip-existing"):
        capsys.readouterr()
        assert _predict(images, model, out, flag) == 1
        err = _one_line_error(capsys)
        assert "eomt did not write it" in err and str(out / "sky.png") in err
    assert (out / "sky.png").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["sky.png"]
    assert _predict(images, model, tmp_path / "ours") == 0
    assert _predict(images, model, tmp_path / "ours", "--overwrite") == 0  # eomt's own results: replaced


def test_outputs_inside_an_input_folder_are_never_inputs(model, images, tmp_path, capsys):
    assert _predict(images, model, images / "results") == 0  # inside, but in a folder of its own
    (images / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert _predict(images, model, tmp_path / "again") == 0
    err = capsys.readouterr().err
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["done"] == 2 and summary["output_folders_left_out"] == [str(images / "results")]
    assert summary["non_image_files"] == 1
    assert "not read: 1 non-image file(s) and 1 eomt output folder(s)" in err.splitlines()[0]
    capsys.readouterr()
    assert _predict(images, model, images) == 1  # results beside the images they came from
    assert "beside the input image" in _one_line_error(capsys)


def test_folders_are_followed_through_symbolic_links(model, images, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (40, 48), (200, 200, 200)).save(elsewhere / "cloud.png")
    os.symlink(elsewhere, images / "linked")
    os.symlink(images, images / "loop")  # a cycle: each real folder is searched once
    assert _predict(images, model, tmp_path / "out") == 0
    assert (tmp_path / "out" / "linked" / "cloud.png").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["done"] == 3
    link = tmp_path / "link_to_images"
    os.symlink(images, link)  # the source itself given through a link
    assert _predict(link, model, tmp_path / "out2") == 0
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["done"] == 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=0, num_val=2, size=64, seed=1)


def _eval(model, dataset, out, *extra):
    return main(["eval", "-m", str(model), "--data", str(dataset), "--dataset", "coco_panoptic", "-o", str(out),
                 "-q", "-d", "cpu", *extra])


def test_eval_out_never_replaces_an_evaluation_silently(tmp_path, dataset, capsys):
    model = tmp_path / "model7"  # the synthetic dataset's 7 classes
    reference = make_confident(make_reference("eomt", seed=2, num_labels=7, num_queries=12), 10.0, 30.0)
    reference.attn_mask_probs.zero_()
    reference.save_pretrained(model)
    EomtImageProcessor(**PROCESSOR_SETTINGS["panoptic"]).save_pretrained(model)
    out = tmp_path / "eval"
    assert _eval(model, dataset, out) == 0
    first = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert _eval(model, dataset, out) == 1
    err = _one_line_error(capsys)
    assert "already holds an evaluation" in err and "--overwrite" in err
    assert main(["eval", "-p", str(out), "--data", str(dataset), "--dataset", "coco_panoptic", "-o", str(out)]) == 1
    assert "already holds an evaluation (metrics.json)" in _one_line_error(capsys)
    assert (out / "metrics.json").read_bytes() == first
    assert _eval(model, dataset, out, "--overwrite") == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"mine": 1}')
    assert _eval(model, dataset, foreign, "--overwrite") == 1
    assert "eomt did not write it" in _one_line_error(capsys)
    assert (foreign / "metrics.json").read_text() == '{"mine": 1}'
    (foreign / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                 "command": "eomt eval"}))
    assert _eval(model, dataset, tmp_path / "foreign", "--overwrite") == 1
    assert "in use by eomt eval" in _one_line_error(capsys)


def test_train_into_a_busy_run_folder_refuses(tmp_path, dataset, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "command": "eomt train", "started": time.time()}))
        assert main(["train", "-r", "synthetic_tiny", "--data", str(dataset), "--out", str(run), "-q",
                     "--overwrite", "train.max_steps=1"]) == 1
        err = _one_line_error(capsys)
        assert f"train.out {run}: in use by eomt train (pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
