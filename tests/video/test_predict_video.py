"""`eomt predict VIDEO`: tracked results in YouTube-VIS / VIPSeg-style files, resuming, bad inputs in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from video_fixtures import colour_tracking_model, moving_shapes, write_video

from eomt.cli.commands import main

FRAMES, SIZE = 60, 64


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The colour-tracking model and a 60-frame video of three moving squares, with where each square is."""
    root = tmp_path_factory.mktemp("shapes")
    model = colour_tracking_model(root / "model")
    frames, tracks = moving_shapes(FRAMES, SIZE)
    video = write_video(root / "shapes.mp4", frames)
    return model, video, frames, tracks


def _box(track, t: int) -> np.ndarray:
    box = np.zeros((SIZE, SIZE), bool)
    top, left = track[t]
    box[top:top + SIZE // 4, left:left + SIZE // 4] = True
    return box


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith(".tmp")]


def _frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_each_shape_keeps_its_track_id_from_first_to_last_frame(shapes, tmp_path, capsys):
    model, video, _, tracks = shapes
    assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path), "--device", "cpu", "-q"]) == 0
    assert "60 frames (instance), 3 tracks" in capsys.readouterr().err
    results = json.loads((tmp_path / "shapes.json").read_text())
    assert sorted((r["track_id"], r["category_id"], r["label"]) for r in results) == [
        (0, 1, "red"), (1, 2, "green"), (2, 3, "blue")]
    for result in results:
        assert result["video_id"] == 1 and 0.5 < result["score"] <= 1.0
        assert len(result["segmentations"]) == FRAMES and all(s is not None for s in result["segmentations"])
        k = result["track_id"]
        ious = [_iou(mask_utils.decode(rle).astype(bool), _box(tracks[k], t))
                for t, rle in enumerate(result["segmentations"])]
        assert min(ious) > 0.6 and np.mean(ious) > 0.75, (k, min(ious), np.mean(ious))
    assert _frame_count(tmp_path / "shapes_overlay.mp4") == FRAMES
    frame0 = json.loads((tmp_path / "shapes" / "000000.json").read_text())
    assert [i["track_id"] for i in frame0["instances"]] == [0, 1, 2]
    assert not _temporaries(tmp_path)


