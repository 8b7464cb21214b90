"""Small CNNs: ``cnn`` (sized for 2 CPU cores) and the seed's ``cnn8``."""
from __future__ import annotations

from torch import nn

from .base import AudioClassifier, conv_bn


class CNN(AudioClassifier):
    """Small CNN: per block ``convs_per_block`` x ``conv_bn`` then 2x2 average pooling.

    ``channels`` gives the width of each block (default 16-32-64-128: about 0.1 M conv
    parameters with one conv per block). A 64x63 log-mel becomes ``(128, 4, 3)`` after 4 blocks.
    ``pooling`` names the time pooling (:mod:`lib.models.heads`; default ``mean_max``).
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(16, 32, 64, 128),
                 convs_per_block: int = 2, dropout: float = 0.3, head_hidden: int = 128, pooling: str = "mean_max"):
        layers, c = [], in_channels
        for width in channels:
            for _ in range(convs_per_block):
                layers.append(conv_bn(c, width))
                c = width
            layers.append(nn.AvgPool2d(2, ceil_mode=True))
        super().__init__(in_channels, n_scalars, n_outputs, nn.Sequential(*layers), c,
                         head_hidden=head_hidden, dropout=dropout, pooling=pooling)


class CNN8(CNN):
    """The seed's CNN8: 8 conv layers, two per block at widths 32-64-128-256, and a 1024-unit head:
    about 1.8 M parameters on the seed9 stack (the seed reports 2.43 M without describing its head)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, dropout: float = 0.3, pooling: str = "mean_max"):
        super().__init__(in_channels, n_scalars, n_outputs, channels=(32, 64, 128, 256), convs_per_block=2,
                         dropout=dropout, head_hidden=1024, pooling=pooling)

