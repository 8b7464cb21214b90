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
import sys
import warnings
from pathlib import Path

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


def other_libs(path: list[str] | None = None) -> list[str]:
    """Other importable modules named ``lib`` on ``path`` (default ``sys.path``): a ``lib``
    package (with ``__init__.py``) or ``lib.py`` anywhere but here. A notebook's own ``lib``
    folder or another dataset's could be the one ``import lib`` finds, depending on the order of
    ``sys.path``; this one is ``Path(__file__).parent``."""
    here = Path(__file__).resolve().parent
    found = []
    for entry in path if path is not None else sys.path:
        for candidate in (Path(entry or ".") / "lib" / "__init__.py", Path(entry or ".") / "lib.py"):
            try:
                if candidate.is_file() and candidate.resolve().parent != here and candidate.resolve() != here:
                    found.append(str(candidate.parent if candidate.name == "__init__.py" else candidate))
            except OSError:  # an unreadable sys.path entry
                continue
    return list(dict.fromkeys(found))


if _others := other_libs():  # never silently: the other one could win in the next process or notebook cell
    warnings.warn(f"another module named 'lib' is on sys.path: {', '.join(_others)}; this pipeline's lib is "
                  f"{Path(__file__).resolve().parent} (first on sys.path wins: put this project's folder first)",
                  stacklevel=2)


def __getattr__(name: str):
    """``from lib import audio`` and the other short names: the module, imported on first use."""
    if name in _ALIASES:
        return importlib.import_module(f"{__name__}.{_ALIASES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
