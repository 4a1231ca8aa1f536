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


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "libx264",
                pix_fmt: str = "yuv420p") -> Path:
    """Encode (H, W, 3) uint8 frames with PyAV (H.264 by default, at a fine quality: colours stay within a few
    levels of the input; MPEG-4 Part 2 where this FFmpeg has no libx264)."""
    import av

    if codec == "libx264":
        try:
            av.codec.Codec("libx264", "w")
        except Exception:  # noqa: BLE001
            codec = "mpeg4"
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"crf": "12"} if codec == "libx264" else {"qscale": "1"} if codec == "mpeg4" else {}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230)]  # red, green, blue: classes 0, 1, 2


def moving_shapes(num_frames: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[list[tuple]]]:
    """Frames of three flat-coloured squares (side size // 4) gliding over a grey background, each in its own
    horizontal band (they never overlap), bouncing off the sides; and per shape its (top, left) per frame."""
    rng = np.random.default_rng(seed)
    side, band = size // 4, size // len(COLOURS)
    shapes = []
    for k in range(len(COLOURS)):
        shapes.append({"x": float(rng.uniform(0, size - side)), "vx": float(rng.choice([-1, 1]) * rng.uniform(1, 2.5)),
                       "top": k * band + int(rng.integers(0, band - side + 1)), "track": []})
    frames = []
    for _ in range(num_frames):
        frame = np.full((size, size, 3), 128, np.uint8)
        for colour, shape in zip(COLOURS, shapes, strict=True):
            left = int(round(shape["x"]))
            frame[shape["top"]:shape["top"] + side, left:left + side] = colour
            shape["track"].append((shape["top"], left))
            shape["x"] += shape["vx"]
            if not 0 <= shape["x"] <= size - side:
                shape["vx"] *= -1
                shape["x"] = min(max(shape["x"], 0), size - side)
        frames.append(frame)
    return frames, [shape["track"] for shape in shapes]


def colour_tracking_model(directory: Path, size: int = 64, patch: int = 4) -> Path:
    """A VidEoMT whose weights make query k segment and classify the shapes of colour COLOURS[k] (classes 0-2),
    saved to `directory`; queries 3-5 predict "no object".

    The blocks are identities (LayerScale 0); the patch embedding puts a patch's mean normalised R, G, B (and
    their negatives, and a constant pair) in the first dimensions; a huge LayerNorm eps makes the final norm
    affine, so query k's mask logit is 4 (c_k - the other two channels - 1.8); query k carries a code in
    dimension 8 + k, kept by the propagation (query_updater = I / 2) and read by the class head.
    """
    from eomt import VideomtConfig, VideomtForUniversalSegmentation

    hidden = 32
    config = VideomtConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, num_blocks=1,
                           num_queries=6, image_size=size, patch_size=patch, num_labels=3, num_upscale_blocks=0,
                           layer_norm_eps=1e6, id2label={0: "red", 1: "green", 2: "blue"})
    model = VideomtForUniversalSegmentation(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        conv = model.embeddings.patch_embeddings.projection
        for c in range(3):
            conv.weight[c, c] = 1.0 / patch**2
            conv.weight[3 + c, c] = -1.0 / patch**2
        conv.bias[6], conv.bias[7] = 1.0, -1.0
        model.layernorm.weight.fill_(1000.0)  # undoes the 1 / sqrt(eps) of the affine LayerNorm
        codes = torch.zeros(6, hidden)
        for q in range(6):
            codes[q, 8 + q] = 10.0
        model.query.weight.copy_(codes)
        model.query_updater.weight.copy_(0.5 * torch.eye(hidden))
        for fc in (model.mask_head.fc1, model.mask_head.fc2):
            fc.weight.copy_(torch.eye(hidden))
        for k in range(3):
            direction = torch.zeros(hidden)
            direction[:3] = -1.0
            direction[k] = 1.0
            direction[6] = -1.8  # a patch half covered by the shape scores about 0
            model.mask_head.fc3.weight[:, 8 + k] = 4.0 * direction / 10.0
        for q in range(6):
            model.class_predictor.weight[min(q, 3), 8 + q] = 2.0
    model.save_pretrained(directory)
    return directory
