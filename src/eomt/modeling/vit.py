"""Plain ViT building blocks shared by the DINOv2 and DINOv3 backbones.

Parameter names match the transformers EoMT state dict (q_proj, k_proj, v_proj, out_proj,
layer_scale1.lambda1, mlp.fc1 ...) so checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EomtConfig

ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "quick_gelu": lambda: _QuickGELU(),
}


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the trailing patch tokens of x (B, heads, N, d); leading query/CLS/register tokens stay put."""
    num_patches = cos.shape[-2]
    prefix, patches = x[..., :-num_patches, :], x[..., -num_patches:, :]
    patches = patches * cos + rotate_half(patches) * sin
    return torch.cat((prefix, patches), dim=-2)


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = dim // self.num_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(dim, dim, bias=config.query_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.key_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.value_bias)
        self.out_proj = nn.Linear(dim, dim, bias=config.proj_bias)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None,
                need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Attention output; with `need_weights`, also the (B, heads, N, N) softmax weights, which
        SDPA does not expose, so they are computed explicitly (as transformers' eager attention)."""
        batch, tokens, dim = x.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = explicit_attention(q, k, v, attn_mask, dropout)
            return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim)), weights
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim))


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None,
                       dropout: float) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(d)) v with the weights returned; `attn_mask` is boolean, True = may attend.

    The softmax runs in float32 and the weights are returned after dropout, as transformers' eager
    attention does.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, v), weights


class Mlp(nn.Module):
    """fc1 -> activation -> fc2 (DINOv2 S/B/L)."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.act = activation(config.hidden_act)
        self.fc2 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GatedMlp(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU for DINOv2-g (act = SiLU) and DINOv3's gated MLP."""

    def __init__(self, config: EomtConfig, act: str, bias: bool = True) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.gate_proj = nn.Linear(config.hidden_size, hidden, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, config.hidden_size, bias=bias)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class UpDownMlp(nn.Module):
    """down(act(up(x))): DINOv3's plain MLP, named as transformers names it."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.up_proj = nn.Linear(config.hidden_size, hidden, bias=config.mlp_bias)
        self.act = activation(config.hidden_act)
        self.down_proj = nn.Linear(hidden, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


def build_mlp(config: EomtConfig) -> nn.Module:
    if config.is_dinov3:
        return GatedMlp(config, config.hidden_act, config.mlp_bias) if config.use_gated_mlp else UpDownMlp(config)
    return GatedMlp(config, "silu") if config.use_swiglu_ffn else Mlp(config)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.lambda1


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x.div(keep) * torch.floor(mask + keep)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = Attention(config)
        self.layer_scale1 = LayerScale(dim, config.layerscale_value)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = build_mlp(config)
        self.layer_scale2 = LayerScale(dim, config.layerscale_value)
        self.drop_path = DropPath(config.drop_path_rate)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None,
                need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The block's output; with `need_weights`, also its attention weights."""
        if need_weights:
            attended, weights = self.attention(self.norm1(x), attn_mask, rope, need_weights=True)
        else:
            attended = self.attention(self.norm1(x), attn_mask, rope)
        x = x + self.drop_path(self.layer_scale1(attended))
        x = x + self.drop_path(self.layer_scale2(self.mlp(self.norm2(x))))
        return (x, weights) if need_weights else x
