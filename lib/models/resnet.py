"""ResNets over spectrogram stacks: ``resnet`` (ResNet18/34-style, any channel count) and
``mini_resnet`` (the voice-pathology winner's small ResNet with metadata before a 64-32 head)."""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from .base import AudioClassifier

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Basic blocks per stage of ResNet18 and ResNet34 (He et al. 2016, Table 1)."""


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016, "Deep Residual Learning for Image Recognition"): 3x3 conv
    (stride ``stride``) -> BN -> ReLU -> 3x3 conv -> BN, plus the input (through a 1x1 conv + BN
    when the width or stride changes), then ReLU. ``(B, c_in, F, T) -> (B, c_out, F/stride, T/stride)``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


def resnet_trunk(in_channels: int, stem_channels: int, widths, blocks, stem_stride: int = 2,
                 stem_pool: bool = True) -> tuple[nn.Sequential, int]:
    """Stem ``conv 7x7 (stride stem_stride) -> BN -> ReLU [-> max pool 3x3/2]``, then one stage of
    ``blocks[i]`` :class:`BasicBlock` per width in ``widths`` (the first stage keeps the size,
    each later one halves it). Returns ``(trunk, output channels)``. Raises ``ConfigError`` when
    ``widths`` and ``blocks`` differ in length or are empty."""
    if not widths or len(widths) != len(blocks):
        raise ConfigError(f"model.params: widths {list(widths)} and blocks {list(blocks)} must be non-empty "
                          f"lists of the same length")
    layers = [nn.Conv2d(in_channels, stem_channels, 7, stem_stride, 3, bias=False), nn.BatchNorm2d(stem_channels),
              nn.ReLU(inplace=True)]
    if stem_pool:
        layers.append(nn.MaxPool2d(3, 2, 1))
    c = stem_channels
    for i, (width, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(BasicBlock(c, width, 2 if i > 0 and j == 0 else 1))
            c = width
    return nn.Sequential(*layers), c


class ResNet(AudioClassifier):
    """ResNet18/34-style net for any number of input channels (the ESC-50 project's ResNet18;
    the heart-murmur notes' ResNet50 needs bottleneck blocks: use ``model: {name: timm, params:
    {arch: resnet50}}``).

    ``depth`` 18 or 34 sets the blocks per stage (``blocks`` overrides it); ``widths`` the stage
    widths (torchvision's 64-128-256-512 by default; 16-32-64-128 trains on 2 CPU cores),
    ``stem_channels`` (default ``widths[0]``), a 7x7 stem of stride ``stem_stride`` and a 3x3/2
    max pool (``stem_pool``). A 64 x 63 log-mel leaves ``(widths[-1], 2, 2)`` with the defaults.
    ResNet18 at the default widths: about 11.3 M parameters on one channel.
    Raises ``ConfigError`` for another depth.
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, depth: int = 18,
                 widths=(64, 128, 256, 512), blocks=None, stem_channels: int | None = None, stem_stride: int = 2,
                 stem_pool: bool = True, dropout: float = 0.3, head_hidden: int | list[int] = 256,
                 pooling: str = "mean_max"):
        if blocks is None:
            if depth not in DEPTHS:
                raise ConfigError(f"model.params.depth={depth!r} must be one of {sorted(DEPTHS)} (or give blocks)")
            blocks = DEPTHS[depth][:len(widths)]
        trunk, c = resnet_trunk(in_channels, stem_channels or widths[0], widths, blocks, stem_stride, stem_pool)
        super().__init__(in_channels, n_scalars, n_outputs, trunk, c, head_hidden=head_hidden, dropout=dropout,
                         pooling=pooling)


class MiniResNet(ResNet):
    """The voice-pathology winner's small ResNet (MAIC 2021, 1st of 43; ``../shared/DESIGN.md`` §2):
    a 7x7 stem of 128 channels, one residual block of 192 and one of 256 channels, and the
    metadata (the scalar branch: sex, age, ...) joined with the pooled features before a 64-32
    head. The write-up gives the widths, not the strides: here the stem has stride 2 and a max
    pool, the second block halves the size again. About 1.7 M parameters on one channel.
    ``widths`` and ``stem_channels`` scale it (e.g. ``[48, 64]`` and 32 on 2 CPU cores)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, widths=(192, 256), stem_channels: int = 128,
                 dropout: float = 0.3, head_hidden: int | list[int] = (64, 32), pooling: str = "mean_max"):
        super().__init__(in_channels, n_scalars, n_outputs, widths=widths, blocks=[1] * len(widths),
                         stem_channels=stem_channels, dropout=dropout, head_hidden=head_hidden, pooling=pooling)
