"""VideoSegmenter, one frame per call, equals transformers' whole-clip forward and its post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from video_fixtures import make_video_reference

from eomt.video import VideoSegmenter

FRAMES, HEIGHT, WIDTH = 6, 40, 56


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import transformers

    directory = tmp_path_factory.mktemp("videomt")
    reference = make_video_reference(seed=3, num_queries=8)
    reference.save_pretrained(directory)
    transformers.VideomtVideoProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory, reference


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    # a slowly changing scene, so that tracks carry on
    return [np.clip(base.astype(int) + 6 * t, 0, 255).astype(np.uint8) for t in range(FRAMES)]


@pytest.fixture(scope="module")
def transformers_run(checkpoint, frames):
    import transformers

    directory, reference = checkpoint
    processor = transformers.VideomtVideoProcessor.from_pretrained(directory)
    inputs = processor(videos=[np.stack(frames)], return_tensors="pt")
    with torch.no_grad():
        outputs = reference(pixel_values_videos=inputs["pixel_values_videos"])
    return processor, inputs["pixel_values_videos"], outputs


def _sequential(our_map: torch.Tensor, segments) -> torch.Tensor:
    """Our track-id map renumbered as transformers numbers a frame's segments: 0, 1, ... in listed order."""
    renumbered = torch.full_like(our_map, -1)
    for position, segment in enumerate(segments):
        renumbered[our_map == segment.id] = position
    return renumbered


def test_preprocessing_and_logits_equal_the_clip_forward(checkpoint, frames, transformers_run):
    directory, _ = checkpoint
    _, pixel_values, outputs = transformers_run
    seg = VideoSegmenter.from_pretrained(directory, device="cpu")
    for t, frame in enumerate(frames):
        assert (seg.preprocess(frame)[0] - pixel_values[0, t]).abs().max() < 1e-5
        mask_logits, class_logits = seg.logits(frame)
        assert (mask_logits - outputs.masks_queries_logits[t]).abs().max() < 1e-4
        assert (class_logits - outputs.class_queries_logits[t]).abs().max() < 1e-4
    assert seg.frame_index == FRAMES and seg.queries.shape == (1, 8, 32)


def test_instance_tracks_equal_transformers(checkpoint, frames, transformers_run):
    directory, _ = checkpoint
    processor, _, outputs = transformers_run
    expected = processor.post_process_instance_segmentation(outputs, target_sizes=[(HEIGHT, WIDTH)] * FRAMES)
    seg = VideoSegmenter.from_pretrained(directory, device="cpu", task="instance")
    kept = 0
    for t, frame in enumerate(frames):
        got = seg.step(frame)
        want = expected[t]
        assert [s.label_id for s in got.segments] == [s["label_id"] for s in want["segments_info"]]
        assert [s.score for s in got.segments] == pytest.approx([s["score"] for s in want["segments_info"]], abs=1e-5)
        assert torch.equal(_sequential(got.segmentation, got.segments), want["segmentation"].long())
        # the track id is the query: transformers' own mask logits of that query give our mask
        for k, segment in enumerate(got.segments):
            theirs = F.interpolate(outputs.masks_queries_logits[t][segment.id][None, None], size=(HEIGHT, WIDTH),
                                   mode="bilinear", align_corners=False)[0, 0] > 0
            assert torch.equal(got.masks[k], theirs)
        kept += len(got.segments)
    assert 0 < kept < FRAMES * 8  # the threshold kept some queries and dropped others


def test_panoptic_equals_transformers_with_and_without_merged_stuff(checkpoint, frames, transformers_run):
    directory, _ = checkpoint
    processor, _, outputs = transformers_run
    # a random model's masks overlap a lot: a lower overlap threshold keeps segments to compare
    totals = []
    for stuff in (None, {1, 3}):
        expected = processor.post_process_panoptic_segmentation(outputs, target_sizes=[(HEIGHT, WIDTH)] * FRAMES,
                                                                threshold=0.9, overlap_mask_area_threshold=0.3,
                                                                label_ids_to_fuse=stuff)
        seg = VideoSegmenter.from_pretrained(directory, device="cpu", task="panoptic", threshold=0.9)
        seg.stuff_classes, seg.overlap_mask_area_threshold = stuff, 0.3
        kept = 0
        for t, frame in enumerate(frames):
            got = seg.step(frame)
            want = expected[t]
            assert [s.label_id for s in got.segments] == [s["label_id"] for s in want["segments_info"]]
            assert torch.equal(_sequential(got.segmentation, got.segments), want["segmentation"].long())
            for segment in got.segments:
                assert segment.id == (8 + segment.label_id if stuff and segment.label_id in stuff else segment.id)
                assert segment.area == int((got.segmentation == segment.id).sum())
            kept += len(got.segments)
        totals.append(kept)
    assert totals[0] > totals[1] >= FRAMES  # segments were kept, and stuff queries merged


def test_semantic_equals_transformers(checkpoint, frames, transformers_run):
    directory, _ = checkpoint
    processor, _, outputs = transformers_run
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(HEIGHT, WIDTH)] * FRAMES)
    seg = VideoSegmenter.from_pretrained(directory, device="cpu", task="semantic")
    for t, frame in enumerate(frames):
        got = seg.step(frame)
        assert torch.equal(got.segmentation, expected[t])
        assert sum(s.area for s in got.segments) == HEIGHT * WIDTH


def test_state_round_trip_continues_the_video(checkpoint, frames):
    directory, _ = checkpoint
    whole = VideoSegmenter.from_pretrained(directory, device="cpu")
    results = [whole.step(f) for f in frames]
    first = VideoSegmenter.from_pretrained(directory, device="cpu")
    for frame in frames[:3]:
        first.step(frame)
    resumed = VideoSegmenter.from_pretrained(directory, device="cpu")
    resumed.load_state(first.state())
    for t in range(3, FRAMES):
        again = resumed.step(frames[t])
        assert again.index == t and torch.equal(again.segmentation, results[t].segmentation)
    resumed.reset()
    assert torch.equal(resumed.step(frames[0]).segmentation, results[0].segmentation)


def test_task_from_the_checkpoint_name_and_bad_settings(checkpoint, tmp_path):
    from eomt.video.segmenter import infer_video_task

    assert infer_video_task({}, {}, "tue-mps/videomt-dinov2-large-vipseg") == "panoptic"
    assert infer_video_task({}, {}, "tue-mps/videomt-dinov2-large-vspw") == "semantic"
    assert infer_video_task({}, {}, "tue-mps/videomt-dinov2-small-ytvis2019") == "instance"
    assert infer_video_task({"task": "semantic"}, {}, "x-ytvis") == "semantic"
    directory, _ = checkpoint
    with pytest.raises(ValueError, match="threshold"):
        VideoSegmenter.from_pretrained(directory, device="cpu", threshold=2.0)
    with pytest.raises(ValueError, match="unknown task"):
        VideoSegmenter.from_pretrained(directory, device="cpu", task="depth")
    with pytest.raises(ValueError, match="int8"):
        VideoSegmenter.from_pretrained(directory, device="cpu", dtype="int8")
    seg = VideoSegmenter.from_pretrained(directory, device="cpu")
    with pytest.raises(ValueError, match="query state"):
        seg.load_state({"frame_index": 3, "queries": torch.zeros(1, 5, 32)})
