"""The seed's VGG-style network with residual blocks."""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from .base import AudioClassifier, conv_bn


class ResidualVGGBlock(nn.Module):
    """VGG block with a residual: ``n_convs`` x (conv 3x3 -> BN -> GELU), plus a 1x1 projection of
    the input added before the last GELU, then 2x2 max pooling. ``(B, c_in, F, T) -> (B, c_out, F/2, T/2)``."""

    def __init__(self, c_in: int, c_out: int, n_convs: int = 2):
        super().__init__()
        convs = [conv_bn(c_in if i == 0 else c_out, c_out, nn.GELU) for i in range(n_convs - 1)]
        last_in = c_out if n_convs > 1 else c_in  # (one conv: it takes the block's input)
        self.convs = nn.Sequential(*convs, nn.Conv2d(last_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.convs(x) + self.skip(x)))


class VGG(AudioClassifier):
    """The seed's VGG-style net: residual blocks of 64/128/256/512 channels with GELU
    (2, 2, 3, 3 convs: about 8 M parameters with the scalar branch and a 512-unit head).
    ``pooling`` names the time pooling (:mod:`lib.models.heads`; default ``mean_max``). Raises
    ``ConfigError`` when ``channels`` and ``convs`` (one entry per block) differ in length."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(64, 128, 256, 512),
                 convs=(2, 2, 3, 3), dropout: float = 0.3, pooling: str = "mean_max"):
        if len(channels) != len(convs):
            raise ConfigError(f"model.params.channels ({len(channels)} blocks: {list(channels)}) and model.params.convs "
                              f"({len(convs)}: {list(convs)}) give one entry per block: make them the same length")
        blocks, c = [], in_channels
        for width, n in zip(channels, convs):
            blocks.append(ResidualVGGBlock(c, width, n))
            c = width
        super().__init__(in_channels, n_scalars, n_outputs, nn.Sequential(*blocks), c, head_hidden=512, dropout=dropout,
                         pooling=pooling)

