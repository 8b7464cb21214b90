"""Audio I/O: read at the native sample rate, mix to mono, pad or trim to a fixed length.

Reading goes through ``soundfile`` (libsndfile), which never resamples. A resample happens only
when the caller asks for a rate, and then explicitly (``librosa.resample``, soxr high quality).
This avoids the silent 48 kHz -> 22.05 kHz resample of ``librosa.load``'s default that one of
the seed projects suffered (``../shared/DESIGN.md`` §2, breath sounds).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from ..core.errors import AudioError

PAD_MODES = ("zero", "repeat", "reflect")


def info(path: str | Path) -> tuple[int, int, int]:
    """Read a file's header: returns ``(sample_rate Hz, frames, channels)``.

    Raises ``AudioError`` naming the file when it is missing or libsndfile cannot read it.
    """
    i = header(path)
    return int(i.samplerate), int(i.frames), int(i.channels)


def _near_miss_hint(path: Path) -> str:
    """For a missing ``path``: a note naming a file of its folder that it nearly names, else ``""``:
    the same name in another Unicode normal form (NFC or NFD: the same letters, e.g. ``ë`` as one
    character or as ``e`` + a combining mark), in another case (``UPPER.WAV``), or with an
    extension (the id without one: probe)."""
    import unicodedata

    for form in ("NFC", "NFD"):
        other = path.with_name(unicodedata.normalize(form, path.name))
        if other != path and other.is_file():
            return (f" (a file {other.name!r} exists whose name is the same text in Unicode form {form}: write the "
                    f"id in the CSV in that form, or rename the file)")
    names = _folder_names(path.parent)
    if other := names.get(path.name.casefold()):
        return f" (a file {other!r} exists whose name differs in case: write the id as the file is named, or rename it)"
    if other := names.get(("stem", path.name.casefold())):
        return (f" (a file {other!r} exists: the id or the audio template lacks its extension, e.g. "
                f"audio.template: '.../{{id}}{Path(other).suffix}')")
    return ""


def _folder_names(folder: Path) -> dict:
    """A folder's file names by their casefolded name, and by ``("stem", casefolded stem)``; read
    once per folder state (its modification time), so that a table of many missing ids lists it once."""
    try:
        key = (str(folder), folder.stat().st_mtime_ns)
    except OSError:
        return {}
    cached_key, names = _FOLDERS.get("last", (None, {}))
    if cached_key != key:
        names = {}
        for entry in os.scandir(folder):
            names.setdefault(entry.name.casefold(), entry.name)
            names.setdefault(("stem", Path(entry.name).stem.casefold()), entry.name)
        _FOLDERS["last"] = (key, names)  # (one assignment: a reader never pairs one folder's key with another's names)
    return names


_FOLDERS: dict = {}


def _unreadable(path: Path, exc: Exception) -> AudioError:
    """The error for a file libsndfile could not read: an empty one said as such."""
    empty = Path(path).is_file() and Path(path).stat().st_size == 0
    return AudioError(f"{path}: " + ("empty file (0 bytes: a failed download or copy?)" if empty
                                     else f"unreadable audio ({exc})"))


def header(path: str | Path):
    """libsndfile's view of a file's header (``sf.info``: ``samplerate`` Hz, ``frames``,
    ``channels``, ``subtype`` ...). Raises ``AudioError`` naming the file when it is missing,
    empty (0 bytes) or libsndfile cannot read it."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found{_near_miss_hint(path)}")
    try:
        return sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types
        raise _unreadable(path, exc) from exc


def defects(path: str | Path, info=None) -> list[str]:
    """What a header read does not show: messages naming the file (empty when it is sound).

    Checks three things. Truncation of a RIFF WAV: the size the ``data`` chunk's header declares
    against the bytes the file holds after the chunk's start; libsndfile silently clips
    ``frames`` to what is there (its log says "data : N (should be M)"), so neither ``sf.info``
    nor a full read shows it. Costs one open and a read of each chunk header, not of the samples.
    A compressed file (FLAC, Ogg, MP3) cut short: its last 2048 frames are decoded (a seek, about a
    millisecond); an error there, or for FLAC, whose header holds the exact length, fewer frames
    than the header declares, is a defect (an MP3's length is an estimate; a cut Ogg reads as a
    shorter recording; damage in the middle of a file would need a full decode, not done). Non-finite samples: only files of float subtype (``FLOAT``,
    ``DOUBLE``) can hold NaN or inf; those are read fully and checked with ``np.isfinite``;
    integer PCM files are not read. ``info``: the file's :func:`header` when the caller has it
    (saves a header read). Raises ``AudioError`` naming the file when it is missing or libsndfile
    cannot read it.
    """
    path = Path(path)
    out = []
    info = info or header(path)
    missing = _wav_missing_bytes(path) if path.is_file() else 0
    if missing:
        out.append(f"{path}: truncated: {missing} bytes of audio data the header declares are missing")
    if info.format in ("FLAC", "OGG", "MP3", "MPEG") and info.frames:
        want = min(2048, info.frames)
        try:
            with sf.SoundFile(str(path)) as f:
                f.seek(info.frames - want)
                got = len(f.read(want, dtype="float32"))
        except Exception as exc:  # libsndfile raises several types
            out.append(f"{path}: cannot be decoded to its end, truncated or damaged ({exc})")
        else:
            if info.format == "FLAC" and got < want:
                out.append(f"{path}: truncated: its last {want - got} of {info.frames} frames cannot be read")
    if info.subtype in ("FLOAT", "DOUBLE"):
        try:
            y, _ = sf.read(str(path), dtype="float64", always_2d=True)
        except Exception as exc:
            raise _unreadable(path, exc) from exc
        bad = int((~np.isfinite(y)).sum())
        if bad:
            out.append(f"{path}: {bad} NaN or infinite sample(s)")
    return out


