"""Token embeddings: patches, CLS and register tokens, and position information.

DINOv2 uses learned absolute position embeddings for the patch tokens; for an input whose patch
grid differs from the trained one they are resampled bicubically (and cached, not recomputed per
call). Under torch.compile / torch.export (ONNX) the resample is written as two matrix products
with the weights of torch's antialiased bicubic filter, computed from the input size inside the
graph: antialiased bicubic has no ONNX operator, and one graph then serves every input size.
DINOv3 uses axial RoPE instead, which works at any grid by construction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EomtConfig


def resample_position_embeddings(weight: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Resize (h*w, C) patch position embeddings to another grid, bicubic with antialiasing."""
    if tuple(old_grid) == tuple(new_grid):
        return weight
    channels = weight.shape[-1]
    grid = weight.reshape(1, *old_grid, channels).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    return grid.permute(0, 2, 3, 1).reshape(-1, channels).to(weight.dtype)


def _aa_cubic(x: Tensor) -> Tensor:
    """The cubic convolution kernel with a = -0.5, which torch's antialiased bicubic resize uses (as PIL)."""
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_aa_matrix(in_size: int, out_size, device: torch.device | None = None) -> Tensor:
    """(out_size, in_size) matrix M with M @ v == torch's 1-D antialiased bicubic resize of v (align_corners=False).

    Row i holds the normalised filter weights of output pixel i, exactly as torch computes them
    (support 2 * max(scale, 1), window [trunc(c - s + 0.5), trunc(c + s + 0.5)) clipped to the input).
    `out_size` may be a symbolic size: every step is a tensor operation, with no Python branch on it.
    """
    f32 = torch.float32
    out_t = torch.full((), out_size, dtype=f32, device=device)
    scale = torch.full((), float(in_size), dtype=f32, device=device) / out_t
    stretch = scale.clamp(min=1.0)  # the filter widens when downsampling (antialiasing)
    support = 2.0 * stretch
    centers = (torch.arange(out_size, dtype=f32, device=device) + 0.5) * scale  # (out,)
    lo = (centers - support + 0.5).floor().clamp(min=0.0)
    hi = (centers + support + 0.5).floor().clamp(max=float(in_size))
    j = torch.arange(in_size, dtype=f32, device=device)  # (in,)
    weights = _aa_cubic((j[None, :] - centers[:, None] + 0.5) / stretch)
    inside = (j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None])
    weights = torch.where(inside, weights, torch.zeros_like(weights))
    return weights / weights.sum(dim=1, keepdim=True)


def resample_position_embeddings_traceable(weight: Tensor, old_grid: tuple[int, int], new_grid) -> Tensor:
    """`resample_position_embeddings` as two matrix products; `new_grid` may hold symbolic sizes.

    Equal to the antialiased bicubic resize up to float32 rounding (tests: 1e-6), and the identity
    at the native grid, so a traced graph needs no size-dependent shortcut.
    """
    channels = weight.shape[-1]
    rows = bicubic_aa_matrix(old_grid[0], new_grid[0], weight.device)
    cols = bicubic_aa_matrix(old_grid[1], new_grid[1], weight.device)
    grid = weight.float().reshape(old_grid[0], old_grid[1], channels)
    grid = torch.einsum("ih,hwc->iwc", rows, grid)
    grid = torch.einsum("jw,iwc->ijc", cols, grid)
    return grid.reshape(-1, channels).to(weight.dtype)


class PatchEmbeddings(nn.Module):
    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.projection(pixel_values.to(self.projection.weight.dtype)).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    """[CLS | registers | patches] tokens; adds absolute position embeddings unless the backbone uses RoPE."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.grid_size = config.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
        self.patch_embeddings = PatchEmbeddings(config)
        self.num_prefix_tokens = 1 + config.num_register_tokens
        if config.is_dinov3:
            self.position_embeddings = None
        else:
            self.position_embeddings = nn.Embedding(self.grid_size[0] * self.grid_size[1], dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self._pos_cache: dict[tuple, Tensor] = {}

    def position_embeddings_for(self, grid: tuple[int, int]) -> Tensor:
        """Position embeddings for a patch grid; resampled ones are cached until the weights change."""
        weight = self.position_embeddings.weight
        if torch.compiler.is_compiling():  # no cache and no shortcut: the graph must hold for every size
            return resample_position_embeddings_traceable(weight, self.grid_size, grid)
        if grid == self.grid_size:
            return weight
        if torch.is_grad_enabled() and weight.requires_grad:
            return resample_position_embeddings(weight, self.grid_size, grid)
        key = (grid, weight.device, weight.dtype, weight.data_ptr(), weight._version)
        cached = self._pos_cache.get(key)
        if cached is None:
            if len(self._pos_cache) > 16:
                self._pos_cache.clear()
            with torch.no_grad():
                cached = resample_position_embeddings(weight, self.grid_size, grid)
            self._pos_cache[key] = cached
        return cached

    def forward(self, pixel_values: Tensor) -> Tensor:
        batch = pixel_values.shape[0]
        grid = (pixel_values.shape[-2] // self.patch_embeddings.patch_size,
                pixel_values.shape[-1] // self.patch_embeddings.patch_size)
        patches = self.patch_embeddings(pixel_values)
        if self.position_embeddings is not None:
            patches = patches + self.position_embeddings_for(grid)
        tokens = torch.cat(
            [self.cls_token.expand(batch, -1, -1), self.register_tokens.expand(batch, -1, -1), patches], dim=1
        )
        return self.dropout(tokens)


class RopeEmbeddings(nn.Module):
    """Axial 2-D RoPE of DINOv3: patch centres in [-1, 1], head_dim/4 frequencies per axis.

    In training, the coordinates may be randomly shifted, jittered per axis and rescaled
    (`pos_embed_shift/jitter/rescale`), the augmentation DINOv3 and EoMT train with.
    """

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.shift = config.pos_embed_shift
        self.jitter = config.pos_embed_jitter
        self.rescale = config.pos_embed_rescale
        head_dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / config.rope_theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _augment(self, coords: Tensor) -> Tensor:
        if self.shift is not None:
            coords = coords + torch.empty(1, 2, device=coords.device).uniform_(-self.shift, self.shift)
        if self.jitter is not None:
            span = float(np.log(self.jitter))
            coords = coords * torch.empty(1, 2, device=coords.device).uniform_(-span, span).exp()
        if self.rescale is not None:
            span = float(np.log(self.rescale))
            coords = coords * torch.empty(1, device=coords.device).uniform_(-span, span).exp()
        return coords

    def forward(self, height: int, width: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        gh, gw = height // self.patch_size, width // self.patch_size
        device = self.inv_freq.device
        ys = (torch.arange(0.5, gh, device=device, dtype=torch.float32) / gh) * 2.0 - 1.0
        xs = (torch.arange(0.5, gw, device=device, dtype=torch.float32) / gw) * 2.0 - 1.0
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)  # (N, 2) as (y, x)
        if self.training:
            coords = self._augment(coords)
        angles = 2 * math.pi * coords[:, :, None] * self.inv_freq[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return angles.cos().to(dtype), angles.sin().to(dtype)
