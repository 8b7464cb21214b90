"""Model inputs: what training, inference and bundles use to get batches of a split.

Stage 01 caches a feature set per split (:mod:`lib.features.cache`); this package turns such a
cache, with the split's table (``folds.csv`` or ``test.csv``), into batches. Every input kind is a
subclass of :class:`SplitInputs` (:mod:`lib.inputs.base`), and :data:`INPUT_KINDS` maps the
feature set's ``kind`` (a class attribute of every registered feature set, also written in the
cache's manifest) to it:

====================  ==========================================  ==========================================
kind                  class                                       an *item* (one model input)
====================  ==========================================  ==========================================
``spectrogram``       :class:`lib.inputs.windows.WindowData`      a cached window's index (int)
``waveform``          :class:`lib.inputs.waveforms.WaveData`      ``(region, start sample)`` (int64)
``frames``            :class:`lib.inputs.frames.FrameData`        ``(region, start frame)`` (int64)
====================  ==========================================  ==========================================

A *region* is a stretch of a recording that its windows come from: the whole recording, or one of
its segments (:func:`lib.data.segments.regions`); a crop never reaches outside its region.

The interface (all arrays numpy, all tensors torch; ``n`` items, ``w`` windows):

* ``load(out, feature_set, split, table, comp, device)`` (classmethod): the cache mapped for
  ``device``; ``from_config(out, cfg, split, table, comp, device)``: the same from an experiment
  config. Raise ``MissingArtifact`` naming ``01_features.py`` when the cache is missing or stale.
* Attributes: ``manifest`` (the cache's manifest: ``sample_rate`` in Hz, ``clip_seconds``,
  shapes, ``record``), ``device``, ``n_scalars`` (width of the scalar input: audio scalars and
  encoded metadata), ``frames_per_second`` (of the model input: frames for spectrograms, samples
  for waveforms; test-time shifts), the window grid ``rec (w,)``, ``first``/``count``
  ``(recordings,)``, and for a labelled split ``y`` (class indices ``(recordings,)``, or 0/1
  ``(recordings, classes)`` for multi-label) and ``target (recordings, n_outputs)`` float.
* ``set_metadata(encoder, table)``: a fold's fitted metadata encoder (or ``None``).
* ``sample_windows(recs, rng) -> items (m, ...)``: one random item of each region of the
  recordings (of each recording when it is one region; training).
* ``windows_of(recs, hop_seconds=None) -> (items, owner (w,))``: every window of the
  recordings (validation, test); ``owner`` is each window's position in ``recs``.
* ``batch(items, device) -> (x, scalars (n, n_scalars))``: ``x`` is ``(n, C, F, T)`` float32
  spectrograms or ``(n, samples)`` float32 waveforms (the model's front end makes the
  spectrogram).
* ``region_of(items) -> (n,)``, ``recordings(items) -> (n,)`` and ``targets(items, training=False)
  -> (n, n_outputs)``.

A new input kind is one module here (a :class:`SplitInputs` subclass with the methods above),
one entry in :data:`INPUT_KINDS`, and a feature set whose ``kind`` names it
(``docs/contributing.md``).
"""
from __future__ import annotations

import pandas as pd

from ..features import FEATURES
from ..features.cache import check_settings
from .base import SplitInputs, aggregate
from .frames import FrameData
from .waveforms import WaveData
from .windows import WindowData

__all__ = ["INPUT_KINDS", "FrameData", "SplitInputs", "WaveData", "WindowData", "aggregate", "input_kind", "load_inputs"]

INPUT_KINDS: dict[str, type[SplitInputs]] = {"spectrogram": WindowData, "waveform": WaveData, "frames": FrameData}
"""A feature set's ``kind`` -> the :class:`SplitInputs` subclass that serves its cache."""


def input_kind(cfg: dict) -> str:
    """The input kind of experiment ``cfg``: its feature set's ``kind`` attribute (a key of
    :data:`INPUT_KINDS`). Raises ``ConfigError`` for an unknown feature set."""
    return FEATURES.get(cfg["features"]["name"], "features.name").kind


def load_inputs(out, cfg: dict, split: str, table: pd.DataFrame, comp: dict, device) -> SplitInputs:
    """The inputs of experiment ``cfg`` for ``split`` (rows of ``table``) on ``device``, from the
    :class:`lib.core.paths.Outputs` folder ``out``: the :data:`INPUT_KINDS` class of its feature
    set's kind. Raises ``MissingArtifact`` naming ``01_features.py`` when the cache is missing or
    stale, ``ConfigError`` when it was built with other settings than ``cfg['features']``
    (:func:`lib.features.cache.check_settings`)."""
    data = INPUT_KINDS[input_kind(cfg)].from_config(out, cfg, split, table, comp, device)
    check_settings(cfg["features"], data.manifest)
    if (cfg.get("inputs") or {}).get("group_norm"):  # (a config built in code may lack the section)
        data.set_group_norm(row_groups(out, cfg, split, table, comp))
    return data


def row_groups(out, cfg: dict, split: str, table: pd.DataFrame, comp: dict) -> pd.Series:
    """Each row's group for ``inputs.group_norm``: ``table``'s ``group`` column (``folds.csv``'s;
    ``test.csv``'s with ``groups.test``), or the row's recording where the competition has no
    ``groups`` section. Raises ``ConfigError`` for a waveform input (its front end is in the
    model: ``frontend.params.example_norm``), and when the competition has groups but does not
    give the test rows theirs (``groups.test``; also without a test set: a bundle's would lack them)."""
    from ..core.errors import ConfigError
    from ..data.prepare import test_groups_key

    if input_kind(cfg) == "waveform":
        raise ConfigError(f"{cfg['name']}: inputs.group_norm normalises cached spectrograms (log_mel, seed9, "
                          f"precomputed, ...); a waveform model's front end has frontend.params.example_norm")
    if comp.get("groups") and not test_groups_key(comp):  # (without a test set too: a bundle's hidden test needs them)
        raise ConfigError(f"{cfg['name']}: inputs.group_norm needs the test rows' groups too: set groups.test: true "
                          f"in the competition config and run 00_prepare.py again")
    if "group" in table:
        return table["group"]
    if comp.get("groups"):
        raise ConfigError(f"{cfg['name']}: inputs.group_norm: {split} rows have no group column: run 00_prepare.py "
                          f"again (groups.test: true)")
    return table["recording"] if "recording" in table else table["id"]
