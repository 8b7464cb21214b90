"""WaveNet-style 1-D model over frame features (the heart-murmur notes' dilated convolutions)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from .base import AudioClassifier


class GatedResidualLayer(nn.Module):
    """One WaveNet layer (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio"):
    a dilated 1-D conv to ``2 x channels``, the gated activation ``tanh(a) * sigmoid(b)``, then a
    1x1 conv back to the residual stream (added, scaled by sqrt(1/2)) and a 1x1 conv to the skip
    stream. ``causal`` pads on the left only (each frame sees only the past), otherwise both
    sides; the frame count is kept. ``(B, channels, T) -> ((B, channels, T), skip (B, skip_channels, T))``."""

    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.causal = causal
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left = self.pad if self.causal else self.pad // 2
        a, b = self.conv(F.pad(x, (left, self.pad - left))).chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(b)
        return (x + self.res(h)) * math.sqrt(0.5), self.skip(h)


class WaveNetTrunk(nn.Module):
    """``(B, C, F, T)`` -> the frequency axis as channels ``(B, C*F, T)`` -> BatchNorm over those
    (each band on its own scale: the model's input normalisation is per channel) -> 1x1 conv to
    ``channels`` -> ``blocks`` x ``layers`` :class:`GatedResidualLayer` with dilations 1, 2, 4, ...
    2**(layers-1) in each block -> sum of the skips -> ReLU -> 1x1 conv -> ReLU ->
    ``(B, skip_channels, 1, T)`` (a frequency axis of 1, for the shared pooling)."""

    def __init__(self, in_features: int, channels: int, skip_channels: int, blocks: int, layers: int,
                 kernel_size: int, causal: bool):
        super().__init__()
        self.inp = nn.Sequential(nn.BatchNorm1d(in_features), nn.Conv1d(in_features, channels, 1))
        self.layers = nn.ModuleList(GatedResidualLayer(channels, skip_channels, kernel_size, 2 ** i, causal)
                                    for _ in range(blocks) for i in range(layers))
        self.out = nn.Conv1d(skip_channels, skip_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x.flatten(1, 2))
        skips = 0
        for layer in self.layers:
            x, s = layer(x)
            skips = skips + s
        return F.relu(self.out(F.relu(skips))).unsqueeze(2)


class WaveNet(AudioClassifier):
    """WaveNet-style classifier on frame features (the heart-murmur notes compared one to three
    blocks of dilated 1-D convolutions): :class:`WaveNetTrunk` over every frame of the input's
    ``n_bins`` x channels features, then the shared time pooling and head. ``blocks`` (1-3 in the
    notes) x ``layers`` layers: the receptive field is ``1 + blocks * (kernel_size - 1) * (2**layers - 1)``
    frames (3 blocks of 6 layers, kernel 3: 379 frames). About 0.3 M parameters with the defaults
    on a 64-band log-mel. Raises ``ConfigError`` for a non-positive size."""

    def __init__(self, in_channels: int, n_bins: int, n_scalars: int, n_outputs: int, blocks: int = 2,
                 layers: int = 6, channels: int = 64, skip_channels: int = 128, kernel_size: int = 3,
                 causal: bool = False, dropout: float = 0.3, head_hidden: int | list[int] = 128,
                 pooling: str = "mean_max"):
        for name, v in (("blocks", blocks), ("layers", layers), ("channels", channels),
                        ("skip_channels", skip_channels), ("kernel_size", kernel_size)):
            if int(v) != v or v < 1:
                raise ConfigError(f"model.params.{name}={v!r} must be a positive integer")
        trunk = WaveNetTrunk(in_channels * n_bins, channels, skip_channels, blocks, layers, kernel_size, causal)
        super().__init__(in_channels, n_scalars, n_outputs, trunk, skip_channels, head_hidden=head_hidden,
                         dropout=dropout, pooling=pooling)