def _wav_missing_bytes(path: Path) -> int:
    """Bytes a RIFF WAV's ``data`` chunk declares beyond the end of the file (0 when complete,
    not a RIFF WAV, without a data chunk, or written by a streaming writer with size 0 or 2**32-1)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            n = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return 0 if n in (0, 0xFFFFFFFF) else max(0, n - (size - pos - 8))
            pos += 8 + n + (n & 1)  # chunks are padded to an even size
    return 0


RESAMPLERS = ("soxr_hq", "soxr_vhq", "soxr_mq", "soxr_lq", "polyphase", "fft")
"""Resampling methods (``librosa.resample``'s ``res_type``): ``soxr_*`` use libsoxr,
``polyphase`` and ``fft`` scipy."""


SEEK_PREROLL = 4608
"""Native frames read before a segment's start and dropped (:func:`load`). libsndfile (1.2) does
not seek MP3 exactly: the decoder restarts at the frame sought without the frames before it, and
the first few hundred samples of a segment came out wrong (by up to 0.3 on a heart sound of RMS
0.19, measured); decoding from one MP3 frame (1152 samples) earlier made them equal to a
whole-file read. Four frames' worth, for every format (exact ones lose nothing by it)."""


def load(path: str | Path, sample_rate: int | None = None, channel: int | None = None,
         resample_type: str = "soxr_hq", start_s: float | None = None, end_s: float | None = None
         ) -> tuple[np.ndarray, int]:
    """Load a file as mono float32 in [-1, 1].

    Input: a path (WAV, FLAC, OGG, MP3 and what else libsndfile reads), an optional target rate
    in Hz, an optional channel index (default: the mean of all channels) and the resampling
    method (:data:`RESAMPLERS`). Output: ``(y, sr)`` with ``y`` of shape ``(samples,)``. With
    ``sample_rate=None`` the native rate is kept; otherwise the signal is resampled explicitly.
    ``start_s``/``end_s`` (seconds): read only the native frames ``round(start_s * sr)`` to
    ``round(end_s * sr)`` (a segment; :func:`region_samples` gives its length once loaded),
    decoded from :data:`SEEK_PREROLL` frames earlier so that a segment of an MP3 equals the same
    samples of a whole-file read (at the native rate; a resampled segment is resampled on its own).
    Raises ``AudioError`` naming the file when it is missing, unreadable, empty, lacks the
    channel or holds NaN or infinite samples, and ``ValueError`` for an argument no file could
    satisfy (a sample rate that is not a positive whole number, a negative channel, an unknown
    resampler).
    """
    path = Path(path)
    _check_load_arguments(sample_rate, channel, resample_type)
    try:
        span, skip = {}, 0
        if start_s is not None or end_s is not None:
            native = sf.info(str(path)).samplerate
            start = int(round((start_s or 0.0) * native))
            skip = min(start, SEEK_PREROLL)
            span = {"start": start - skip, "stop": None if end_s is None else int(round(end_s * native))}
        y, sr = sf.read(str(path), dtype="float32", always_2d=True, **span)
        y = y[skip:]
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    if y.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    if channel is not None and channel >= y.shape[1]:
        raise AudioError(f"{path}: has {y.shape[1]} channel(s), channel {channel} was asked for")
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: NaN or infinite samples")
    y = y.mean(axis=1) if channel is None else y[:, channel]
    if sample_rate and sr != sample_rate:
        y, sr = resample(y, sr, sample_rate, resample_type), sample_rate
    return np.ascontiguousarray(y, dtype=np.float32), int(sr)


def _check_load_arguments(sample_rate, channel, resample_type: str) -> None:
    """Raise ``ValueError`` naming the argument of :func:`load` that no file could satisfy: a
    sample rate that is not a positive whole number of Hz (0 kept the native rate, a str failed
    inside soxr), a negative channel (-1 picked the last one), an unknown resampler."""
    if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.number))
                                    or not sample_rate > 0 or not float(sample_rate).is_integer()):
        raise ValueError(f"audio.load: sample_rate={sample_rate!r} is not a positive whole number of Hz (or None: "
                         f"the file's own rate)")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or channel < 0):
        raise ValueError(f"audio.load: channel={channel!r} is not a channel index 0, 1, ... (or None: the mean)")
    if resample_type not in RESAMPLERS:
        raise ValueError(f"audio.load: resample_type={resample_type!r} is not one of {', '.join(RESAMPLERS)}")


