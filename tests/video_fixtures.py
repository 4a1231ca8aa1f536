"""Shared helpers of the VidEoMT tests: tiny transformers reference models and videos made on the spot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2, num_queries=6, image_size=32,
            patch_size=16, num_labels=4)


def make_video_reference(seed: int = 0, confident: bool = True, **overrides):
    """A randomly initialised transformers VidEoMT (the oracle), every weight perturbed; with `confident`, class
    and mask logits are sharpened so that thresholds keep some queries and drop others."""
    import transformers

    settings = {**TINY, **overrides}
    torch.manual_seed(seed)
    model = transformers.VideomtForUniversalSegmentation(transformers.VideomtConfig(**settings))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lambda1" in name or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.add_(0.02 * torch.randn_like(param))
        model.query_updater.weight.mul_(3.0)  # make the propagated queries matter
        if confident:
            model.class_predictor.weight.mul_(30.0)
            model.class_predictor.bias.mul_(30.0)
            model.mask_head.fc3.weight.mul_(8.0)
            model.mask_head.fc3.bias.mul_(8.0)
    return model.eval()


def random_clip(frames: int, size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "mpeg4",
                pix_fmt: str = "yuv420p") -> Path:
    """Encode (H, W, 3) uint8 frames with PyAV."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_shapes(num_frames: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    """Frames of a few flat-coloured shapes drifting over a grey background, and where each shape is.

    Returns the frames and, per shape, its colour and per-frame (top, left) box corner; boxes are
    size // 4 squares bouncing off the borders."""
    rng = np.random.default_rng(seed)
    side = size // 4
    colours = [(230, 40, 40), (40, 200, 60), (50, 80, 230)]
    shapes = []
    for colour in colours:
        pos = rng.uniform(0, size - side, 2)
        vel = rng.uniform(-1.5, 1.5, 2)
        shapes.append({"colour": colour, "pos": pos, "vel": vel, "track": []})
    frames = []
    for _ in range(num_frames):
        frame = np.full((size, size, 3), 128, np.uint8)
        for shape in shapes:
            top, left = (int(v) for v in shape["pos"])
            frame[top:top + side, left:left + side] = shape["colour"]
            shape["track"].append((top, left))
            shape["pos"] = shape["pos"] + shape["vel"]
            for axis in range(2):
                if not 0 <= shape["pos"][axis] <= size - side:
                    shape["vel"][axis] *= -1
                    shape["pos"][axis] = np.clip(shape["pos"][axis], 0, size - side)
        frames.append(frame)
    return frames, shapes
