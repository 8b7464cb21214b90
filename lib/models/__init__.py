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
* ``vgg``: the seed's VGG-style net, blocks of 64/128/256/512 with GELU and a residual;
* ``esc_cnn4``, ``esc_cnn8``: the ESC-50 project's small CNNs (4 layers, max pooling; 8 layers,
  average pooling only);
* ``resnet``: ResNet18/34-style (``depth``), any channel count; ``mini_resnet``: the
  voice-pathology winner's small ResNet with metadata before a 64-32 head;
* ``wavenet``: dilated gated 1-D convolutions over frame features (the heart-murmur notes);
* ``cnn14``: PANNs CNN14 with its own front end, from a local AudioSet checkpoint (``pretrained``);
* ``timm``: any 2-D timm architecture (``arch``), optionally from a local weights file;
* ``hf_audio``: a Hugging Face waveform encoder (wav2vec 2.0, HuBERT, WavLM, data2vec-audio) fine-tuned
  from a local folder (``pretrained``), with its own front end (:mod:`lib.models.hf_audio`);
* ``hgb``, ``logreg``: scikit-learn members on pooled statistics (:mod:`lib.models.classical`).

Models take ``in_channels, n_scalars, n_outputs`` and, when their signature asks, ``n_bins``
(the input's frequency bins) and ``sample_rate`` (Hz); a model with ``owns_frontend = True``
(``cnn14``, ``hf_audio``) builds its own front end and takes waveforms without a ``frontend`` section.
"""
from __future__ import annotations

import inspect

from torch import nn

from ..core.errors import ConfigError
from ..core.registry import Registry
from .base import AudioClassifier
from .classical import ClassicalModel, HistGradientBoosting, LogisticRegression
from .cnn import CNN, CNN8, ESCCNN4, ESCCNN8
from .frontend import FRONTENDS as FRONTENDS  # re-exported for configs
from .heads import POOLINGS as POOLINGS  # re-exported for configs and tests
from .hf_audio import HfAudio
from .panns import Cnn14
from .resnet import MiniResNet, ResNet
from .timm_backbone import TimmBackbone
from .vgg import VGG
from .wavenet import WaveNet

MODELS = Registry("model")
for _name, _cls in {"cnn": CNN, "cnn8": CNN8, "vgg": VGG, "esc_cnn4": ESCCNN4, "esc_cnn8": ESCCNN8, "resnet": ResNet,
                    "mini_resnet": MiniResNet, "wavenet": WaveNet, "cnn14": Cnn14, "timm": TimmBackbone,
                    "hgb": HistGradientBoosting, "logreg": LogisticRegression,
                    "hf_audio": HfAudio}.items():
    MODELS.register(_name)(_cls)
MODELS.choices["pooling"] = POOLINGS


def owns_frontend(section: dict, where: str | None = None) -> bool:
    """Whether the model of a ``model`` section builds its own front end (``cnn14``). Raises
    ``ConfigError`` (naming ``where``) for an unknown model name."""
    return getattr(MODELS.get(section["name"], where), "owns_frontend", False)


def is_classical(section: dict) -> bool:
    """Whether the model of a ``model`` section is a scikit-learn member (fitted, not trained by steps)."""
    cls = MODELS.get(section["name"])
    return isinstance(cls, type) and issubclass(cls, ClassicalModel)


def build_model(section: dict, manifest: dict, n_outputs: int, n_scalars: int | None = None,
                frontend: dict | None = None, pretrained: bool = True) -> AudioClassifier:
    """Build the model named in ``section`` for the input shapes recorded in a feature ``manifest``.

    ``manifest['spec_shape']`` is ``[channels, freq, frames]``; the scalar input width is
    ``n_scalars`` (audio scalars plus encoded metadata; default ``manifest['n_scalars']``; 0: no
    scalar branch). ``frontend`` (an experiment's ``frontend: {name, params}`` section) puts a
    front end (:data:`FRONTENDS`, at ``manifest['sample_rate']`` Hz) inside the model, which then
    takes waveforms ``(batch, samples)``; its channel count is the trunk's input.
    ``pretrained=False`` builds without loading ``params.pretrained`` (the weights come from a
    fold checkpoint: prediction needs no pretrained file). The networks without a ``pretrained``
    parameter of their own take ``pretrained`` (a ``pretrain.py`` checkpoint), ``freeze_blocks``,
    ``backbone_lr`` and ``layer_decay`` through :mod:`lib.models.pretrained_weights`. Raises
    ``ConfigError`` for an unknown name, a front-end setting the sample rate rules out, a model
    that brings its own front end given another one or cached features, or a missing or
    mismatched pretrained file.
    """
    from . import pretrained_weights

    cls = MODELS.get(section["name"])
    # the networks without a pretrained param of their own: transfer options apart
    params, transfer = pretrained_weights.split_params(cls, dict(section.get("params") or {}))
    if not pretrained:  # the weights come from a fold checkpoint
        params.pop("pretrained", None)
        transfer = {}
    own = getattr(cls, "owns_frontend", False)
    if own and (frontend or manifest.get("kind") != "waveform"):
        raise ConfigError(f"model {section['name']!r} computes its own front end from the waveform: use "
                          f"features: {{name: waveform}} and no frontend section")
    fe = FRONTENDS.build(frontend, sample_rate=manifest["sample_rate"]) if frontend else None
    extra = {}
    accepted = inspect.signature(cls).parameters
    if "n_bins" in accepted:
        extra["n_bins"] = fe.n_bins if fe else manifest["spec_shape"][1]
    if "sample_rate" in accepted:
        extra["sample_rate"] = manifest["sample_rate"]
    in_channels = 1 if own else fe.channels if fe else manifest["spec_shape"][0]
    model = cls(**params, in_channels=in_channels, n_outputs=n_outputs, **extra,
                n_scalars=manifest["n_scalars"] if n_scalars is None else n_scalars)
    if not own:
        model.frontend = fe
    pretrained_weights.apply(model, cls, section, manifest, frontend, transfer)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
