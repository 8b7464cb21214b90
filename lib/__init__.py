"""Audio-classification competition pipeline: the reusable parts behind the numbered stages.

Import from a notebook with the project folder on ``sys.path`` (no install, no side effects)::

    import sys; sys.path.insert(0, "/path/to/project")
    from lib import audio, features, folds, models, train
    y, sr = audio.load("clip.wav")               # native sample rate, mono float32

One sub-package per layer:

* ``lib.core``: configuration (YAML, registries), the artifact layout and records, the stage CLI;
* ``lib.data``: audio I/O, stage 00 (checks, folds), tasks, windows and waveforms (model inputs),
  metadata encoding;
* ``lib.features``: feature sets (``log_mel``, ``seed9``), the whole-waveform cache (``waveform``)
  and their cache (stage 01);
* ``lib.models``: the networks, one file per family, their heads and on-device front ends;
* ``lib.training``: the fold loop and what it uses (optimisers, precision, EMA, losses,
  spectrogram and waveform augmentation); stage 02;
* ``lib.inference``: predictions per recording, test-time augmentation; stage 03;
* ``lib.evaluation``: metrics, reports, ensembling (stage 04).

The short names of the flat layout before these packages (``lib.audio``, ``lib.train``, ...)
still work as ``from lib import <name>``: they load the module on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.3.0"

_ALIASES = {
    "audio": "data.audio", "prepare": "data.prepare", "folds": "data.folds", "tasks": "data.tasks",
    "windows": "data.windows", "waveforms": "data.waveforms", "metadata": "data.metadata", "demo": "data.demo",
    "config": "core.config", "paths": "core.paths", "utils": "core.utils", "cli": "core.cli",
    "seed9": "features.seed9", "train": "training.experiment", "losses": "training.losses",
    "augment": "training.augment", "wave_augment": "training.wave_augment", "frontend": "models.frontend",
    "infer": "inference.infer", "metrics": "evaluation.metrics",
    "ensemble": "evaluation.ensemble",
}


def __getattr__(name: str):
    """``from lib import audio`` and the other short names: the module, imported on first use."""
    if name in _ALIASES:
        return importlib.import_module(f"{__name__}.{_ALIASES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
