"""Stage 01: feature sets, computed once per window in parallel and cached with a manifest.

A feature set turns one window ``(samples,)`` of a recording into a spectrogram stack
``(channels, freq, frames)`` and a scalar vector ``(n_scalars,)``. Recordings are cut into
windows of ``audio.clip_seconds`` every ``audio.hop_seconds`` (one window from the start when
no hop is set; see :func:`lib.data.audio.window_starts`). The cache of a set is a folder
``output/features/<set>/`` holding, per split, ``<split>_spec.npy`` ``(windows, channels, freq,
frames)``, ``<split>_scalars.npy`` ``(windows, n_scalars)`` (float32 or float16,
memory-mappable), ``<split>_windows.npy`` ``(windows, 3)``: each window's recording row in
``folds.csv`` / ``test.csv``, start in seconds within its region and region index,
``<split>_regions.npy`` ``(regions, 3)``: the stretches a row is made of (the whole recording,
or its segments: :func:`lib.data.segments.regions`), and ``manifest.json``: channel and scalar
names, shapes, sample rate, hop, the settings and a fingerprint of the inputs;
``train_split.json`` describes the train split (its own key and file hashes, :func:`_describe_train`),
so that a build whose train inputs are unchanged (a new test set, a build killed in the test split)
keeps those files and their id. Training reads input shapes from the manifest, never from constants. The ``waveform`` set caches whole
regions instead (:mod:`lib.features.waveform`), the ``precomputed`` set the competition's own
matrices (:mod:`lib.features.precomputed`); their manifests say ``"kind": "waveform"`` or
``"frames"``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from ..core.artifacts import audio_fingerprint, audio_id, audio_settings, file_hash, split_id
from ..core.errors import ConfigError
from ..core.errors import MissingArtifact
from ..core.paths import Outputs, as_outputs
from ..core.utils import atomic_path, fingerprint, open_memmap, read_json, write_json
from ..core.device import n_cpus
from ..data import audio, segments
from ..data.matrix import window_frames
from . import FEATURES
from .parallel import WORKER, run_parallel
from .precomputed import extract_frames_split
from .waveform import extract_waveform_split, grid

SPLITS = ("train", "test")
TRAIN_SPLIT = "train_split.json"
"""The file of a feature set's folder that describes its train split (:func:`_describe_train`)."""
FORMAT_VERSION = 4  # 3: regions (segments) and a window's region in <split>_windows.npy; 4: audio_settings in the manifest


