"""``hf_audio``: fine-tuning a Hugging Face waveform encoder from a local folder.

wav2vec 2.0 (Baevski et al. 2020, "wav2vec 2.0: A Framework for Self-Supervised Learning of
Speech Representations"), HuBERT (Hsu et al. 2021), WavLM (Chen et al. 2022) and data2vec-audio
(Baevski et al. 2022), as Hugging Face ``transformers``' ``AutoModel`` builds them from the folder
that ``save_pretrained`` writes (``local_files_only=True``, ``HF_HUB_OFFLINE=1``: nothing is
downloaded; :data:`lib.features.hf_embeddings.LAYOUT`). The model takes waveforms at its own
sample rate, as ``cnn14`` does (``owns_frontend``: ``features: {name: waveform, params:
{sample_rate: 16000}}`` and no ``frontend`` section), normalises each example as its feature
extractor does, and pools one hidden state (or a learnt mix of all) over time with the
pipeline's poolings (:mod:`lib.models.heads`) before the shared head. The Audio Spectrogram
Transformer is served by the ``hf_embeddings`` feature set only.

A fold checkpoint holds the architecture (``config.json`` and the feature extractor's settings,
as the buffer ``trunk.hf_config``) with the weights, so prediction (``pretrained=False``) needs no
folder: the model is then built when its state dict is loaded (:meth:`HfAudio.load_state_dict`).
"""
from __future__ import annotations

import json

import torch
from torch import nn

from ..core.errors import ConfigError
from ..features.hf_embeddings import (LAYOUT, SUPPORTED, config_bytes, load_model, read_folder,
                                      resolve_layer, select_layer)
from .base import AudioClassifier
from .transfer import check_freeze

KEY = "model.params.pretrained"
WAVEFORM_ENCODERS = {k: v for k, v in SUPPORTED.items() if k != "audio-spectrogram-transformer"}
"""The ``model_type`` values ``hf_audio`` fine-tunes (AST: the ``hf_embeddings`` feature set)."""
LAYERS = ("middle", "mean", "weighted")


