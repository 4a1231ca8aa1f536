"""`eomt predict` output is scorable by `eomt eval --predictions --label-ids` (it holds the model's label ids)."""

from __future__ import annotations

import json

import torch

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import main
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training.synthetic import make_synthetic_dataset


def test_predict_output_scores_with_label_ids(tmp_path, capsys):
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(EomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    num_blocks=1, num_queries=8, image_size=32, num_labels=7))
    with torch.no_grad():  # confident: some segments pass the threshold
        model.class_predictor.weight.mul_(40)
        model.mask_head.fc3.weight.mul_(10)
    model.save_pretrained(tmp_path / "model")
    EomtImageProcessor(size=32, do_pad=True, task="panoptic", stuff_classes=[4, 5, 6]).save_pretrained(
        tmp_path / "model")
    data = make_synthetic_dataset(tmp_path / "data", num_train=0, num_val=3, size=32, seed=4)
    assert main(["predict", str(data / "val2017"), "-m", str(tmp_path / "model"), "-o", str(tmp_path / "p"),
                 "-q", "-d", "cpu", "--threshold", "0.1"]) == 0
    segments = [s for f in (tmp_path / "p").glob("0*.json") for s in json.loads(f.read_text())["segments_info"]]
    assert segments and all(0 <= s["category_id"] < 7 for s in segments)  # label ids, not category ids 1..7
    capsys.readouterr()
    args = ["eval", "-p", str(tmp_path / "p"), "--data", str(data), "--dataset", "coco_panoptic",
            "-o", str(tmp_path / "m")]
    assert main([*args, "--label-ids"]) == 0
    def refuse(constant):
        raise AssertionError(f"metrics.json holds {constant}: not strict JSON")

    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["num_images"] == 3 and set(metrics["metrics"]) >= {"PQ", "SQ", "RQ"}
