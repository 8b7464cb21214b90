"""Small CNNs: ``cnn`` (sized for 2 CPU cores), the seed's ``cnn8`` and the ESC-50 project's
``esc_cnn4`` (max pooling) and ``esc_cnn8`` (average pooling only)."""
from __future__ import annotations

from torch import nn

from ..core.errors import ConfigError
from .base import AudioClassifier, conv_bn


class CNN(AudioClassifier):
    """Small CNN: per block ``convs_per_block`` x ``conv_bn`` then 2x2 pooling (``pool``: ``avg``
    or ``max``).

    ``channels`` gives the width of each block (default 16-32-64-128: about 0.1 M conv
    parameters with one conv per block). A 64x63 log-mel becomes ``(128, 4, 3)`` after 4 blocks.
    ``head_hidden``: the head's hidden widths, an int or a list (``[]``: one linear layer).
    ``pooling`` names the time pooling (:mod:`lib.models.heads`; default ``mean_max``).
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(16, 32, 64, 128),
                 convs_per_block: int = 2, dropout: float = 0.3, head_hidden: int | list[int] = 128,
                 pooling: str = "mean_max", pool: str = "avg"):
        if pool not in ("avg", "max"):
            raise ConfigError(f"model.params.pool={pool!r} must be 'avg' or 'max'")
        layers, c = [], in_channels
        for width in channels:
            for _ in range(convs_per_block):
                layers.append(conv_bn(c, width))
                c = width
            layers.append(nn.AvgPool2d(2, ceil_mode=True) if pool == "avg" else nn.MaxPool2d(2, ceil_mode=True))
        super().__init__(in_channels, n_scalars, n_outputs, nn.Sequential(*layers), c,
                         head_hidden=head_hidden, dropout=dropout, pooling=pooling)


class CNN8(CNN):
    """The seed's CNN8: 8 conv layers, two per block at widths 32-64-128-256, and a 1024-unit head:
    about 1.8 M parameters on the seed9 stack (the seed reports 2.43 M without describing its head)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, dropout: float = 0.3, pooling: str = "mean_max"):
        super().__init__(in_channels, n_scalars, n_outputs, channels=(32, 64, 128, 256), convs_per_block=2,
                         dropout=dropout, head_hidden=1024, pooling=pooling)



class ESCCNN4(CNN):
    """The ESC-50 project's 4-layer CNN: one ``conv_bn`` per block at widths 32-64-128-256, each
    followed by 2x2 max pooling, then max + mean over time and a 256-unit head (about 0.5 M
    parameters on one channel). The project described its two small CNNs by layer count and
    pooling only; the widths are ours."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(32, 64, 128, 256),
                 dropout: float = 0.3, pooling: str = "mean_max"):
        super().__init__(in_channels, n_scalars, n_outputs, channels=channels, convs_per_block=1, dropout=dropout,
                         head_hidden=256, pooling=pooling, pool="max")


class ESCCNN8(CNN):
    """The ESC-50 project's 8-layer CNN with average pooling only: two ``conv_bn`` per block at
    widths 32-64-128-256, 2x2 average pooling after each block and a mean over time (``pooling:
    mean``) before a 256-unit head (about 1.2 M parameters on one channel)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(32, 64, 128, 256),
                 dropout: float = 0.3, pooling: str = "mean"):
        super().__init__(in_channels, n_scalars, n_outputs, channels=channels, convs_per_block=2, dropout=dropout,
                         head_hidden=256, pooling=pooling, pool="avg")
