"""No lost file: train, convert and synthetic refuse a folder holding earlier results unless --overwrite,
and a folder is never left half old, half new."""

from __future__ import annotations

import json

import pytest
import torch

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.outputs.folders import OutputExistsError, check_new_output, staged_directory
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training import synthetic
from eomt.training.errors import TrainingError
from eomt.training.run_folder import prepare_run_folder

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4, image_size=32,
            num_labels=3, train_num_points=64)


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    EomtForUniversalSegmentation(EomtConfig(**TINY, id2label={0: "cat", 1: "dog", 2: "sky"})).save_pretrained(
        tmp_path / "model")
    EomtImageProcessor(size=32, do_pad=True, task="panoptic", stuff_classes=[2]).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_carries_the_processor_config_over(model_dir, tmp_path):
    assert main(["convert", str(model_dir), str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert written == json.loads((model_dir / "preprocessor_config.json").read_text())
    assert written["task"] == "panoptic" and written["stuff_classes"] == [2]
    from eomt.predictor import Segmenter

    assert Segmenter.from_pretrained(tmp_path / "out", device="cpu").task == "panoptic"


def test_convert_refuses_a_folder_with_files_and_overwrite_replaces_it_whole(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "preprocessor_config.json").write_text('{"old": true}')
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    assert main(["convert", str(model_dir), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _tree(out) == before
    assert main(["convert", str(model_dir), str(out), "--overwrite"]) == 0
    assert sorted(_tree(out)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert "old" not in json.loads((out / "preprocessor_config.json").read_text())


def test_train_refuses_an_earlier_run_and_overwrite_removes_all_of_it(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "last.ckpt").write_bytes(b"old last")
    (run / "best.ckpt").write_bytes(b"old best")
    (run / "data_notes.txt").write_text("the user's own file")
    with pytest.raises(TrainingError, match="already holds a run"):
        prepare_run_folder(run, resume=False, overwrite=False)
    assert (run / "best.ckpt").read_bytes() == b"old best"
    prepare_run_folder(run, resume=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["data_notes.txt"]  # no old best.ckpt outlives the run


def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        prepare_run_folder(tmp_path / "run", resume=True, overwrite=False)
    assert not (tmp_path / "run").exists()


def test_synthetic_refuses_an_existing_dataset_and_overwrite_replaces_it(tmp_path, capsys):
    root = tmp_path / "shapes"
    assert main(["synthetic", str(root), "--train", "2", "--val", "1"]) == 0
    before = _tree(root)
    assert main(["synthetic", str(root), "--train", "3", "--val", "1", "--seed", "1"]) == 1
    assert "already holds files" in capsys.readouterr().err and _tree(root) == before
    assert main(["synthetic", str(root), "--train", "3", "--val", "1", "--seed", "1", "--overwrite"]) == 0
    after = _tree(root)
    assert len([n for n in after if n.startswith("train2017/")]) == 3 and after != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no staging folder left behind


def test_an_interrupted_regeneration_leaves_the_old_dataset_whole(tmp_path, monkeypatch):
    root = synthetic.make_synthetic_dataset(tmp_path / "shapes", num_train=2, num_val=1, size=32)
    before = _tree(root)
    calls = []

    def write_then_stop(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = synthetic._write_split
    monkeypatch.setattr(synthetic, "_write_split", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_synthetic_dataset(root, num_train=4, num_val=2, size=32, seed=5, overwrite=True)
    assert _tree(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_check_new_output_and_staged_directory(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(OutputExistsError, match="already holds"):
        check_new_output(tmp_path / "full", overwrite=False, what="files")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        check_new_output(tmp_path / "file", overwrite=True, what="files")
    with pytest.raises(RuntimeError), staged_directory(tmp_path / "full") as staging:
        (staging / "b").write_text("new")
        raise RuntimeError("stop")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["a"]
    with staged_directory(tmp_path / "full") as staging:
        (staging / "b").write_text("new")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_while_staging_removes_the_staging_folder(tmp_path, signame):
    """SIGTERM's default would end the process with `.<out>.new-*` left behind: it is cleaned up, then the
    process stops with the shell's code for that signal; an earlier folder at the target is left as it was."""
    import signal
    import subprocess
    import sys

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("the earlier result")
    code = f"""
import os, signal
from eomt.outputs.folders import staged_directory
from eomt.outputs.interrupts import Interrupted
try:
    with staged_directory({str(tmp_path / 'out')!r}) as staging:
        (staging / "new.txt").write_text("half")
        os.kill(os.getpid(), signal.{signame})
        import time; time.sleep(5)
except Interrupted as exc:
    raise SystemExit(exc.exit_code)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert run.returncode == 128 + getattr(signal, signame), run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]