def test_panoptic_and_semantic_frames(shapes, tmp_path):
    model, video, _, tracks = shapes
    assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path / "pan"), "--device", "cpu", "-q",
                 "--task", "panoptic"]) == 0
    assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path / "sem"), "--device", "cpu", "-q",
                 "--task", "semantic"]) == 0
    side = SIZE // 4
    for t in (0, FRAMES // 2, FRAMES - 1):
        png = np.asarray(Image.open(tmp_path / "pan" / "shapes" / f"{t:06d}.png")).astype(np.int64)
        ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
        labels = np.asarray(Image.open(tmp_path / "sem" / "shapes" / f"{t:06d}.png"))
        for k, track in enumerate(tracks):
            top, left = track[t]
            centre = (top + side // 2, left + side // 2)
            assert ids[centre] == k + 1  # the PNG id is the track id + 1 in every frame (VIPSeg)
            assert labels[centre] == k
    video_json = json.loads((tmp_path / "pan" / "shapes.json").read_text())
    frames = video_json["annotations"][0]["annotations"]
    assert video_json["annotations"][0]["video_id"] == "shapes" and len(frames) == FRAMES
    assert frames[5]["file_name"] == "shapes/000005.png"
    assert sorted(s["id"] for s in frames[5]["segments_info"]) == [1, 2, 3]
    assert [c["name"] for c in video_json["categories"]] == ["red", "green", "blue"]
    assert json.loads((tmp_path / "sem" / "shapes.json").read_text())["frames"] == FRAMES
    for task in ("pan", "sem"):
        assert _frame_count(tmp_path / task / "shapes_overlay.mp4") == FRAMES


def test_a_folder_of_frames_with_video(shapes, tmp_path, capsys):
    model, _, frames, _ = shapes
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(frames[:12]):
        Image.fromarray(frame).save(folder / f"frame{t}.png")  # frame10 after frame9: natural order
    assert main(["predict", str(folder), "--video", "-m", str(model), "-o", str(tmp_path / "out"),
                 "--device", "cpu", "-q"]) == 0
    results = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert sorted(r["track_id"] for r in results) == [0, 1, 2]
    assert all(len(r["segmentations"]) == 12 and None not in r["segmentations"] for r in results)


def test_an_interrupted_run_resumes_at_the_next_frame_with_the_same_results(shapes, tmp_path, monkeypatch):
    from eomt.video import job
    from eomt.video.segmenter import VideoSegmenter

    model, video, _, _ = shapes
    assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path / "whole"), "--device", "cpu",
                 "-q"]) == 0
    real_step = VideoSegmenter.step

    def step_then_stop(self, frame, task=None):
        if self.frame_index == 37:
            raise KeyboardInterrupt
        return real_step(self, frame, task)

    monkeypatch.setattr(VideoSegmenter, "step", step_then_stop)
    assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path / "cut"), "--device", "cpu",
                 "-q"]) == 130
    assert not (tmp_path / "cut" / "shapes.json").exists() and not _temporaries(tmp_path / "cut")
    assert (tmp_path / "cut" / "shapes" / "000036.json").exists()
    monkeypatch.setattr(VideoSegmenter, "step", real_step)
    assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path / "cut"), "--device", "cpu",
                 "-q"]) == 1  # without --skip-existing the earlier files are not touched
    changed = job.predict_videos(video, tmp_path / "cut", str(model), device="cpu", skip_existing=True,
                                 threshold=0.9, progress=False)
    assert "another threshold" in changed[0].error  # a partial run continues only with its own settings
    reports = job.predict_videos(video, tmp_path / "cut", str(model), device="cpu", skip_existing=True,
                                 progress=False)
    assert reports[0].resumed_at == 37 and reports[0].frames == FRAMES and not reports[0].failed
    assert (tmp_path / "cut" / "shapes.json").read_bytes() == (tmp_path / "whole" / "shapes.json").read_bytes()
    again = job.predict_videos(video, tmp_path / "cut", str(model), device="cpu", skip_existing=True, progress=False)
    assert again[0].skipped
    assert job.predict_videos(video, tmp_path / "cut", str(model), device="cpu", overwrite=True, threshold=0.9,
                              progress=False)[0].frames == FRAMES


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory, shapes):
    import av

    root = tmp_path_factory.mktemp("bad")
    frames = shapes[2]
    (root / "notes.mp4").write_text("this is not a video\n" * 20)
    with av.open(str(root / "zero.avi"), "w") as container:  # a video stream with no frame
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()  # the header, with no frame after it
    assert (root / "zero.avi").stat().st_size > 0
    # an MP4 with its index first, cut in the middle: the first frames decode, the rest are missing
    with av.open(str(root / "long.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = (root / "long.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[:int(len(data) * 0.7)])
    (root / "long.mp4").unlink()
    write_video(root / "tiny.mkv", [np.zeros((1, 1, 3), np.uint8)] * 3, codec="ffv1", pix_fmt="yuv444p")
    write_video(root / "odd.mkv", frames[:5], codec="mpeg4")
    write_video(root / "short.mp4", frames[:6])
    (root / "codec.mkv").write_bytes((root / "odd.mkv").read_bytes().replace(b"V_MPEG4/ISO/ASP", b"V_ZZZZZ/ISO/ZZZ"))
    (root / "odd.mkv").unlink()
    return root


@pytest.mark.parametrize("name,message", [
    ("notes.mp4", "notes.mp4: error: not a video"),
    ("zero.avi", "zero.avi: error: no frame could be decoded"),
    ("tiny.mkv", "tiny.mkv: error: video is 1x1 pixels, too small to segment"),
    ("codec.mkv", "codec.mkv: error: video codec not supported"),
])
def test_a_bad_video_is_one_line_and_writes_nothing(shapes, bad_videos, tmp_path, capsys, name, message):
    model = shapes[0]
    out = tmp_path / "out"
    assert main(["predict", str(bad_videos / name), "-m", str(model), "-o", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*"))


def test_a_truncated_video_gives_the_frames_it_could_decode_and_names_the_problem(shapes, bad_videos, tmp_path,
                                                                                  capsys):
    model = shapes[0]
    assert main(["predict", str(bad_videos / "cut.mp4"), str(bad_videos / "short.mp4"), "-m", str(model), "-o",
                 str(tmp_path), "--device", "cpu", "-q"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "truncated or corrupt" in lines[0] and "of the 60 frames" in lines[0]
    assert "short.mp4: 6 frames" in lines[1]  # the next video goes on
    decoded = int(lines[0].split(": ")[1].split(" frames")[0])
    assert 0 < decoded < FRAMES
    results = json.loads((tmp_path / "cut.json").read_text())
    assert all(len(r["segmentations"]) == decoded for r in results)
    assert _frame_count(tmp_path / "cut_overlay.mp4") == decoded
    assert not _temporaries(tmp_path)


def test_glob_patterns_name_videos(shapes, bad_videos, tmp_path, capsys):
    model = shapes[0]
    assert main(["predict", str(bad_videos / "sho*.mp4"), str(bad_videos / "none*.mp4"), "-m", str(model), "-o",
                 str(tmp_path), "--device", "cpu", "-q"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert "none*.mp4: error: no file matches this pattern" in lines[0] and "short.mp4: 6 frames" in lines[1]


def test_video_usage_errors(shapes, tmp_path, capsys):
    model, video, _, _ = shapes
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(image)
    cases = [
        (["--batch-size", "2"], "--batch-size applies to images"),
        (["--tile", "64"], "--tile applies to images"),
        (["--dtype", "int8"], "--dtype int8 applies to images"),
    ]
    for extra, message in cases:
        assert main(["predict", str(video), "-m", str(model), "-o", str(tmp_path / "o"), *extra]) == 1
        assert message in capsys.readouterr().err
    assert main(["predict", str(video), str(image), "-m", str(model), "-o", str(tmp_path / "o")]) == 1
    assert "cannot be mixed" in capsys.readouterr().err
    assert main(["predict", str(video), "-m", str(image.parent / "missing"), "-o", str(tmp_path / "o"),
                 "--device", "cpu"]) == 1
    assert "--model" in capsys.readouterr().err


def test_info_describes_a_video_checkpoint(shapes, capsys):
    assert main(["info", str(shapes[0])]) == 0
    out = capsys.readouterr().out
    assert "carried from frame to frame (VidEoMT, video)" in out and "red, green, blue" in out


def test_the_cli_default_video_model_is_the_segmenters():
    from eomt.cli.commands import DEFAULT_VIDEO_MODEL
    from eomt.video.segmenter import DEFAULT_VIDEO_MODEL as SEGMENTER_DEFAULT

    assert DEFAULT_VIDEO_MODEL == SEGMENTER_DEFAULT
