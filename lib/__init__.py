"""Audio-classification competition pipeline: the reusable parts behind the numbered stages.

Import from a notebook with the project folder on ``sys.path`` (no install, no side effects)::

    import sys; sys.path.insert(0, "/path/to/project")
    from lib import audio, features, folds, models, train
    y, sr = audio.load("clip.wav")               # native sample rate, mono float32

Modules: ``audio`` (I/O), ``features`` (feature sets and caches), ``seed9`` (the seed's stack),
``folds``, ``prepare`` (stage 00), ``data`` (windows, metadata encoding, aggregation), ``models``, ``augment``, ``losses``, ``metrics``, ``train``
(stage 02), ``infer`` (stage 03), ``ensemble`` (stage 04), ``config`` (YAML and registries),
``paths`` (artifact layout), ``tasks`` (targets and probability columns), ``transforms`` (the
only torchaudio import).
"""

__version__ = "0.2.0"
