"""VideomtForUniversalSegmentation: EoMT on video, with queries carried from frame to frame (VidEoMT).

The same plain ViT as EoMT and the same heads. Per frame: the first `depth - num_blocks` blocks see the
patches alone; then the query tokens join for the last `num_blocks` blocks. On the first frame the
queries are the learned `query.weight`; on every later one they are `query_updater(q) + query.weight`,
where q is the previous frame's query tokens after the last block (before the final norm). A query thus
follows its object through the video, and its index serves as the track id: no tracker, no matching.
There is no masked attention at all (VidEoMT trains without it).

`forward` takes a whole clip, as transformers' `VideomtForUniversalSegmentation` does, and stacks the
per-frame outputs frame-major (row `t * batch + b`). `encode_frames` + `decode_frame` do the same one
frame at a time, so a stream needs the memory of one frame whatever its length (`eomt.video`); the
clip forward may also start from the queries a previous call returned (`previous_queries`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, VideomtConfig
from .eomt import IGNORED_KWARGS, EomtForUniversalSegmentation, EomtOutput


@dataclass
class VideomtOutput(EomtOutput):
    """Clip outputs, frame-major (transformers' layout), plus `propagated_queries` (batch, Q, C): the query
    tokens of the clip's last frame, which continue the video in the next call (an eomt addition)."""

    propagated_queries: Tensor | None = None


class VideomtForUniversalSegmentation(EomtForUniversalSegmentation):
    """VidEoMT for video instance, panoptic and semantic segmentation (DINOv2 backbone; inference only)."""

    config_class = VideomtConfig
    main_input_name = "pixel_values_videos"

    def __init__(self, config: VideomtConfig) -> None:
        if not isinstance(config, VideomtConfig):
            raise ConfigError(f"VideomtForUniversalSegmentation needs a VideomtConfig, got {type(config).__name__}")
        super().__init__(config)
        # transformers' embeddings carry the mask token of masked-image pretraining; never used here, kept so
        # that a checkpoint round-trips unchanged.
        self.embeddings.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.query_updater = nn.Linear(config.hidden_size, config.hidden_size)

    # ---- one frame at a time -------------------------------------------------------------------

    def _check_frames(self, pixel_values: Tensor) -> tuple[int, int]:
        self._check_input(pixel_values)
        height, width = pixel_values.shape[-2:]
        return height // self.config.patch_size, width // self.config.patch_size

    def encode_frames(self, pixel_values: Tensor) -> Tensor:
        """(N, 3, H, W) frames -> their tokens after the blocks that run without queries (N, 1 + R + hw, C).

        Frames are independent here, so any number may go through at once."""
        self._check_frames(pixel_values)
        x = self.embeddings(pixel_values)
        for block in self.layers[:self.first_query_block]:
            x = block(x)
        return x

    def decode_frame(self, tokens: Tensor, grid: tuple[int, int],
                     previous_queries: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One frame's encoded tokens (B, 1 + R + hw, C) and the previous frame's query tokens (B, Q, C; None on
        the first frame) -> mask logits (B, Q, 4h, 4w), class logits (B, Q, K + 1), the final-normed tokens and
        this frame's query tokens (for the next frame)."""
        queries = self.query.weight[None].expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        if previous_queries is not None:
            if previous_queries.shape != queries.shape:
                raise ValueError(f"previous_queries must be (batch, num_queries, hidden) = {tuple(queries.shape)}, "
                                 f"got {tuple(previous_queries.shape)}")
            queries = self.query_updater(previous_queries.to(tokens.dtype)) + queries
        x = torch.cat([queries, tokens], dim=1)
        for block in self.layers[self.first_query_block:]:
            x = block(x)
        normed = self.layernorm(x)
        mask_logits, class_logits = self.predict(normed, grid)
        return mask_logits, class_logits, normed, x[:, :self.config.num_queries]

    # ---- a whole clip --------------------------------------------------------------------------

    def forward(self, pixel_values_videos: Tensor | None = None, mask_labels: list[Tensor] | None = None,
                class_labels: list[Tensor] | None = None, patch_offsets: list[Tensor] | None = None,
                previous_queries: Tensor | None = None, return_dict: bool | None = None,
                **kwargs: Any) -> VideomtOutput | tuple:
        """Logits of every frame of (B, T, 3, H, W) clips, stacked frame-major: (T * B, Q, ...).

        `previous_queries` (B, Q, C) continues a video from an earlier call's `propagated_queries`.
        Training is not supported (as in transformers): labels are a ValueError.
        """
        if "pixel_values" in kwargs:
            raise ValueError("Use `pixel_values_videos` with `VideomtForUniversalSegmentation`.")
        unknown = sorted(set(kwargs) - IGNORED_KWARGS - {"output_hidden_states", "output_attentions"})
        if unknown:
            raise TypeError(f"forward() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
            raise ValueError("VideomtForUniversalSegmentation does not return hidden states or attentions")
        if pixel_values_videos is None:
            raise ValueError("You have to specify pixel_values_videos")
        if pixel_values_videos.ndim != 5:
            raise ValueError("pixel_values_videos must be (batch, frames, channels, height, width), got shape "
                             f"{tuple(pixel_values_videos.shape)}")
        if mask_labels is not None or class_labels is not None:
            raise ValueError("training VidEoMT is not supported: VideomtForUniversalSegmentation is inference only")
        if return_dict is None:
            return_dict = self.config.return_dict
        batch, frames = pixel_values_videos.shape[:2]
        if batch == 0 or frames == 0:
            raise ValueError(f"pixel_values_videos holds no frame (shape {tuple(pixel_values_videos.shape)})")
        flat = pixel_values_videos.reshape(batch * frames, *pixel_values_videos.shape[2:])
        grid = self._check_frames(flat)
        tokens = self.encode_frames(flat)
        tokens = tokens.view(batch, frames, *tokens.shape[1:])
        masks, classes, normed = [], [], []
        queries = previous_queries
        for t in range(frames):
            mask_logits, class_logits, last, queries = self.decode_frame(tokens[:, t], grid, queries)
            masks.append(mask_logits)
            classes.append(class_logits)
            normed.append(last)
        out = VideomtOutput(class_queries_logits=torch.cat(classes), masks_queries_logits=torch.cat(masks),
                            last_hidden_state=torch.cat(normed), propagated_queries=queries)
        return out if return_dict else out.to_tuple()
