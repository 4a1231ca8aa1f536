"""VidEoMT: eomt's network gives transformers' `videomt` outputs on the same weights, loads and writes its files."""

from __future__ import annotations

import pytest
import torch
from helpers import write_hub_cache
from video_fixtures import make_video_reference, random_clip

from eomt import VideomtConfig, VideomtForUniversalSegmentation
from eomt.checkpoints.errors import CheckpointError
from eomt.config import ConfigError, EomtConfig

TOLERANCE = 1e-4

CASES = [
    # (reference settings, frames, batch)
    ({}, 1, 1),
    ({}, 4, 1),
    ({}, 3, 2),
    ({"image_size": 48, "patch_size": 8, "num_upscale_blocks": 1, "num_queries": 9}, 5, 1),
    ({"image_size": 64, "hidden_size": 48, "num_attention_heads": 3, "num_hidden_layers": 4, "num_blocks": 3,
      "use_swiglu_ffn": True, "num_register_tokens": 0}, 3, 1),
]


def _pair(tmp_path, settings, seed=0):
    reference = make_video_reference(seed=seed, **settings)
    reference.save_pretrained(tmp_path / "ref")
    ours = VideomtForUniversalSegmentation.from_pretrained(tmp_path / "ref")
    return reference, ours


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("settings,frames,batch", CASES)
def test_clip_forward_equals_transformers(tmp_path, settings, frames, batch):
    reference, ours = _pair(tmp_path, settings)
    clip = random_clip(frames, reference.config.image_size, batch=batch)
    with torch.no_grad():
        expected = reference(pixel_values_videos=clip)
        got = ours(clip)
    _close(got.masks_queries_logits, expected.masks_queries_logits)
    _close(got.class_queries_logits, expected.class_queries_logits)
    _close(got.last_hidden_state, expected.last_hidden_state)
    assert got.masks_queries_logits.shape[0] == frames * batch


def test_the_weights_make_class_predictions_confident(tmp_path):
    """The thresholds of post-processing are tested against real decisions: some queries sure, others not."""
    reference, _ = _pair(tmp_path, {})
    with torch.no_grad():
        probs = reference(pixel_values_videos=random_clip(4, 32)).class_queries_logits.softmax(-1).amax(-1)
    assert (probs > 0.99).any() and (probs < 0.8).any()


def test_frame_by_frame_equals_the_clip_and_clips_continue(tmp_path):
    _, ours = _pair(tmp_path, {})
    clip = random_clip(6, 32)
    with torch.no_grad():
        whole = ours(clip)
        queries, masks = None, []
        for t in range(6):
            tokens = ours.encode_frames(clip[:, t])
            mask_logits, _, _, queries = ours.decode_frame(tokens, (2, 2), queries)
            masks.append(mask_logits)
        first = ours(clip[:, :2])
        rest = ours(clip[:, 2:], previous_queries=first.propagated_queries)
    _close(torch.cat(masks), whole.masks_queries_logits)
    _close(torch.cat([first.class_queries_logits, rest.class_queries_logits]), whole.class_queries_logits)
    _close(rest.propagated_queries, whole.propagated_queries)


def test_propagation_changes_later_frames(tmp_path):
    """The same frame twice: the second pass differs from the first (its queries come from the first)."""
    _, ours = _pair(tmp_path, {})
    frame = random_clip(1, 32)
    with torch.no_grad():
        out = ours(frame.repeat(1, 2, 1, 1, 1))
    assert (out.class_queries_logits[0] - out.class_queries_logits[1]).abs().max() > 1e-3


def test_saved_files_load_in_transformers(tmp_path):
    import transformers

    reference, ours = _pair(tmp_path, {})
    ours.save_pretrained(tmp_path / "ours")
    back, info = transformers.VideomtForUniversalSegmentation.from_pretrained(tmp_path / "ours",
                                                                              output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    clip = random_clip(3, 32)
    with torch.no_grad():
        _close(back.eval()(pixel_values_videos=clip).masks_queries_logits,
               reference(pixel_values_videos=clip).masks_queries_logits)
    assert VideomtConfig.from_pretrained(tmp_path / "ours").architecture() == "VideomtForUniversalSegmentation"


def test_hub_id_from_the_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    reference = make_video_reference()
    reference.save_pretrained(tmp_path / "src")
    write_hub_cache(tmp_path / "cache", "tue-mps/videomt-tiny-test", tmp_path / "src")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    ours = VideomtForUniversalSegmentation.from_pretrained("tue-mps/videomt-tiny-test")
    clip = random_clip(2, 32)
    with torch.no_grad():
        _close(ours(clip).class_queries_logits, reference(pixel_values_videos=clip).class_queries_logits)


def test_image_and_video_checkpoints_are_not_confused(tmp_path):
    reference = make_video_reference()
    reference.save_pretrained(tmp_path / "video")
    EomtConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=3, num_blocks=2).save_pretrained(
        tmp_path / "image")
    from eomt import EomtForUniversalSegmentation

    with pytest.raises(CheckpointError, match="VidEoMT"):
        EomtForUniversalSegmentation.from_pretrained(tmp_path / "video")
    with pytest.raises(CheckpointError, match="image EoMT checkpoint"):
        VideomtForUniversalSegmentation.from_pretrained(tmp_path / "image")
    with pytest.raises(ConfigError, match="VideomtConfig"):
        VideomtForUniversalSegmentation(EomtConfig())


def test_bad_inputs_are_one_line_errors(tmp_path):
    _, ours = _pair(tmp_path, {})
    with pytest.raises(ValueError, match="pixel_values_videos must be"):
        ours(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no frame"):
        ours(torch.zeros(1, 0, 3, 32, 32))
    with pytest.raises(ValueError, match="not supported"):
        ours(torch.zeros(1, 1, 3, 32, 32), mask_labels=[torch.zeros(1, 32, 32)], class_labels=[torch.zeros(1)])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        ours(torch.zeros(1, 1, 3, 30, 32))
    with pytest.raises(ValueError, match="previous_queries"):
        ours(torch.zeros(1, 1, 3, 32, 32), previous_queries=torch.zeros(1, 5, 32))
