"""A small SYNTHETIC competition for trying the pipeline without data: ``python -m lib.data.demo DIR``.

Binary task, classes ``fall``/``rise``: 1-s, 16 kHz clips holding a chirp that falls or rises
between 300 and 3000 Hz, in noise, at random levels. ``DIR`` gets the layout competitions ship
(``train.csv`` ``id,label``; ``test.csv`` ``id``; ``sample_submission.csv``; ``train/``, ``test/``),
described by ``configs/data/demo.yaml``. Ids ``s<session>_<clip>`` form groups by session.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import chirp

SR = 16000


def make_clip(rising: bool, rng: np.random.Generator) -> np.ndarray:
    """One clip ``(16000,)`` float32: a chirp (rising or falling, 300-3000 Hz) plus white noise."""
    t = np.arange(SR) / SR
    f0, f1 = rng.uniform(300, 800), rng.uniform(1500, 3000)
    tone = chirp(t, f0, 1.0, f1) if rising else chirp(t, f1, 1.0, f0)
    y = rng.uniform(0.05, 0.3) * tone + rng.uniform(0.02, 0.2) * rng.standard_normal(SR)
    return np.clip(y, -1, 1).astype(np.float32)


def make_demo(root: str | Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> Path:
    """Write the synthetic competition into ``root`` (kept if already there); returns ``root``."""
    root = Path(root)
    if (root / "sample_submission.csv").exists():
        return root
    rng = np.random.default_rng(seed)
    rows = {}
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        ids, labels = [], []
        for i in range(n):
            rising = bool(rng.integers(2))
            sample_id = f"{split[:2]}{i // 4:03d}_{i % 4}"
            sf.write(root / split / f"{sample_id}.wav", make_clip(rising, rng), SR, subtype="PCM_16")
            ids.append(sample_id)
            labels.append("rise" if rising else "fall")
        rows[split] = (ids, labels)
    pd.DataFrame({"id": rows["train"][0], "label": rows["train"][1]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": rows["test"][0]}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": rows["test"][0], "label": "fall"}).to_csv(root / "sample_submission.csv", index=False)
    return root


if __name__ == "__main__":
    print(f"SYNTHETIC demo competition in {make_demo(sys.argv[1] if len(sys.argv) > 1 else 'output/demo/input')}")