def _run(extractor, windows: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of ``windows (n, samples)`` -> ``(n, C, F, T)``, ``(n, S)``: through the
    extractor's ``batch`` when it has one (e.g. ``seed9``: one STFT for the whole batch), else one
    window at a time."""
    if hasattr(extractor, "batch"):
        return extractor.batch(windows, sr)
    parts = [extractor(w, sr) for w in windows]
    return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])


BATCH_WINDOWS = 256
"""The most windows :func:`_extract` sends through the extractor at once: a chunk of long
recordings (a 10-minute soundscape at a 0.1-s hop is 6000 windows, 384 MB of 1-s windows at
16 kHz) is cut and computed a batch at a time, so a worker's memory does not grow with the audio."""


def _extract(job: tuple[list[tuple[str, float, float, np.ndarray]], int, int]) -> tuple[int, list[int]]:
    """Compute the features of every window of a few regions ``(path, start s, end s, window
    starts s within the region)`` (the split's regions from ``region0`` on) and write them at rows
    ``row0 ..`` of the split's two ``.npy`` files; returns the number of regions done and those
    of them whose audio is digital silence (every sample 0).

    Regions are loaded one at a time and their windows go through :func:`_run` in batches of up to
    :data:`BATCH_WINDOWS` (the windows of several short regions together: ``seed9`` computes a batch
    at once). Writing here, not in the parent, spares sending every array through a pipe.
    """
    regions, row0, region0 = job
    a, extractor = WORKER["audio"], WORKER["extractor"]
    batch: list[np.ndarray] = []
    silent = []
    pending, paths = 0, []  # windows in batch, and the files they come from

    def flush(sr: int) -> None:
        nonlocal row0, pending
        windows = np.concatenate(batch)
        for output, x in zip(WORKER["outputs"], _run(extractor, windows, sr)):
            out = np.load(output, mmap_mode="r+")
            if x.shape[1:] != out.shape[1:]:
                raise ValueError(f"{', '.join(dict.fromkeys(paths))}: feature shape {x.shape[1:]} differs from {out.shape[1:]}")
            out[row0:row0 + len(x)] = x  # a shared mapping: the page cache holds it, no msync needed
            del out
        row0 += len(windows)
        batch.clear()
        paths.clear()
        pending = 0

    for k, (path, start, end, starts) in enumerate(regions):
        y, sr = audio.load(path, a["sample_rate"], a["channel"], a["resample_type"], start, end)
        if len(y) and not y.any():
            silent.append(region0 + k)
        i = 0
        while i < len(starts):
            take = starts[i:i + BATCH_WINDOWS - pending]
            batch.append(audio.cut_windows(y, sr, take, a["clip_seconds"], a["pad"]))
            paths.append(path)
            i, pending = i + len(take), pending + len(take)
            if pending == BATCH_WINDOWS:
                flush(sr)
    if batch:
        flush(sr)
    return len(regions), silent


def check_unchanged(table, split: str) -> None:
    """Raise ``MissingArtifact`` naming the file and stage 00 when an audio file of ``table`` (a
    split as folds.csv or test.csv holds it) no longer has the sample rate (Hz) and channels stage
    00 read from its header, or its duration (s): the recording's (rows that are recordings) or
    at least up to its last segment's end (segment rows). It was replaced since, and the windows
    worked out from that table would be wrong (a shortened file cut on the old grid and padded,
    another rate resampled, both unsaid). One header read per file; tables of matrices (no
    sample rate) are not checked here."""
    if table["sample_rate"].isna().all():
        return
    segment_rows = "end_s" in table
    for path, g in table.groupby("path", sort=False):
        sr, frames, channels = audio.info(path)
        rate, n_channels = int(g["sample_rate"].iloc[0]), int(g["channels"].iloc[0])
        need = float(g["end_s"].max() if segment_rows else g["duration_s"].iloc[0])
        short = frames / sr < need - 0.5 / sr
        if (sr, channels) != (rate, n_channels) or short or (not segment_rows and frames / sr > need + 0.5 / sr):
            raise MissingArtifact(
                f"{path} ({split}): {sr} Hz, {channels} channel(s), {frames / sr:.4f} s now, where stage 00 read "
                f"{rate} Hz, {n_channels} channel(s), {'segments up to ' if segment_rows else ''}{need:.4f} s: "
                f"the file changed since; run 00_prepare.py again")


def extract_split(extractor, table, folder: Path, split: str, comp: dict, workers: int, dtype: str = "float32",
                  chunk: int = 32) -> dict:
    """Compute one split's features into ``folder/<split>_{spec,scalars,windows,regions}.npy``, atomically.

    Each region of each recording of ``table`` (``path``, ``duration_s``; with segments, the
    regions of :func:`lib.data.segments.regions`) is loaded at the competition's rate and
    channel, cut into windows (``audio.clip_seconds``, ``audio.hop_seconds``; padded by
    ``audio.pad`` within the region: a window never reaches outside its segment), and the
    windows go through ``extractor`` (its ``batch`` method when it has one); ``workers``
    processes share the regions in chunks of ``chunk`` and write their rows straight into the
    files (``dtype``), so memory stays at one region's audio and :data:`BATCH_WINDOWS` windows
    per worker (not a chunk's windows), and nothing large crosses a
    pipe. Returns ``{"spec": shape, "scalars": shape, "regions": n, "windows": n, "silent_regions":
    the regions whose audio is digital silence}``. Errors name
    the failing file; on any error the split's previous files are left as they were.
    """
    a = comp["audio"]
    sr = a["sample_rate"] or comp["native_sample_rate"]
    silence = np.zeros((1, int(round(a["clip_seconds"] * sr))), np.float32)  # probes the output shapes
    spec0, sc0 = (x[0] for x in _run(extractor, silence, sr))
    regions = segments.regions(table)
    windows = grid(regions, a)
    starts = np.split(windows[:, 1], np.flatnonzero(np.diff(windows[:, 2])) + 1)
    paths = table["path"].to_numpy()
    jobs = [(paths[int(r)], float(s), float(e), st) for (r, s, e), st in zip(regions, starts)]
    first_row = np.concatenate([[0], np.cumsum([len(st) for st in starts])])
    chunks = [(jobs[i:i + chunk], int(first_row[i]), i) for i in range(0, len(jobs), chunk)]
    spec_shape, sc_shape = (len(windows), *spec0.shape), (len(windows), *sc0.shape)
    with atomic_path(folder / f"{split}_spec.npy") as tmp_spec, atomic_path(folder / f"{split}_scalars.npy") as tmp_sc:
        for path, shape in ((tmp_spec, spec_shape), (tmp_sc, sc_shape)):  # header, size allocated
            open_memmap(path, dtype, shape)
        silent = run_parallel(_extract, chunks, (extractor, a, (tmp_spec, tmp_sc)), workers, len(jobs),
                              f"{folder.name} {split}")
    for name, arr in (("windows", windows), ("regions", regions)):
        with atomic_path(folder / f"{split}_{name}.npy") as tmp:
            np.save(tmp, arr)
    return {"spec": spec_shape, "scalars": sc_shape, "regions": len(regions), "windows": len(windows),
            "silent_regions": silent}


def _silence_found(out: Outputs, table, silent_regions: list[int]) -> dict:
    """What 01 says of a built split's recordings of digital silence (a probe: they went unsaid):
    ``{"count": n, "ids": the first five}``, the rows of ``table`` whose every region
    (:func:`lib.data.segments.regions`) a worker read as samples all 0 (``silent_regions``: the
    extraction's ``"silent_regions"``; none for the competition's own matrices, which hold no
    audio), leaving out the test files that stage 00 predicts from silence
    (``audio.bad_test_files``), which 00 names itself."""
    rows = segments.regions(table)[:, 0].astype(np.int64)
    quiet = np.zeros(len(rows), bool)
    quiet[silent_regions] = True
    silent = np.setdiff1d(np.unique(rows[quiet]), rows[~quiet])
    made = (out.root / "silence").resolve()
    silent = silent[[Path(table["path"].iat[i]).resolve().parent != made for i in silent]]
    return {"count": len(silent), "ids": [str(i) for i in table["id"].to_numpy()[silent[:5]]]}


STORES = {"waveform": "wave", "frames": "frames"}
"""The input kinds whose cache stores whole regions (not windows), and their store's file name."""


def _manifest(extractor, comp: dict, shapes: dict) -> dict:
    """The manifest's description of a cache's inputs, from a split's ``shapes``: kind, channel
    and scalar names, ``spec_shape`` (``[channels, freq, frames]`` of one model input; ``None``
    for waveforms), ``n_scalars``, ``sample_rate`` (Hz; ``None`` for matrices), ``hop_length``,
    ``frames_per_second`` (of matrices), the window settings."""
    a, kind = comp["audio"], extractor.kind
    out = {"kind": kind, "settings": extractor.settings, "channel_names": extractor.channel_names,
           "scalar_names": extractor.scalar_names, "hop_length": extractor.hop_length,
           "clip_seconds": a["clip_seconds"], "hop_seconds": a["hop_seconds"], "pad": a["pad"]}
    if kind == "waveform":
        return dict(out, spec_shape=None, n_scalars=0, sample_rate=extractor.rate(comp))
    if kind == "frames":
        fps = segments.frames_per_second(comp)
        return dict(out, spec_shape=[1, comp["matrix"]["n_bins"], window_frames(a["clip_seconds"], fps)], n_scalars=0,
                    sample_rate=None, frames_per_second=fps)
    return dict(out, spec_shape=list(shapes["spec"][1:]), n_scalars=shapes["scalars"][1],
                sample_rate=a["sample_rate"] or comp["native_sample_rate"])


def build_feature_set(out: Outputs, section: dict, force: bool = False, workers: int | None = None,
                      splits: tuple[str, ...] | None = None) -> dict:
    """Build (or reuse) the cache of one feature set for every split that stage 00 wrote.

    ``section`` is an experiment's ``features`` section ``{name, set, params, dtype}``
    (``dtype``: ``float32``, or ``float16`` for half the disk and memory). The set's folder is
    one result with one record (:mod:`lib.core.artifacts`): a cache whose record is complete,
    whose files are intact and whose key (settings, audio settings, recordings and the bytes of
    their audio files) matches is reused unless ``force``; otherwise the record is removed
    first and written last, so an interrupted build is never taken for a finished one.
    ``splits``: those to build (default: ``train`` and, when stage 00 found one, ``test``).
    Returns the manifest with an extra ``"skipped": bool`` and ``"seconds"``, and when built
    ``"because"`` (why it was built again, :func:`_rebuild_reason`; ``""`` for a first build).
    Raises ``MissingArtifact`` when stage 00 has not run.
    """
    out = as_outputs(out)
    if isinstance(section, dict) and "features" in section and "model" in section:
        raise ConfigError(f"build_feature_set: give the experiment's features section (cfg['features'] of "
                          f"{section.get('name')!r}), not the whole experiment config")
    comp = out.load_competition()
    extractor = FEATURES.build(section)
    if comp.get("matrix") and extractor.kind != "frames":
        raise ConfigError(f"feature set {section['name']!r} computes features from audio, but competition "
                          f"{comp['name']!r} ships matrices (its matrix section): use features: {{name: precomputed}}")
    dtype = section.get("dtype", "float32")
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"features.dtype {dtype!r} is not float32 or float16")
    folder = out.features(section["set"])
    tables = {s: out.load_split(s) for s in splits or [s for s in SPLITS if s == "train" or out.has_test()]}
    if hasattr(extractor, "check_rate"):  # (before the audio is hashed)
        extractor.check_rate(comp["audio"]["sample_rate"] or comp["native_sample_rate"], "train" in tables)
    if hasattr(extractor, "check_window") and "train" in tables:  # (a bundle predicts as its models were trained)
        extractor.check_window(comp["audio"]["clip_seconds"])
    hashes = {s: audio_fingerprint(t, workers) for s, t in tables.items()}
    spans = {s: spans_fingerprint(t) for s, t in tables.items()}
    key_of = lambda h, s: fingerprint(FORMAT_VERSION, section["name"], extractor.settings, dtype,  # noqa: E731
                                      *audio_settings(comp), h, *([s] if any(s.values()) else []))  # (without
    key = key_of(hashes, spans)  # segments: the key of before)
    record = out.features_record(section["set"])
    rec, why = record.check(key)
    if not force and rec is not None:
        return dict(read_json(folder / "manifest.json"), skipped=True, seconds=0.0)
    train_key = "train" in tables and key_of({"train": hashes["train"]}, {"train": spans["train"]})
    kept = None if force else _kept_train(folder, train_key)
    because = "--force" if force else _rebuild_reason(folder, hashes, spans, why, section, audio_id(comp))
    if kept:
        because += "; the train features are kept as they were"
    for split, table in tables.items():
        check_unchanged(table, split)
    t0 = time.time()
    if hasattr(extractor, "prepare"):  # e.g. a model's weights that fail to load: refused before the old cache goes
        extractor.prepare()
    record.begin(folder)
    for stale in [*folder.glob("*_*.npy"), folder / TRAIN_SPLIT]:  # a split this competition no longer has, or one
        if not (kept and stale.name.startswith("train_")):  # built again (train_split.json: never describing files
            stale.unlink(missing_ok=True)  # it did not see written)
    workers = workers or n_cpus()
    workers = min(workers, getattr(extractor, "max_workers", None) or workers)  # hf_embeddings on CUDA: 1 (no fork)
    kind = extractor.kind
    extract = {"waveform": extract_waveform_split, "frames": extract_frames_split}.get(kind, extract_split)
    parts = ((STORES[kind], "offsets") if kind in STORES else ("spec", "scalars")) + ("regions", "windows")
    shapes = {"train": kept["shapes"]} if kept else {}
    for split, table in tables.items():
        if split in shapes:  # (the kept train split)
            continue
        shapes[split] = extract(extractor, table, folder, split, comp, workers, dtype)
        shapes[split]["ids"] = fingerprint(list(table["id"]))
        shapes[split]["audio"] = hashes[split]  # what Outputs.audio_changed compares with 00's reading
        shapes[split]["spans"] = spans[split]  # what load_features compares with folds.csv's segments
        shapes[split]["silent"] = _silence_found(out, table, shapes[split].pop("silent_regions"))  # (a probe)
        if split == "train":  # described at once: a later split's build killed keeps it for the next run
            kept = _describe_train(folder, train_key, shapes["train"], parts, _manifest(extractor, comp, shapes["train"]))
    base = kept["manifest"] if kept else _manifest(extractor, comp, shapes[next(iter(tables))])  # (hf_embeddings' hop)
    manifest = dict(base, set=section["set"], name=section["name"], splits=shapes, dtype=dtype, fingerprint=key,
                    audio_settings=audio_id(comp), format_version=FORMAT_VERSION)
    write_json(folder / "manifest.json", manifest)
    members = [folder / "manifest.json"] + [folder / f"{s}_{part}.npy" for s in tables for part in parts]
    record.commit(members + ([folder / TRAIN_SPLIT] if kept else []), key,
                  info={"splits": {s: v["windows"] for s, v in shapes.items()}, **({"train_id": kept["id"]} if kept else {})})
    return dict(manifest, skipped=False, seconds=time.time() - t0, because=because)


