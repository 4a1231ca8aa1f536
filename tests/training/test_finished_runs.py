"""Runs through `eomt train`: val lines say how many images were scored; `--resume` of a finished run changes
nothing; a resumed run says so; kill -9 keeps the metrics logged up to the last checkpoint."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from eomt.cli.commands import main
from eomt.training.synthetic import make_synthetic_dataset

SMALL = ["train.batch_size=4", "train.warmup=2", "model.config.hidden_size=48", "model.config.num_hidden_layers=3",
         "model.config.num_attention_heads=2", "model.config.num_blocks=1", "model.config.num_queries=6"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=6, seed=5)


def _train(data, out, *extra):
    flags = [e for e in extra if e.startswith("--")]  # options before the KEY=VALUE overrides (argparse)
    return main(["train", "-r", "synthetic_tiny", "--data", str(data), "--out", str(out), "-q", *flags,
                 "train.max_steps=2", "train.eval_every=1", "train.eval_limit=4", "train.log_every=1", *SMALL,
                 *[e for e in extra if not e.startswith("--")]])


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _train(data, out) == 0
    return out, printed.getvalue()


def test_every_val_line_says_how_many_images_were_scored(finished):
    out, printed = finished
    val_lines = [line for line in printed.splitlines() if "val PQ" in line]
    assert len(val_lines) >= 3  # steps 1 and 2, and the final line
    assert all("on 4 of 6 val images" in line for line in val_lines), val_lines
    assert "best val PQ" in val_lines[-1]
    assert torch.load(out / "best.ckpt", weights_only=True)["best"]["images"] == 4


def test_all_images_are_named_as_all(data, tmp_path, capsys):
    assert _train(data, tmp_path / "all", "train.max_steps=1", "train.eval_limit=null") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "val PQ" in line]
    assert lines and all("on all 6 val images" in line for line in lines), lines


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def test_resume_of_a_finished_run_changes_nothing(data, finished, capsys):
    out, _ = finished
    before = _snapshot(out)
    assert (out / "logs" / "version_0").is_dir() and not (out / "logs" / "version_1").exists()
    capsys.readouterr()
    assert _train(data, out, "--resume") == 0
    printed = capsys.readouterr()
    assert "nothing to do" in printed.out and "step 2 of 2" in printed.out
    assert "trained" not in printed.out and "initialised from" not in printed.out + printed.err
    assert _snapshot(out) == before  # no rewritten final/, no new log folder, no new checkpoint


def test_resume_of_a_run_stopped_before_its_export_writes_final_only(data, finished, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    shutil.rmtree(out / "final")
    last = (out / "last.ckpt").read_bytes()
    capsys.readouterr()
    assert _train(data, out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "no step to train; wrote the final model" in printed and "trained" not in printed
    assert (out / "final" / "model.safetensors").is_file() and (out / "last.ckpt").read_bytes() == last
    assert not (out / "logs" / "version_1").exists()


def test_a_resumed_run_does_not_claim_fresh_weights(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "train.max_steps=1") == 0  # last.ckpt at step 1 of a 1-step run ...
    capsys.readouterr()
    assert _train(data, out, "--resume", "train.max_steps=3") == 0  # ... continued to 3 steps
    printed = capsys.readouterr().out
    assert "initialised from" not in printed
    assert "resuming from" in printed and "at step 1 of 3" in printed
    assert "trained 2 steps (steps 2..3, resumed)" in printed


def test_kill_9_keeps_the_metrics_logged_up_to_the_last_checkpoint(data, tmp_path):
    """The process dies (os._exit, as after kill -9: no cleanup) right after its step-2 checkpoint."""
    out = tmp_path / "killed"
    script = textwrap.dedent("""
        import os, sys
        from eomt.training import trainer
        real = trainer.Trainer._save
        def save_then_die(self, name, state):
            path = real(self, name, state)
            if state["step"] == 2:
                os._exit(137)
            return path
        trainer.Trainer._save = save_then_die
        from eomt.cli.commands import main
        sys.exit(main(sys.argv[1:]))
    """)
    args = ["train", "-r", "synthetic_tiny", "--data", str(data), "--out", str(out), "-q", "train.max_steps=4",
            "train.eval_every=1000", "train.checkpoint_every=2", "train.log_every=1", *SMALL]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 137, done.stderr[-2000:]
    assert torch.load(out / "last.ckpt", weights_only=True)["step"] == 2
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps == [1, 2]