class WaveInput(nn.Module):
    """The model's front end: a waveform ``(B, samples)`` at ``sample_rate`` Hz -> ``(B, 1, 1,
    samples)`` float32, normalised per example to zero mean and unit variance when the feature
    extractor does (``do_normalize``: ``(x - mean) / sqrt(var + 1e-7)``, transformers'
    ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``). ``normalise = False``: the training
    loop fits no statistics for it."""

    normalise = False
    channels = n_bins = 1

    def __init__(self, sample_rate: int, do_normalize: bool):
        super().__init__()
        self.sample_rate, self.do_normalize = sample_rate, bool(do_normalize)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` -> ``(B, 1, 1, samples)`` (see the class docstring)."""
        x = x.float()
        if self.do_normalize:
            x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-7)
        return x[:, None, None, :]

    forward = transform


class HfTrunk(nn.Module):
    """The encoder as the trunk: ``(B, 1, 1, samples) -> (B, hidden, 1, frames)``, the hidden state
    ``layer`` (an index into ``hidden_states``, ``"mean"``, or ``"weighted"``: ``softmax(layer_weights)``
    over all of them, initialised equal; SUPERB, Yang et al. 2021). ``spec``: the bytes of
    :func:`lib.features.hf_embeddings.config_bytes`, kept as the buffer ``hf_config`` (uint8)."""

    def __init__(self, encoder: nn.Module, layer, spec: bytes):
        super().__init__()
        self.encoder, self.layer = encoder, layer
        n = encoder.config.num_hidden_layers + 1
        self.layer_weights = nn.Parameter(torch.zeros(n)) if layer == "weighted" else None
        self.register_buffer("hf_config", torch.tensor(list(spec), dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x[:, 0, 0], output_hidden_states=True)
        return select_layer(out.hidden_states, self.layer, self.layer_weights).transpose(1, 2)[:, :, None]

    def block_modules(self) -> list[list[nn.Module]]:
        """Block 0: everything outside the transformer layers (the convolutional feature encoder,
        its projection, the positional convolution, the encoder's layer norm); then one block per
        transformer layer, input side first."""
        enc, layers = self.encoder, self.encoder.encoder.layers
        front = [m for m in enc.children() if m is not enc.encoder] + [m for m in enc.encoder.children() if m is not layers]
        return [front] + [[layer] for layer in layers]

    def block_params(self) -> list[list[nn.Parameter]]:
        """The parameters of :meth:`block_modules`' blocks (block 0 also the encoder's own, e.g.
        ``masked_spec_embed``)."""
        params = [[p for m in ms for p in m.parameters()] for ms in self.block_modules()]
        params[0] += list(self.encoder.parameters(recurse=False))
        return params


class HfAudio(AudioClassifier):
    """A Hugging Face waveform encoder fine-tuned for the competition's classes (see the module docstring).

    Input: waveforms ``(B, samples)`` at ``sample_rate`` Hz, the model's (its feature extractor's
    ``sampling_rate``, 16000 for the published checkpoints). Output ``{"logits": (B, n_outputs),
    "embedding": (B, pooled [+ scalar_hidden])}`` (:class:`AudioClassifier`; ``attention`` pooling
    adds frame logits). ``pretrained``: the local folder (required to train; ``None`` builds the
    architecture from a fold checkpoint's state dict when it is loaded). ``layer``: an index into
    ``hidden_states`` (0: before the first transformer layer, -1: the last), ``"middle"``,
    ``"mean"`` or ``"weighted"`` (the default: a learnt softmax mix of every hidden state, SUPERB's
    recipe, which lets fine-tuning pick the depth it needs; the layers above an index are still
    computed). ``freeze_blocks: k``: blocks ``0 .. k-1`` of :meth:`HfTrunk.block_modules` frozen
    (block 0: the convolutional feature encoder and what precedes the transformer layers; then
    one per layer; frozen blocks also stop their dropout). ``backbone_lr``/``layer_decay``: their
    learning-rate scales (:func:`lib.models.transfer.block_groups`); the layer mix, pooling and head
    train at the full rate. The model's own training-time masking (``mask_time_prob`` in its
    ``config.json``) applies as in transformers; its LayerDrop is switched off (``layerdrop = 0``:
    a dropped layer would be missing from the hidden states that ``layer`` indexes).

    Raises ``ConfigError`` naming ``model.params.pretrained`` for a folder that does not fit
    (:func:`lib.features.hf_embeddings.read_folder`: nothing is downloaded), an AST or other
    unsupported model, a sample rate other than the model's, a bad ``layer`` or ``freeze_blocks``.
    """

    owns_frontend = True

    def __init__(self, in_channels: int, n_scalars: int, n_outputs: int, sample_rate: int, pretrained: str | None = None,
                 freeze_blocks: int = 0, backbone_lr: float = 1.0, layer_decay: float = 1.0, layer: int | str = "weighted",
                 pooling: str = "mean_max", dropout: float = 0.1, head_hidden: int | list[int] = ()):
        args = dict(n_scalars=n_scalars, n_outputs=n_outputs, sample_rate=sample_rate, freeze_blocks=freeze_blocks,
                    backbone_lr=backbone_lr, layer_decay=layer_decay, layer=layer, pooling=pooling, dropout=dropout,
                    head_hidden=head_hidden)
        if not pretrained:  # the weights (and the architecture) come from a fold checkpoint: load_state_dict
            nn.Module.__init__(self)
            self.deferred = args
            return
        config, fe = read_folder(pretrained, KEY, supported=WAVEFORM_ENCODERS)
        self._build(load_model(pretrained, KEY), fe.to_dict(), args)

    @staticmethod
    def check_params(params: dict) -> None:
        """Called when a config is loaded: ``pretrained`` must be given (a local folder) and a
        named ``layer`` one of :data:`LAYERS`. Raises ``ConfigError``."""
        if not params.get("pretrained"):
            raise ConfigError(f"{KEY} is required: hf_audio fine-tunes a local Hugging Face model folder; nothing is "
                              f"downloaded at run time: give {LAYOUT}")
        layer = params.get("layer", "weighted")
        if isinstance(layer, str) and layer not in LAYERS:
            raise ConfigError(f"model.params.layer {layer!r} is not an index into hidden_states or one of {LAYERS}")

    def _build(self, encoder: nn.Module, fe: dict, a: dict) -> None:
        """Build the model around ``encoder`` (an ``AutoModel``) with feature-extractor settings ``fe``."""
        rate = int(fe["sampling_rate"])
        if rate != a["sample_rate"]:
            raise ConfigError(f"{KEY}: the model hears {rate} Hz audio (its feature extractor's sampling_rate), the "
                              f"waveforms are at {a['sample_rate']} Hz: set features.params.sample_rate: {rate} "
                              f"(stage 01 resamples explicitly)")
        layer = resolve_layer(a["layer"], encoder.config.num_hidden_layers + 1, "model.params.layer", LAYERS)
        check_freeze(a["freeze_blocks"], encoder.config.num_hidden_layers + 1, "hf_audio")
        encoder.config.layerdrop = 0.0  # LayerDrop would drop hidden states from the tuple the layer choice indexes
        trunk = HfTrunk(encoder, layer, config_bytes(encoder.config, _Dict(fe)))
        AudioClassifier.__init__(self, 1, a["n_scalars"], a["n_outputs"], trunk, encoder.config.hidden_size,
                                 head_hidden=a["head_hidden"], dropout=a["dropout"], pooling=a["pooling"])
        self.frontend = WaveInput(rate, fe.get("do_normalize", False))
        self.backbone_lr, self.layer_decay, self.deferred = a["backbone_lr"], a["layer_decay"], None
        k = a["freeze_blocks"]
        for p in self.trunk.block_params()[0] if k else []:
            p.requires_grad_(False)
        self.freeze([m for ms in self.trunk.block_modules()[:k] for m in ms])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``; a model built without ``pretrained`` first builds its
        architecture from the state dict's ``trunk.hf_config`` (``AutoConfig.for_model``,
        ``AutoModel.from_config``: no folder, nothing downloaded). Raises ``KeyError`` for a state
        dict without it (not an ``hf_audio`` checkpoint)."""
        if getattr(self, "deferred", None) is not None:
            from transformers import AutoConfig, AutoModel

            spec = json.loads(bytes(state_dict["trunk.hf_config"].tolist()).decode())
            cfg = dict(spec["config"])
            config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
            self._build(AutoModel.from_config(config), spec["feature_extractor"], self.deferred)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, spec: torch.Tensor, scalars: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """See :meth:`AudioClassifier.forward`. Raises ``RuntimeError`` before a checkpoint was
        loaded into a model built without ``pretrained``."""
        if getattr(self, "deferred", None) is not None:
            raise RuntimeError("hf_audio built without its pretrained folder: load a fold checkpoint first")
        return super().forward(spec, scalars)

    def pretrained_blocks(self) -> list[list[nn.Parameter]]:
        """The parameters of :meth:`HfTrunk.block_params`' blocks."""
        return self.trunk.block_params()


class _Dict(dict):
    """A feature extractor's settings as :func:`config_bytes` reads them (``to_dict()``)."""

    def to_dict(self) -> dict:
        return dict(self)
