"""A run's own checkpoints work everywhere a model is accepted; a signal checkpoints the current step."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from eomt import EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.training import trainer as trainer_module
from eomt.training.interrupt import TrainingInterrupted
from eomt.training.recipe import load_recipe
from eomt.training.synthetic import make_synthetic_dataset
from eomt.training.trainer import Trainer

SMALL = ["train.eval_limit=4", "train.batch_size=4", "train.warmup=2",
         "model.config.hidden_size=48", "model.config.num_hidden_layers=3", "model.config.num_attention_heads=2",
         "model.config.num_blocks=1", "model.config.num_queries=6"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=4, seed=2)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A 4-step run through the command line; evaluation only at the end (eval_every beyond the run)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "-r", "synthetic_tiny", "--data", str(data), "--out", str(out), "-q", "train.max_steps=4",
                 "train.eval_every=1000", "train.checkpoint_every=1000", *SMALL]) == 0
    return out


def test_the_final_model_is_evaluated_even_between_evaluations(run):
    best = torch.load(run / "best.ckpt", weights_only=True)
    assert best["best"]["step"] == 4 and best["best"]["metric"] == "PQ"


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_run_checkpoints_load_as_models_with_their_processor(run, name, tmp_path, capsys):
    final = EomtForUniversalSegmentation.from_pretrained(run / "final")
    ours = EomtForUniversalSegmentation.from_pretrained(run / name)
    assert ours.config.to_dict() == final.config.to_dict()  # label names included
    pixels = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        torch.testing.assert_close(ours(pixels).masks_queries_logits, final(pixels).masks_queries_logits)

    assert main(["info", str(run / name)]) == 0
    assert "3 blocks, hidden 48" in capsys.readouterr().out

    assert main(["convert", str(run / name), str(tmp_path / "converted")]) == 0
    processor = json.loads((tmp_path / "converted" / "preprocessor_config.json").read_text())
    assert processor == json.loads((run / "final" / "preprocessor_config.json").read_text())

    Image.new("RGB", (64, 48), (90, 160, 230)).save(tmp_path / "sky.png")
    assert main(["predict", str(tmp_path / "sky.png"), "-m", str(run / name), "-o", str(tmp_path / "p"), "-q",
                 "-d", "cpu"]) == 0
    assert (tmp_path / "p" / "sky.json").exists()  # panoptic files: the task came from the checkpoint


def test_sigterm_checkpoints_the_current_step_and_resume_redoes_none(data, tmp_path, monkeypatch):
    common = [f"data.path={data}", "train.max_steps=5", "train.eval_every=1000", "train.checkpoint_every=1000",
              *SMALL]
    Trainer(load_recipe("synthetic_tiny", [*common, f"train.out={tmp_path / 'straight'}"]), progress=False).fit()

    original = trainer_module.set_learning_rates

    def preempt_at_step_2(optimizer, lr, schedule, step):
        if step == 2:
            signal.raise_signal(signal.SIGTERM)  # as a cluster would, in the middle of a step
        return original(optimizer, lr, schedule, step)

    monkeypatch.setattr(trainer_module, "set_learning_rates", preempt_at_step_2)
    recipe = load_recipe("synthetic_tiny", [*common, f"train.out={tmp_path / 'preempted'}"])
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 3"):
        Trainer(recipe, progress=False).fit()
    assert torch.load(tmp_path / "preempted" / "last.ckpt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    monkeypatch.setattr(trainer_module, "set_learning_rates", original)

    Trainer(recipe, progress=False).fit(resume=True)
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "preempted" / "final" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("change, words", [
    (["model.config.num_queries=7"], ["num_queries 6 (checkpoint) vs 7 (recipe)"]),
    (["model.config.hidden_size=64", "model.config.num_hidden_layers=4"],
     ["hidden_size 48 (checkpoint) vs 64 (recipe)", "num_hidden_layers 3 (checkpoint) vs 4 (recipe)"]),
])
def test_resume_with_a_recipe_of_another_network_names_the_fields(run, data, change, words, capsys):
    """Not torch's size-mismatch report ("unexpected RuntimeError" in one huge line): which field differs."""
    before = sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*"))
    capsys.readouterr()
    assert main(["train", "-r", "synthetic_tiny", "--data", str(data), "--out", str(run), "-q", "--resume",
                 "train.max_steps=8", "train.eval_every=1000", "train.checkpoint_every=1000", *SMALL, *change]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400, lines
    assert lines[0].startswith(f"eomt train: error: {run / 'last.ckpt'}: holds another network than the recipe")
    assert all(word in lines[0] for word in words) and "--overwrite" in lines[0], lines[0]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*")) == before
