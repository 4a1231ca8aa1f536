"""The seed's three usage examples run with only the import line changed, and agree with transformers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from helpers import make_confident, make_reference, write_hub_cache

EXAMPLES = Path(__file__).parent.parent / "examples"
MODELS = {
    "semantic": ("tue-mps/ade20k_semantic_eomt_large_512", dict(size={"shortest_edge": 64}, do_split_image=True)),
    "instance": ("tue-mps/coco_instance_eomt_large_640",
                 dict(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)),
    "panoptic": ("tue-mps/coco_panoptic_eomt_large_640",
                 dict(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)),
}
RUNNER = """
import runpy, sys, torch
preds = runpy.run_path(sys.argv[1])["preds"]
torch.save(preds, sys.argv[2])
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache holding tiny, confident random models under the seed's model ids."""
    root = tmp_path_factory.mktemp("hub")
    for task, (repo_id, processor_kwargs) in MODELS.items():
        model = make_confident(make_reference("eomt", seed=2, num_labels=6, num_queries=12), 10.0, 30.0)
        model.attn_mask_probs.zero_()
        source = root / "src" / task
        model.save_pretrained(source)
        transformers.EomtImageProcessor(**processor_kwargs).save_pretrained(source)
        write_hub_cache(root / "cache", repo_id, source)
    return root / "cache"


def _run(script: Path, out: Path, cache: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", RUNNER, str(script), str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("task", list(MODELS))
def test_example_matches_transformers(task, hub, tmp_path):
    ours = _run(EXAMPLES / f"{task}.py", tmp_path / "ours.pt", hub)
    text = (EXAMPLES / f"{task}.py").read_text()
    assert text.count("from eomt import") == 1
    shutil.copy(EXAMPLES / "coffee.png", tmp_path / "coffee.png")
    (tmp_path / f"{task}_hf.py").write_text(text.replace("from eomt import", "from transformers import"))
    theirs = _run(tmp_path / f"{task}_hf.py", tmp_path / "theirs.pt", hub)
    assert len(ours) == len(theirs) == 1
    if task == "semantic":
        assert ours[0].shape == (400, 600)
        assert torch.equal(ours[0], theirs[0])
        assert ours[0].unique().numel() > 1
        return
    ours, theirs = ours[0], theirs[0]
    assert len(ours["segments_info"]) > 0, "the model is not confident enough for a meaningful comparison"
    assert torch.equal(ours["segmentation"].long(), theirs["segmentation"].long())
    assert [(s["id"], s["label_id"]) for s in ours["segments_info"]] == [
        (s["id"], s["label_id"]) for s in theirs["segments_info"]]
    for a, b in zip(ours["segments_info"], theirs["segments_info"], strict=True):
        assert abs(a["score"] - b["score"]) <= 1e-5
