"""The light heads EoMT adds to the ViT: class head, mask MLP and the patch-token upscaler."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EomtConfig
from .vit import activation


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a (B, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ScaleLayer(nn.Module):
    """2x upsampling: transposed conv -> activation -> depthwise 3x3 conv -> LayerNorm2d."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = activation(config.hidden_act)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.layernorm2d = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.layernorm2d(self.conv2(self.act(self.conv1(x))))


class ScaleBlock(nn.Module):
    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        self.block = nn.ModuleList([ScaleLayer(config) for _ in range(config.num_upscale_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.block:
            x = layer(x)
        return x


class MaskHead(nn.Module):
    """Three-layer MLP turning query tokens into mask embeddings."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.fc3 = nn.Linear(dim, dim)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))
