"""Competitions in the layouts of the seed datasets, made from the real breathing clips, for the
tests (a few sessions) and the benchmark (all of them):

* ICBHI-style (respiratory cycles, Rocha et al. 2019): the clips of one recording session
  concatenated into one recording ``audio/<patient>_1b1_Tc_sc_Steth.wav`` with its cycle
  annotation ``audio/<same stem>.txt`` (lines ``start end exhale artefact``: seconds, two 0/1
  columns, as ICBHI's ``start end crackles wheezes``), ``train.csv``/``test.csv`` (recording,
  patient: the recording day) and a per-cycle ``sample_submission.csv`` (``test_labels.csv``:
  its true labels);
* MAIC-style (voice pathology 2021): no audio; each clip's log-mel as a 128-row CSV table
  ``mel/<id>.csv`` (a row per mel band, a column per 16-ms frame) with a token annotation
  ``tokens/<id>.json`` (``{"tokens": [{"start": frame, "end": frame, "skip": bool}, ...]}``),
  ``train.csv`` (id, label, patient, sex, age) and ``test.csv`` (id, patient, sex, age), the
  patient being the recording session, sex and age drawn per session.

``python tests/seed_formats.py icbhi|maic OUT [--sessions N]`` writes a whole one (all sessions
by default) for ``bench/``; the tests call :func:`make_icbhi` and :func:`make_maic`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
BREATHING = ROOT.parent / "shared" / "data" / "breathing"
MEL_FPS = 16000 / 256
"""Frames per second of the MAIC-style tables (16 kHz, hop 256)."""


def breathing_sessions(src: Path = BREATHING) -> pd.DataFrame:
    """The labelled breathing clips with their session (the first five ``_`` fields of the id),
    clip number and audio path, in session and clip order."""
    train = pd.read_csv(src / "train.csv")
    train["session"] = train.ID.str.split("_").str[:5].str.join("_")
    train["clip"] = train.ID.str.split("_").str[-1].astype(int)
    train["path"] = [src / "train" / (i.replace("_I_", "_").replace("_E_", "_") + ".wav") for i in train.ID]
    return train.sort_values(["session", "clip"]).reset_index(drop=True)


def _pick(clips: pd.DataFrame, sessions: int | None, min_clips: int) -> list[str]:
    """Every session (``sessions=None``), or ``sessions`` evenly spaced ones among those with at
    least ``min_clips`` clips of both phases."""
    if sessions is None:
        return sorted(clips.session.unique())
    counts = clips.groupby("session").size()
    both = clips.groupby("session").Target.nunique()
    names = [s for s in counts.index if counts[s] >= min_clips and both[s] == 2]
    return names[:: max(1, len(names) // sessions)][:sessions]


def make_icbhi(out: Path, sessions: int | None = 12, test_share: float = 0.25, src: Path = BREATHING) -> Path:
    """Write an ICBHI-style competition to ``out`` (see the module docstring) from ``sessions``
    breathing sessions with at least 4 clips of both phases (``None``: every session); the last
    ``test_share`` of them (by date) form the test set. Returns ``out``."""
    clips = breathing_sessions(src)
    names = _pick(clips, sessions, 4)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows, cycles = [], []
    for n, session in enumerate(names):
        stem = f"{100 + n}_1b1_Tc_sc_Steth"
        parts, lines, t = [], [], 0.0
        for k, c in enumerate(clips[clips.session == session].itertuples()):
            y, sr = sf.read(c.path, dtype="float32")
            parts.append(y)
            lines.append(f"{t:.3f}\t{t + len(y) / sr:.3f}\t{int(c.Target == 'E')}\t0")
            cycles.append((f"{stem}#{k}", c.Target))
            t += len(y) / sr
        sf.write(out / "audio" / f"{stem}.wav", np.concatenate(parts), sr, subtype="PCM_16")
        (out / "audio" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        rows.append({"recording": stem, "patient": session.split("_")[1],  # the recording day
                     "split": "test" if n >= len(names) * (1 - test_share) else "train"})
    table = pd.DataFrame(rows)
    table[table.split == "train"][["recording", "patient"]].to_csv(out / "train.csv", index=False)
    test = table[table.split == "test"][["recording", "patient"]]
    test.to_csv(out / "test.csv", index=False)
    truth = pd.DataFrame(cycles, columns=["id", "label"])
    truth = truth[truth.id.str.split("#").str[0].isin(test.recording)]
    truth.assign(label="inhale").to_csv(out / "sample_submission.csv", index=False)
    truth.assign(label=truth.label.map({"I": "inhale", "E": "exhale"})).to_csv(out / "test_labels.csv", index=False)
    return out


def make_maic(out: Path, sessions: int | None = 12, test_share: float = 0.25, src: Path = BREATHING,
              seed: int = 0) -> Path:
    """Write a MAIC-style competition to ``out`` (see the module docstring) from the clips of
    ``sessions`` breathing sessions with clips of both phases (``None``: every one); each clip's log-mel (128 bands, 16-ms
    hop) becomes a table with three tokens of 18-30 frames, the middle one flagged ``skip`` on
    every fifth clip; the last ``test_share`` of the sessions form the test set. Returns ``out``."""
    import librosa

    clips = breathing_sessions(src)
    names = _pick(clips, sessions, 2)
    rng = np.random.default_rng(seed)
    for d in ("mel", "tokens"):
        (out / d).mkdir(parents=True, exist_ok=True)
    rows = []
    for n, session in enumerate(names):
        sex, age = rng.choice(["M", "F"]), int(rng.integers(20, 85))
        for c in clips[clips.session == session].itertuples():
            y, sr = sf.read(c.path, dtype="float32")
            mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256, n_mels=128))
            cid = c.ID.replace("_I_", "_").replace("_E_", "_")
            np.savetxt(out / "mel" / f"{cid}.csv", mel, delimiter=",", fmt="%.3f")
            frames = mel.shape[1]
            a, b = sorted(rng.integers(18, frames - 18, size=2))
            tokens = [{"start": 0, "end": int(a)}, {"start": int(a) - 5, "end": int(b) + 5}, {"start": int(b), "end": frames}]
            tokens[1]["skip"] = bool(c.clip % 5 == 0)
            (out / "tokens" / f"{cid}.json").write_text(json.dumps({"tokens": tokens}))
            rows.append({"id": cid, "label": c.Target, "patient": session, "sex": sex, "age": age,
                         "split": "test" if n >= len(names) * (1 - test_share) else "train"})
    table = pd.DataFrame(rows)
    table[table.split == "train"].drop(columns="split").to_csv(out / "train.csv", index=False)
    test = table[table.split == "test"]
    test[["id", "patient", "sex", "age"]].to_csv(out / "test.csv", index=False)
    test[["id"]].assign(label="I").to_csv(out / "sample_submission.csv", index=False)
    test[["id", "label"]].to_csv(out / "test_labels.csv", index=False)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("format", choices=["icbhi", "maic"])
    p.add_argument("out", type=Path)
    p.add_argument("--sessions", type=int, default=None, help="how many sessions (default: all)")
    args = p.parse_args()
    made = (make_icbhi if args.format == "icbhi" else make_maic)(args.out, args.sessions)
    print(f"wrote {made}")
