"""ADE20K panoptic evaluation merges stuff by the dataset's stuff classes (or the known ADE20K list)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ade20k_fixture import write_ade20k_panoptic

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.data.ade20k import ADE20K_PANOPTIC_STUFF
from eomt.evaluation.runner import evaluate
from eomt.predictor import Segmenter, default_stuff_classes
from eomt.processing.image_processor import EomtImageProcessor

NO_OBJECT = 150


def _wall_only(index, height, width):
    return np.ones((height, width), np.int64), [{"id": 1, "category_id": 1, "iscrowd": 0}]


def _split_wall_model() -> EomtForUniversalSegmentation:
    """A 150-class model whose queries 0 and 1 both say "wall" (stuff), on the left and right half."""
    config = EomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4,
                        image_size=64, num_labels=150)
    model = EomtForUniversalSegmentation(config).eval()

    def scripted(module, args, out):
        batch, queries, h, w = out.masks_queries_logits.shape
        classes = torch.full((batch, queries, 151), -20.0)
        classes[:, :2, 0] = 20.0  # wall
        classes[:, 2:, NO_OBJECT] = 20.0
        masks = torch.full((batch, queries, h, w), -10.0)
        masks[:, 0, :, : w // 2] = 10.0
        masks[:, 1, :, w // 2:] = 10.0
        out.class_queries_logits, out.masks_queries_logits = classes, masks
        return out

    model.register_forward_hook(scripted)
    return model


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return write_ade20k_panoptic(tmp_path_factory.mktemp("ade"), {"val": 1}, layout=_wall_only)


def test_a_stuff_region_split_over_two_queries_scores_as_one_segment(ade):
    processor = EomtImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    # even a Segmenter told there is no stuff is evaluated with the dataset's stuff classes
    segmenter = Segmenter(_split_wall_model(), processor, "panoptic", stuff_classes=[])
    result = evaluate(segmenter, ade, "ade20k_panoptic", progress=False)
    assert result["metrics"]["PQ"] == pytest.approx(100.0)
    assert result["metrics"]["Stuff"]["n"] == 1
    assert segmenter.stuff_classes == []  # the caller's object is left as it was
    # predicting with that Segmenter (no stuff) gives two wall segments: the split the evaluation merged
    prediction = segmenter.predict(str(ade / "images" / "validation" / "ADE_val_00000000.jpg"))
    assert [s.label_id for s in prediction.segments] == [0, 0]


def test_published_150_class_models_merge_the_ade20k_stuff_by_default(ade):
    processor = EomtImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    segmenter = Segmenter(_split_wall_model(), processor, "panoptic")  # records no stuff list
    assert segmenter.stuff_classes == ADE20K_PANOPTIC_STUFF == default_stuff_classes(150)
    prediction = segmenter.predict(str(ade / "images" / "validation" / "ADE_val_00000000.jpg"))
    assert [(s.label_id, s.area, s.isthing) for s in prediction.segments] == [(0, 64 * 64, False)]
    assert len(default_stuff_classes(133)) == 53 and default_stuff_classes(7) is None
