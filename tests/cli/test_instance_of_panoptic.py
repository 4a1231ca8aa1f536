"""`--task instance` on a panoptic model: its stuff classes (sky, road, ...) are no instances."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import save_task_model

from eomt import EomtImageProcessor
from eomt.cli.commands import main
from eomt.predictor import Segmenter
from eomt.processing import postprocess

STUFF = [2, 3, 4, 5]  # of the tiny model's 6 classes


@pytest.fixture(scope="module")
def panoptic_model(tmp_path_factory):
    """The tiny panoptic model, its processor recording stuff classes as `eomt train` writes them."""
    directory = save_task_model(tmp_path_factory.mktemp("model") / "tiny_panoptic", "panoptic")
    settings = json.loads((directory / "preprocessor_config.json").read_text())
    EomtImageProcessor.from_dict({**settings, "stuff_classes": STUFF}).save_pretrained(directory)
    return directory


def test_stuff_pairs_are_left_out_before_selecting():
    torch.manual_seed(0)
    masks, classes = torch.randn(1, 30, 8, 8) * 5, torch.randn(1, 30, 7) * 4
    for mode in ("threshold", "topk"):
        full = postprocess.instance_segmentation(masks, classes, [(16, 16)], {"shortest_edge": 32},
                                                 threshold=0.5, mode=mode, top_k=20)[0]
        things = postprocess.instance_segmentation(masks, classes, [(16, 16)], {"shortest_edge": 32},
                                                   threshold=0.5, mode=mode, top_k=20, stuff_classes=STUFF)[0]
        assert any(s["label_id"] in STUFF for s in full["segments_info"])
        assert things["segments_info"] and not any(s["label_id"] in STUFF for s in things["segments_info"])
        kept = [(s["label_id"], s["score"]) for s in full["segments_info"] if s["label_id"] not in STUFF]
        got = [(s["label_id"], s["score"]) for s in things["segments_info"]]
        if mode == "threshold":  # above 0.5 a query's class is its only candidate: the thing segments are unchanged
            assert got == kept
        else:  # the stuff pairs' places in the top 20 go to the next thing pairs
            assert got[:len(kept)] == kept and len(got) == 20
    none = postprocess.instance_segmentation(masks, classes, [(16, 16)], {"shortest_edge": 32},
                                             stuff_classes=range(6))[0]
    assert none["segments_info"] == [] and none["masks"].shape == (0, 16, 16) and (none["segmentation"] == -1).all()


def test_segmenter_drops_recorded_stuff_in_instance_mode(panoptic_model):
    segmenter = Segmenter.from_pretrained(panoptic_model, device="cpu")
    assert segmenter.task == "panoptic" and segmenter.stuff_classes == STUFF
    photo = "examples/coffee.png"
    instances = segmenter.predict(photo, task="instance", threshold=0.5)
    every_class = Segmenter(segmenter.model, segmenter.processor, "panoptic", stuff_classes=[])
    all_instances = every_class.predict(photo, task="instance", threshold=0.5)
    assert any(s.label_id in STUFF for s in all_instances.segments)  # the case exists on this model
    assert instances.segments and all(s.label_id not in STUFF and s.isthing for s in instances.segments)
    # the same instances; a score may differ in its last float32 digit, because torch sums a different number
    # of candidate masks' rows at once (its CPU summation order depends on the rows and the SIMD width)
    things = [s for s in all_instances.segments if s.label_id not in STUFF]
    assert [s.label_id for s in instances.segments] == [s.label_id for s in things]
    assert [s.score for s in instances.segments] == pytest.approx([s.score for s in things], rel=1e-5)


def test_predict_command_writes_no_stuff_instances(panoptic_model, tmp_path):
    out = tmp_path / "out"
    code = main(["predict", "examples/coffee.png", "--model", str(panoptic_model), "--task", "instance",
                 "--threshold", "0.5", "--out", str(out), "--device", "cpu", "--num-workers", "0", "--quiet"])
    assert code == 0
    written = json.loads((out / "coffee.json").read_text())
    results = written if isinstance(written, list) else written.get("annotations", written.get("results"))
    categories = {r["category_id"] for r in results}
    assert categories and not categories & set(STUFF)