def resample(y: np.ndarray, orig_sr: int, target_sr: int, resample_type: str = "soxr_hq") -> np.ndarray:
    """Resample ``y (..., samples)`` from ``orig_sr`` to ``target_sr`` Hz along its last axis
    (``librosa.resample``, ``res_type=resample_type``: :data:`RESAMPLERS`), float32; the output has
    ``ceil(samples * target_sr / orig_sr)`` samples. ``y`` itself when the rates are equal."""
    if orig_sr == target_sr:
        return y
    import librosa

    return np.asarray(librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type=resample_type, axis=-1),
                      dtype=np.float32)


def check_clip(y) -> None:
    """Check a clip given to a feature set (``extractor(y, sr)``): a numpy array of shape
    ``(samples,)`` and a float dtype (samples in [-1, 1], as :func:`load` gives). Raises
    ``AudioError`` saying what was given: a list, a stereo ``(samples, 2)`` or ``(2, samples)``
    array, or integer PCM (int16 samples would come out 32767 times too loud) would otherwise be
    computed on, unsaid."""
    if isinstance(y, np.ndarray) and y.ndim == 1 and np.issubdtype(y.dtype, np.floating):
        return
    got = f"a {type(y).__name__}" if not isinstance(y, np.ndarray) else f"an array of shape {y.shape}, dtype {y.dtype}"
    raise AudioError(f"a feature set takes one mono clip as a float numpy array of shape (samples,) in [-1, 1] "
                     f"(lib.data.audio.load gives one; stereo: average the channels or pick one; int16 PCM: "
                     f"divide by 32768); got {got}")


def region_samples(start_s, end_s, native, rate) -> np.ndarray:
    """Samples of stretches ``start_s``-``end_s`` (seconds; arrays or numbers) of files at
    ``native`` Hz once loaded by :func:`load` at ``rate`` Hz: the native frames
    ``round(end_s * native) - round(start_s * native)``, or ``ceil(frames * rate / native)`` after
    ``librosa.resample`` (which fixes the length to that). int64."""
    native = np.asarray(native, float)
    frames = np.round(np.asarray(end_s, float) * native).astype(np.int64) - np.round(np.asarray(start_s, float) * native).astype(np.int64)
    resampled = np.ceil(frames * rate / native - 1e-9).astype(np.int64)
    return np.where(native == rate, frames, resampled)


def window_starts(duration: float, window: float, hop: float | None) -> np.ndarray:
    """Start times in seconds ``(windows,)`` of the windows that cover a recording.

    ``hop=None`` or a recording no longer than ``window``: one window at 0 (a longer recording is
    then trimmed to its start). Otherwise windows every ``hop`` seconds while they fit, plus one
    ending at the end of the recording when the last one stops short of it, so every sample is
    covered. Example: 3.5 s, window 2, hop 1 -> ``[0, 1, 1.5]``.
    """
    if hop is None or duration <= window + 1e-9:
        return np.zeros(1)
    n = int(np.floor((duration - window) / hop + 1e-9)) + 1
    starts = np.arange(n) * hop
    if starts[-1] + window < duration - 1e-6:
        starts = np.append(starts, duration - window)
    return starts


def cut_windows(y: np.ndarray, sr: int, starts: np.ndarray, window: float, pad: str = "zero") -> np.ndarray:
    """Cut windows of ``window`` seconds at ``starts`` (seconds) from ``y`` ``(samples,)``, each padded
    by :func:`fix_length` where the signal ends early; returns ``(windows, round(window * sr))``."""
    n = int(round(window * sr))
    return np.stack([fix_length(y[int(round(s * sr)):int(round(s * sr)) + n], n, pad) for s in starts])


def fix_length(y: np.ndarray, n_samples: int, pad: str = "zero") -> np.ndarray:
    """Pad or trim a 1-D signal to exactly ``n_samples``.

    Trimming keeps the start. Padding modes: ``zero`` (append zeros), ``repeat`` (tile the
    signal, which beat zero padding on breath sounds, DESIGN §2), ``reflect`` (mirror it).
    Input ``(samples,)``, output ``(n_samples,)``, same dtype. Raises ``ValueError`` for an
    unknown mode.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"pad mode {pad!r} is not one of {PAD_MODES}")
    if len(y) >= n_samples:
        return y[:n_samples]
    if len(y) == 0:
        return np.zeros(n_samples, dtype=y.dtype)
    missing = n_samples - len(y)
    if pad == "zero":
        return np.pad(y, (0, missing))
    if pad == "repeat":
        return np.tile(y, -(-n_samples // len(y)))[:n_samples]
    out = y
    while len(out) < n_samples:  # np.pad's reflect cannot pad more than len - 1 at once
        out = np.pad(out, (0, min(n_samples - len(out), len(out) - 1)), mode="reflect") if len(out) > 1 \
            else np.pad(out, (0, n_samples - len(out)), mode="edge")
    return out