def spans_fingerprint(table) -> str | None:
    """Fingerprint of the stretches of audio or frames that a split table's rows are made of
    (:func:`lib.data.segments.regions`: a recording's annotated segments, a segment row's start and
    end): an annotation edited and 00 run again changes it, where the audio files stay the same.
    ``None`` for rows that are whole recordings (their audio fingerprint covers them)."""
    if "segments" not in table and "start_s" not in table:
        return None
    return fingerprint(segments.regions(table).round(6).tolist())


def _describe_train(folder: Path, train_key: str, shapes: dict, parts: tuple[str, ...], manifest: dict) -> dict:
    """Write :data:`TRAIN_SPLIT` for the train split just built in ``folder``: its key
    ``train_key`` (settings, audio settings, train recordings and segments), its manifest entry
    ``shapes``, the manifest's description of the inputs it was built with (:func:`_manifest`),
    its files' sizes and SHA-256 (``train_<part>.npy``) and its id (of key and hashes:
    :func:`lib.core.artifacts.split_id`). Returns that description."""
    files = {f"train_{part}.npy": {"size": (folder / f"train_{part}.npy").stat().st_size,
                                   "sha256": file_hash(folder / f"train_{part}.npy")} for part in parts}
    kept = {"key": train_key, "id": fingerprint(train_key, files), "shapes": shapes, "manifest": manifest,
            "files": files}
    write_json(folder / TRAIN_SPLIT, kept)
    return kept


