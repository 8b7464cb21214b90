"""Models: convolutional networks over spectrogram stacks, with an optional scalar-feature branch.

Every model maps ``spec (batch, channels, freq, frames)`` and ``scalars (batch, n_scalars)`` to
logits ``(batch, n_outputs)``. Inputs are standardised per channel (and per scalar) inside the
model with statistics from the training fold (:meth:`AudioClassifier.set_normalisation`), so a
checkpoint is self-contained. Pooling follows PANNs (Kong et al. 2020,
qiuqiangkong/audioset_tagging_cnn): mean over frequency, then max + mean over time.

Registered (``model: {name, params}`` in an experiment config):

* ``cnn``: a small configurable CNN, one or two 3x3 conv layers per block (default widths
  16-32-64-128), sized for 2 CPU cores (``../shared/DESIGN.md`` §4);
* ``cnn8``: the seed's CNN8, 8 conv layers from 32 to 256 channels;
* ``vgg``: the seed's VGG-style net, blocks of 64/128/256/512 with GELU and a residual.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import Registry

MODELS = Registry("model")


class AudioClassifier(nn.Module):
    """Shared frame: input normalisation, a conv trunk, PANNs pooling, scalar branch, head.

    Subclasses build ``self.trunk`` (``(B, C, F, T) -> (B, trunk_channels, F', T')``).
    The scalar branch (``n_scalars > 0``) is ``Linear(n_scalars, scalar_hidden) -> GELU`` and is
    concatenated with the pooled trunk output before the classifier
    ``Dropout -> Linear(., head_hidden) -> GELU -> Dropout -> Linear(., n_outputs)``.
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, trunk: nn.Module, trunk_channels: int,
                 scalar_hidden: int = 64, head_hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.register_buffer("spec_mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("spec_std", torch.ones(1, in_channels, 1, 1))
        self.register_buffer("scalar_mean", torch.zeros(1, n_scalars))
        self.register_buffer("scalar_std", torch.ones(1, n_scalars))
        self.trunk = trunk
        self.n_scalars = n_scalars
        self.scalar_branch = nn.Sequential(nn.Linear(n_scalars, scalar_hidden), nn.GELU()) if n_scalars else None
        joined = 2 * trunk_channels + (scalar_hidden if n_scalars else 0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(joined, head_hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(head_hidden, n_outputs))

    @torch.no_grad()
    def set_normalisation(self, spec_mean, spec_std, scalar_mean=None, scalar_std=None) -> None:
        """Store per-channel ``(channels,)`` and per-scalar ``(n_scalars,)`` mean and std."""
        self.spec_mean.copy_(torch.as_tensor(spec_mean).view_as(self.spec_mean))
        self.spec_std.copy_(torch.as_tensor(spec_std).view_as(self.spec_std).clamp_min(1e-6))
        if self.n_scalars:
            self.scalar_mean.copy_(torch.as_tensor(scalar_mean).view_as(self.scalar_mean))
            self.scalar_std.copy_(torch.as_tensor(scalar_std).view_as(self.scalar_std).clamp_min(1e-6))

    def forward(self, spec: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """``spec (B, C, F, T)``, ``scalars (B, S)`` -> logits ``(B, n_outputs)``."""
        x = self.trunk((spec - self.spec_mean) / self.spec_std)
        x = x.mean(dim=2)  # over frequency -> (B, C', T')
        parts = [x.amax(dim=2), x.mean(dim=2)]
        if self.n_scalars:
            parts.append(self.scalar_branch((scalars - self.scalar_mean) / self.scalar_std))
        return self.head(torch.cat(parts, dim=1))


def conv_bn(c_in: int, c_out: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """3x3 convolution (no bias) -> BatchNorm2d -> activation; keeps ``(F, T)``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act())


@MODELS.register("cnn")
class CNN(AudioClassifier):
    """Small CNN: per block ``convs_per_block`` x ``conv_bn`` then 2x2 average pooling.

    ``channels`` gives the width of each block (default 16-32-64-128: about 0.1 M conv
    parameters with one conv per block). A 64x63 log-mel becomes ``(128, 4, 3)`` after 4 blocks.
    """

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(16, 32, 64, 128),
                 convs_per_block: int = 2, dropout: float = 0.3, head_hidden: int = 128):
        layers, c = [], in_channels
        for width in channels:
            for _ in range(convs_per_block):
                layers.append(conv_bn(c, width))
                c = width
            layers.append(nn.AvgPool2d(2, ceil_mode=True))
        super().__init__(in_channels, n_scalars, n_outputs, nn.Sequential(*layers), c,
                         head_hidden=head_hidden, dropout=dropout)


@MODELS.register("cnn8")
class CNN8(CNN):
    """The seed's CNN8: 8 conv layers, two per block at widths 32-64-128-256, and a 1024-unit head:
    about 1.8 M parameters on the seed9 stack (the seed reports 2.43 M without describing its head)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, dropout: float = 0.3):
        super().__init__(in_channels, n_scalars, n_outputs, channels=(32, 64, 128, 256), convs_per_block=2,
                         dropout=dropout, head_hidden=1024)


class ResidualVGGBlock(nn.Module):
    """VGG block with a residual: ``n_convs`` x (conv 3x3 -> BN -> GELU), plus a 1x1 projection of
    the input added before the last GELU, then 2x2 max pooling. ``(B, c_in, F, T) -> (B, c_out, F/2, T/2)``."""

    def __init__(self, c_in: int, c_out: int, n_convs: int = 2):
        super().__init__()
        convs = [conv_bn(c_in if i == 0 else c_out, c_out, nn.GELU) for i in range(n_convs - 1)]
        self.convs = nn.Sequential(*convs, nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.convs(x) + self.skip(x)))


@MODELS.register("vgg")
class VGG(AudioClassifier):
    """The seed's VGG-style net: residual blocks of 64/128/256/512 channels with GELU
    (2, 2, 3, 3 convs: about 8 M parameters with the scalar branch and a 512-unit head)."""

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, channels=(64, 128, 256, 512),
                 convs=(2, 2, 3, 3), dropout: float = 0.3):
        blocks, c = [], in_channels
        for width, n in zip(channels, convs):
            blocks.append(ResidualVGGBlock(c, width, n))
            c = width
        super().__init__(in_channels, n_scalars, n_outputs, nn.Sequential(*blocks), c, head_hidden=512, dropout=dropout)


def build_model(section: dict, manifest: dict, n_outputs: int, n_scalars: int | None = None) -> AudioClassifier:
    """Build the model named in ``section`` for the input shapes recorded in a feature ``manifest``.

    ``manifest['spec_shape']`` is ``[channels, freq, frames]``; the scalar input width is
    ``n_scalars`` (audio scalars plus encoded metadata; default ``manifest['n_scalars']``; 0: no
    scalar branch). Raises ``ConfigError`` for an unknown name.
    """
    return MODELS.build(section, in_channels=manifest["spec_shape"][0],
                        n_scalars=manifest["n_scalars"] if n_scalars is None else n_scalars, n_outputs=n_outputs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
