"""The training loop on the synthetic dataset: learning, annealing, resume, failures, export."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from eomt import EomtForUniversalSegmentation
from eomt.evaluation.runner import evaluate
from eomt.predictor import Segmenter
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training.errors import RecipeError, TrainingError
from eomt.training.recipe import load_recipe
from eomt.training.synthetic import make_synthetic_dataset
from eomt.training.trainer import Trainer, build_model


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=48, num_val=12, seed=3)


def _recipe(data, out, *overrides):
    return load_recipe("synthetic_tiny", [f"data.path={data}", f"train.out={out}", "train.eval_limit=12",
                                          *overrides])


def test_tiny_recipe_learns(synthetic, tmp_path):
    recipe = _recipe(synthetic, tmp_path / "run", "train.max_steps=120", "train.eval_every=120")
    untrained = build_model(recipe, 7, {}).eval()
    untrained.attn_mask_probs.zero_()
    processor = EomtImageProcessor(size={"shortest_edge": 128, "longest_edge": 128}, do_pad=True)
    before = evaluate(Segmenter(untrained, processor, "panoptic"), synthetic, "coco_panoptic", progress=False)
    summary = Trainer(recipe, progress=False).fit()
    losses = [h["loss"] for h in summary["history"]]
    assert sum(losses[-10:]) / 10 < 0.5 * losses[0]
    assert summary["best"]["metric"] == "PQ"
    assert summary["best"]["score"] > before["metrics"]["PQ"] + 20


def test_annealing_and_final_export(synthetic, tmp_path):
    recipe = _recipe(synthetic, tmp_path / "run", "train.max_steps=12", "train.annealing_starts=[2, 5]",
                     "train.annealing_ends=[6, 9]", "train.warmup=4", "train.eval_every=12")
    summary = Trainer(recipe, progress=False).fit()
    probs = {h["step"]: h["mask_probs"] for h in summary["history"]}
    assert probs[0] == [1.0, 1.0] and probs[2] == [1.0, 1.0]
    assert probs[4] == pytest.approx([0.5 ** 0.9, 1.0]) and probs[7] == pytest.approx([0.0, 0.5 ** 0.9])
    assert probs[9] == [0.0, 0.0]
    lrs = {h["step"]: h["lrs"] for h in summary["history"]}
    assert lrs[0]["block5"] == 0.0 and lrs[0]["head"] == pytest.approx(1e-3 / 4)  # backbone waits for warmup
    model = EomtForUniversalSegmentation.from_pretrained(summary["final"])
    assert model.attn_mask_probs.tolist() == [0.0, 0.0]
    calls = []
    model.mask_head.register_forward_hook(lambda *args: calls.append(1))
    segmenter = Segmenter.from_pretrained(summary["final"])
    assert segmenter.task == "panoptic" and segmenter.stuff_classes == [4, 5, 6]
    segmenter.model.mask_head.register_forward_hook(lambda *args: calls.append(1))
    segmenter.predict(str(synthetic / "val2017" / "000000000001.png"))
    assert len(calls) == 1  # the fast path: no intermediate prediction
    import transformers

    theirs = transformers.EomtForUniversalSegmentation.from_pretrained(summary["final"]).eval()
    pixels = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        torch.testing.assert_close(theirs(pixel_values=pixels).class_queries_logits,
                                   model(pixels).class_queries_logits, atol=1e-4, rtol=0)


def test_resume_gives_the_weights_of_an_uninterrupted_run(synthetic, tmp_path):
    common = ["train.max_steps=10", "train.checkpoint_every=100", "train.eval_every=1000", "train.warmup=3"]
    Trainer(_recipe(synthetic, tmp_path / "straight", *common), progress=False).fit()
    Trainer(_recipe(synthetic, tmp_path / "resumed", *common), progress=False).fit(stop_at=4)
    assert (tmp_path / "resumed" / "last.ckpt").exists() and not (tmp_path / "resumed" / "final").exists()
    Trainer(_recipe(synthetic, tmp_path / "resumed", *common), progress=False).fit(resume=True)
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(synthetic, tmp_path, monkeypatch):
    from eomt.modeling.loss import EomtLoss

    recipe = _recipe(synthetic, tmp_path / "run", "train.max_steps=20", "train.checkpoint_every=3",
                     "train.eval_every=1000")
    real, calls = EomtLoss.forward, []

    def poisoned(self, *args, **kwargs):
        loss, parts = real(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 5 else loss), parts

    monkeypatch.setattr(EomtLoss, "forward", poisoned)
    with pytest.raises(TrainingError) as err:
        Trainer(recipe, progress=False).fit()
    assert "loss became nan at step 5" in str(err.value) and "last.ckpt" in str(err.value)
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["step"] == 3


def test_a_failed_checkpoint_write_leaves_the_previous_one(synthetic, tmp_path, monkeypatch):
    recipe = _recipe(synthetic, tmp_path / "run", "train.max_steps=6", "train.checkpoint_every=2",
                     "train.eval_every=1000")
    trainer = Trainer(recipe, progress=False)
    real, saves = trainer.fabric.save, []

    def flaky(path, state):
        saves.append(path)
        if len(saves) == 2:
            path.write_bytes(b"partial")
            raise OSError("disk full")
        return real(path, state)

    monkeypatch.setattr(trainer.fabric, "save", flaky)
    with pytest.raises(OSError, match="disk full"):
        trainer.fit()
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["step"] == 2
    assert [p.name for p in (tmp_path / "run").glob(".*tmp")] == []


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key train\.lrr"):
        load_recipe("synthetic_tiny", ["train.lrr=1"])
    with pytest.raises(RecipeError, match="no recipe file or preset named 'nope'"):
        load_recipe("nope")
    with pytest.raises(TrainingError, match="no data path"):
        Trainer(load_recipe("synthetic_tiny", [f"train.out={tmp_path}"]), progress=False).fit()


def test_every_preset_loads():
    from eomt.training.recipe import available_recipes

    names = available_recipes()
    assert len(names) >= 20
    for name in names:
        recipe = load_recipe(name)
        if recipe.train.annealing_starts is not None and not recipe.model.pretrained:
            assert len(recipe.train.annealing_starts) == recipe.model.config.get("num_blocks", 4)
    assert load_recipe("coco_panoptic_large_1280_dinov3").data.crop_size == 1280  # the authors' configs forgot it


def test_train_command_reports_a_missing_dataset_in_one_line(tmp_path, capsys):
    from eomt.cli.commands import main

    code = main(["train", "--recipe", "synthetic_tiny", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and str(tmp_path / "nowhere") in err and "\n" not in err, err


def test_activation_checkpointing_gives_the_same_gradients():
    from helpers import random_targets

    from eomt import EomtConfig

    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(EomtConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                                    num_blocks=2, num_queries=5, image_size=32, num_labels=3,
                                                    train_num_points=200)).train()
    pixels = torch.randn(2, 3, 32, 32)
    masks, classes = random_targets(2, 32, 32, 3)
    grads = []
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(1)
        model(pixels, mask_labels=masks, class_labels=classes).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