def _kept_train(folder: Path, train_key: str | bool) -> dict | None:
    """The description of ``folder``'s train split (:func:`_describe_train`) when a build can keep
    it: made with ``train_key`` (the same settings, audio settings, train recordings and segments
    as now) and its files intact (hashed). Else ``None``: every split is built again. So a new or
    changed test set, and a build killed while it computed the test split, cost the test split's
    features alone, and the train split keeps its id (the models trained on it stay current)."""
    try:
        kept = read_json(folder / TRAIN_SPLIT)
        if not train_key or kept["key"] != train_key or not all(kept.get(k) for k in ("id", "shapes", "manifest")):
            return None
        for name, m in kept["files"].items():
            p = folder / name
            if not p.is_file() or p.stat().st_size != m["size"] or file_hash(p) != m["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # never built, or by an older version
        return None
    return kept


def _rebuild_reason(folder: Path, hashes: dict[str, str], spans: dict[str, str], why: str, section: dict,
                    audio: str) -> str:
    """Why a cache in ``folder`` is built again (``""``: never built): built by an earlier version
    of the pipeline (an older cache format, :data:`FORMAT_VERSION`), other settings than
    ``section``'s (each key, :func:`settings_diff`), other audio settings than ``audio``
    (:func:`lib.core.artifacts.audio_id`), the splits whose recordings (``hashes``,
    :func:`lib.core.artifacts.audio_fingerprint`) or segments (``spans``,
    :func:`spans_fingerprint`) differ from the last build's, a split added or removed, else the
    record's own reason ``why`` (a file of it changed or missing)."""
    try:
        manifest = read_json(folder / "manifest.json")
        old = manifest["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    version = manifest.get("format_version", 4 if "audio_settings" in manifest else "3 or older")  # (4 added audio_settings)
    reasons = [f"an earlier version's cache format, {version} (now {FORMAT_VERSION})"] if version != FORMAT_VERSION else []
    if diff := settings_diff(built_settings(manifest), section_settings(section), "built", "now"):
        reasons.append(f"settings changed since the last build, {diff}")
    if manifest.get("audio_settings") not in (None, audio):
        reasons.append("other audio settings in competition.yaml (audio section)")
    changed = lambda key, now: [s for s, h in now.items()  # noqa: E731
                                if h is not None and isinstance(old.get(s), dict) and old[s].get(key) not in (None, h)]
    reasons += [f"the {' and '.join(c)} {what} changed since the last build"
                for c, what in ((changed("audio", hashes), "recordings"), (changed("spans", spans), "segments")) if c]
    reasons += [f"a {s} split {how} since the last build" for s, how in [
        *((s, "added") for s in hashes if s not in old), *((s, "removed") for s in old if s not in hashes)]]
    return "; ".join(reasons) or why


def section_settings(section: dict) -> dict:
    """What a ``features`` section builds, as the cache's manifest records it: the extractor's
    name, its dtype and its settings with every default filled (``fmax: null`` written out or left
    to its default is the same set)."""
    as_json = lambda x: json.loads(json.dumps(x))  # noqa: E731  (the manifest's tuples are lists, as JSON reads them)
    return as_json({"name": section["name"], "dtype": section.get("dtype", "float32"), **FEATURES.build(section).settings})


def built_settings(manifest: dict) -> dict:
    """What a cache was built with, from its ``manifest``, in :func:`section_settings`' form."""
    return {"name": manifest.get("name"), "dtype": manifest.get("dtype", "float32"), **manifest.get("settings", {})}


def settings_diff(a: dict, b: dict, a_name: str, b_name: str) -> str:
    """The keys whose values differ between settings ``a`` and ``b`` (:func:`section_settings`), as
    ``"key: <a_name> value, <b_name> value; ..."`` (``""`` when none does); of two mappings, the
    keys within that differ (``files.model.safetensors: ...``: a Hugging Face folder's file
    hashes, not the whole table)."""
    def differ(x, y, key: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            return [d for k in sorted(set(x) | set(y)) for d in differ(x.get(k), y.get(k), f"{key}.{k}")]
        return [f"{key}: {a_name} {json.dumps(x)}, {b_name} {json.dumps(y)}"] if x != y else []  # null, as in YAML

    return "; ".join(d for k in sorted(set(a) | set(b)) for d in differ(a.get(k), b.get(k), k))


def check_settings(section: dict, manifest: dict) -> None:
    """Check that a cached set was built with what an experiment's ``features`` section asks for
    (``{name, set, params, dtype}``; the cache's ``manifest`` as :func:`load_features` returns it):
    the extractor's name, its settings (defaults filled) and the dtype. A ``--set
    features.params.n_mels=32`` given to 02 on a set cached with 16 mels otherwise trains on the old
    cache while the model's ``config.yaml`` says 32. Raises ``ConfigError`` naming the set, each key
    that differs (cached and asked) and what to run."""
    if diff := settings_diff(built_settings(manifest), section_settings(section), "cached", "asked"):
        raise ConfigError(f"feature set {section['set']!r} was cached with other settings than this experiment's "
                          f"features section ({diff}): run 01_features.py with the same config and --set "
                          f"options (it rebuilds the set), or give the experiment another features.set")


def load_features(out: Outputs, feature_set: str, split: str, table=None,
                  mmap_mode: str = "r") -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Memory-map a cached split: returns ``(spec (windows, C, F, T), scalars (windows, S),
    windows (windows, 3) of (recording row, start s within its region, region), manifest)``; of a waveform set
    (:mod:`lib.features.waveform`): ``(wave (samples,), offsets (recordings + 1,), windows,
    manifest)``. ``mmap_mode`` as ``np.load``'s (``"c"``, copy-on-write, gives writable arrays
    that torch can wrap without copying).

    The set's record is checked first (every file present and intact); the manifest returned
    carries the split's id (:func:`lib.core.artifacts.split_id`) as ``manifest["record"]``, which
    results made from it remember (trained models the train split's, test predictions the test
    split's), and the train split's as ``manifest["train_record"]``.
    When ``table`` (the split's rows, ``folds.csv`` or ``test.csv``) is given, checks that the cache
    was built for its ids in that order and for its segments (:func:`spans_fingerprint`).
    Raises ``MissingArtifact`` naming ``01_features.py`` when the cache is missing, incomplete or
    stale: built for other rows, from other audio (:meth:`lib.core.paths.Outputs.audio_changed`) or with other
    audio settings (:func:`lib.core.artifacts.audio_settings`) than the current stage 00's.
    """
    folder = out.features(feature_set)
    rec = out.features_record(feature_set).require()
    manifest = dict(read_json(folder / "manifest.json"), record=split_id(rec, split), train_record=split_id(rec, "train"))
    if split not in manifest["splits"]:
        raise MissingArtifact(f"{folder}: no {split!r} features of set {feature_set!r}: run 01_features.py first")
    built = manifest["splits"][split]
    if table is not None and (built["ids"] != fingerprint(list(table["id"]))
                              or built.get("spans") != spans_fingerprint(table)):
        raise MissingArtifact(f"{folder}: {split} features were built for other rows or segments than "
                              f"{'folds.csv' if split == 'train' else 'test.csv'}: run 01_features.py again")
    if not (folder / f"{split}_regions.npy").is_file() or "audio_settings" not in manifest:
        raise MissingArtifact(f"{folder}: a cache of an older version: run 01_features.py again")
    if out.audio_changed(feature_set, [split]):
        raise MissingArtifact(f"{folder}: feature set {feature_set!r} and 00_prepare.py read other {split} recordings "
                              f"(replaced or changed since one of them ran): run 01_features.py again, and "
                              f"00_prepare.py before it if the audio changed after 00 ran")
    if manifest["audio_settings"] != audio_id(out.load_competition()):
        raise MissingArtifact(f"{folder}: feature set {feature_set!r} was built with other audio settings than "
                              f"competition.yaml's now (00_prepare.py was run again since): run 01_features.py again")
    kind = manifest.get("kind")
    first, second = (STORES[kind], "offsets") if kind in STORES else ("spec", "scalars")
    return (np.load(folder / f"{split}_{first}.npy", mmap_mode=mmap_mode),
            np.load(folder / f"{split}_{second}.npy", mmap_mode=mmap_mode),
            np.load(folder / f"{split}_windows.npy"), manifest)


def load_regions(out: Outputs, feature_set: str, split: str) -> np.ndarray:
    """A cached split's regions ``(regions, 3)``: recording row, start and end in seconds
    (:func:`lib.data.segments.regions`); call after :func:`load_features`, which checks the record."""
    return np.load(out.features(feature_set) / f"{split}_regions.npy")
