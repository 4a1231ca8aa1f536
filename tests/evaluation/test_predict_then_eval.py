"""`eomt predict` output is scorable by `eomt eval --predictions` with no flag: the folder records its ids.

`eomt predict` writes the model's label ids, `eomt eval --out` dataset category ids; both say so (in
summary.json / metrics.json and in each panoptic JSON). A foreign folder whose ids only make sense as label
ids gets a message naming `--label-ids`, never a silent score of 0.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import build_parser, main
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training.synthetic import make_synthetic_dataset


def _strict(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A confident tiny model of the synthetic classes, 3 val images and `eomt predict`'s folder of them."""
    root = tmp_path_factory.mktemp("predict_eval")
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(EomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    num_blocks=1, num_queries=8, image_size=32, num_labels=7))
    with torch.no_grad():  # confident: some segments pass the threshold
        model.class_predictor.weight.mul_(40)
        model.mask_head.fc3.weight.mul_(10)
    model.save_pretrained(root / "model")
    EomtImageProcessor(size=32, do_pad=True, task="panoptic", stuff_classes=[4, 5, 6]).save_pretrained(
        root / "model")
    data = make_synthetic_dataset(root / "data", num_train=0, num_val=3, size=32, seed=4)
    assert main(["predict", str(data / "val2017"), "-m", str(root / "model"), "-o", str(root / "p"),
                 "-q", "-d", "cpu", "--threshold", "0.1"]) == 0
    return root, data


def _eval(predictions, data, out=None, *extra):
    args = ["eval", "-p", str(predictions), "--data", str(data), "--dataset", "coco_panoptic", *extra]
    return main([*args, "-o", str(out)] if out else args)


def test_predict_folder_records_label_ids_and_scores_without_a_flag(setup, tmp_path, capsys):
    root, data = setup
    segments = [s for f in (root / "p").glob("0*.json") for s in json.loads(f.read_text())["segments_info"]]
    assert segments and all(0 <= s["category_id"] < 7 for s in segments)  # label ids, not category ids 1..7
    assert _strict(root / "p" / "summary.json")["category_ids"] == "label_ids"
    assert all(json.loads(f.read_text())["category_ids"] == "label_ids" for f in (root / "p").glob("0*.json"))
    capsys.readouterr()
    assert _eval(root / "p", data, tmp_path / "plain") == 0
    assert _eval(root / "p", data, tmp_path / "flag", "--label-ids") == 0  # the flag agrees with the record
    plain, flagged = _strict(tmp_path / "plain" / "metrics.json"), _strict(tmp_path / "flag" / "metrics.json")
    assert plain["num_images"] == 3 and set(plain["metrics"]) >= {"PQ", "SQ", "RQ"}
    assert plain["metrics"] == flagged["metrics"]


def test_the_folder_record_alone_is_enough(setup, tmp_path, capsys):
    """Panoptic files without their own record (as another tool might rewrite them): summary.json says."""
    root, data = setup
    shutil.copytree(root / "p", tmp_path / "p")
    for path in (tmp_path / "p").glob("0*.json"):
        info = json.loads(path.read_text())
        del info["category_ids"]
        path.write_text(json.dumps(info))
    assert _eval(root / "p", data, tmp_path / "a") == 0
    assert _eval(tmp_path / "p", data, tmp_path / "b") == 0
    assert _strict(tmp_path / "a" / "metrics.json")["metrics"] == _strict(tmp_path / "b" / "metrics.json")["metrics"]


def test_eval_out_records_dataset_ids_and_contradicting_flag_is_named(setup, tmp_path, capsys):
    root, data = setup
    assert main(["eval", "-m", str(root / "model"), "--data", str(data), "--dataset", "coco_panoptic",
                 "-o", str(tmp_path / "e"), "-q", "-d", "cpu"]) == 0
    assert _strict(tmp_path / "e" / "metrics.json")["category_ids"] == "dataset_ids"
    capsys.readouterr()
    assert _eval(tmp_path / "e", data, tmp_path / "again") == 0
    assert _eval(tmp_path / "e", data, None, "--label-ids") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dataset category ids" in err and "drop --label-ids" in err


def _foreign_folder(data, folder, shift: int):
    """The ground truth itself as prediction files of another tool (no record), category ids minus `shift`."""
    folder.mkdir()
    annotations = json.loads((data / "annotations" / "panoptic_val2017.json").read_text())["annotations"]
    for entry in annotations:
        shutil.copy(data / "annotations" / "panoptic_val2017" / entry["file_name"], folder / entry["file_name"])
        segments = [{**s, "category_id": s["category_id"] - shift} for s in entry["segments_info"]]
        (folder / entry["file_name"]).with_suffix(".json").write_text(json.dumps({"segments_info": segments}))
    return folder


def test_foreign_folder_of_label_ids_names_the_flag(setup, tmp_path, capsys):
    _, data = setup
    foreign = _foreign_folder(data, tmp_path / "foreign", shift=1)  # synthetic category 1 = label id 0
    capsys.readouterr()
    assert _eval(foreign, data, tmp_path / "m") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--label-ids" in err and "label_ids=True" not in err and "0..6" in err
    assert not (tmp_path / "m" / "metrics.json").exists()
    assert _eval(foreign, data, tmp_path / "m", "--label-ids") == 0
    assert _strict(tmp_path / "m" / "metrics.json")["metrics"]["All"]["PQ"] == pytest.approx(100.0)
    same = _foreign_folder(data, tmp_path / "dataset_ids", shift=0)  # the COCO convention needs no flag
    assert _eval(same, data, tmp_path / "m2") == 0
    assert _strict(tmp_path / "m2" / "metrics.json")["metrics"]["All"]["PQ"] == pytest.approx(100.0)


def test_eval_help_agrees_with_its_label_ids_help():
    parser = build_parser()
    evaluation = parser._subparsers._group_actions[0].choices["eval"]
    text = " ".join(evaluation.format_help().split())
    assert "dataset category ids in JSON files" not in text  # the old claim about `eomt predict` folders
    assert "`eomt predict` (the model's label ids)" in text
    flag = next(a for a in evaluation._actions if "--label-ids" in a.option_strings)
    assert "eomt did not write" in flag.help
