"""Feature sets: a window of a recording -> a spectrogram stack and a scalar vector.

Registered sets (``features: {name, params}`` in an experiment config):

* ``log_mel``: log-mel spectrogram in dB (``librosa.feature.melspectrogram``'s, bit for bit),
  optionally with its first and second deltas as extra channels; no scalars, or with
  ``heart_cycles: true`` the window's heart rate, RR, systole and diastole
  (:mod:`lib.features.heart_cycles`).
* ``seed9``: the seed project's nine 128x63 channels and 36 waveform scalars
  (``../shared/DESIGN.md`` §5, :mod:`lib.features.seed9`);
* ``precomputed``: the competition's own matrices (spectrogram tables; ``matrix`` section),
  cropped at any frame offset (:mod:`lib.features.precomputed`);
* ``waveform``: no per-window features: whole recordings are cached for models that compute
  their spectrogram themselves (``frontend:`` section; :mod:`lib.features.waveform`);
* ``hf_embeddings``: hidden states of a Hugging Face audio model from a local folder (wav2vec 2.0,
  HuBERT, WavLM, data2vec-audio, AST), as frame stacks or pooled scalars
  (:mod:`lib.features.hf_embeddings`).

The cache (stage 01) is :mod:`lib.features.cache`.
"""
from __future__ import annotations

from ..core.registry import Registry
from .hf_embeddings import HfEmbeddings
from .log_mel import LogMel
from .precomputed import Precomputed
from .seed9 import Seed9
from .waveform import Waveform

FEATURES = Registry("feature set")
FEATURES.register("log_mel")(LogMel)
FEATURES.register("seed9")(Seed9)
FEATURES.register("waveform")(Waveform)
FEATURES.register("precomputed")(Precomputed)
FEATURES.register("hf_embeddings")(HfEmbeddings)
