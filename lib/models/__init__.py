"""Models: convolutional networks over spectrogram stacks, with an optional scalar-feature branch.

Every model maps ``spec (batch, channels, freq, frames)`` and ``scalars (batch, n_scalars)`` to
logits ``(batch, n_outputs)``. Inputs are standardised per channel (and per scalar) inside the
model with statistics from the training fold (:meth:`AudioClassifier.set_normalisation`), so a
checkpoint is self-contained. Pooling: mean over frequency, then a time pooling chosen by
``params.pooling`` (:mod:`lib.models.heads`, ``POOLINGS``): ``mean_max`` (default; PANNs, Kong et
al. 2020: max + mean over time), ``gem`` (generalised mean) or ``attention`` (PANNs' ``AttBlock``,
which also returns ``frame_logits``).

Registered (``model: {name, params}`` in an experiment config):

* ``cnn``: a small configurable CNN, one or two 3x3 conv layers per block (default widths
  16-32-64-128), sized for 2 CPU cores (``../shared/DESIGN.md`` §4);
* ``cnn8``: the seed's CNN8, 8 conv layers from 32 to 256 channels;
* ``vgg``: the seed's VGG-style net, blocks of 64/128/256/512 with GELU and a residual.
"""
from __future__ import annotations

from torch import nn

from ..core.config import Registry
from .base import AudioClassifier
from .cnn import CNN, CNN8
from .frontend import FRONTENDS as FRONTENDS  # re-exported for configs
from .heads import POOLINGS as POOLINGS  # re-exported for configs and tests
from .vgg import VGG

MODELS = Registry("model")
MODELS.register("cnn")(CNN)
MODELS.register("cnn8")(CNN8)
MODELS.register("vgg")(VGG)
MODELS.choices["pooling"] = POOLINGS


def build_model(section: dict, manifest: dict, n_outputs: int, n_scalars: int | None = None,
                frontend: dict | None = None) -> AudioClassifier:
    """Build the model named in ``section`` for the input shapes recorded in a feature ``manifest``.

    ``manifest['spec_shape']`` is ``[channels, freq, frames]``; the scalar input width is
    ``n_scalars`` (audio scalars plus encoded metadata; default ``manifest['n_scalars']``; 0: no
    scalar branch). ``frontend`` (an experiment's ``frontend: {name, params}`` section) puts a
    front end (:data:`FRONTENDS`, at ``manifest['sample_rate']`` Hz) inside the model, which then
    takes waveforms ``(batch, samples)``; its channel count is the trunk's input. Raises
    ``ConfigError`` for an unknown name or a front-end setting the sample rate rules out.
    """
    fe = FRONTENDS.build(frontend, sample_rate=manifest["sample_rate"]) if frontend else None
    model = MODELS.build(section, in_channels=fe.channels if fe else manifest["spec_shape"][0],
                         n_scalars=manifest["n_scalars"] if n_scalars is None else n_scalars, n_outputs=n_outputs)
    model.frontend = fe
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
