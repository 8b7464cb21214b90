#!/usr/bin/env python3
"""Training samples/s of the same CNN on cached features and on the waveform path.

    python bench/waveform.py                       # CPU, and CUDA when there is a GPU
    python bench/waveform.py --device cuda --batch-size 128 --steps 50

Each row times whole training steps as stage 02 runs them: ``lib.training.loop.training_batch``
(the batch from the data object, waveform augmentation, the model's front end, Mixup/SpecAugment)
then ``lib.training.loop.train_step`` (autocast forward, backward, clipping, AdamW), on generated
data in the breathing format (1-s recordings at 16 kHz, 512 of them, in memory):

* ``cached``: ``configs/cnn_small.yaml`` on 64 x 63 log-mel windows (what 01 caches);
* ``waveform``: ``configs/wave_cnn.yaml``: random crops, its waveform augmentations (gain, time
  shift, pink noise), the log-mel front end inside the model, then the same Mixup/SpecAugment;
* ``+ filter``: that plus a random band-pass biquad (torchaudio ``lfilter``, per example);
* ``+ stretch/pitch``: that plus ``time_stretch`` and ``pitch_shift`` (librosa, on the CPU, p=0.5).

The CNN is the same in every row (channels 16-32-64-128, two convs per block). Prints one table
per device; nothing is written.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.core.utils import keep_freed_memory
from lib.components import load_experiment
from lib.core.device import get_device
from lib.inputs import WaveData
from lib.inputs import WindowData
from lib.models import build_model
from lib.training.augment import Augmenter
from lib.training.loop import train_step, training_batch
from lib.training.losses import build_loss
from lib.training.optim import OPTIMIZERS
from lib.core.device import cpu_bf16, place_model
from lib.training.wave_augment import WaveAugmenter

SR, N = 16000, 512
EXTRA = {
    "+ filter": [{"name": "filter", "params": {"p": 0.5, "kind": "bandpass", "min_hz": 200, "max_hz": 4000}}],
    "+ stretch/pitch": [{"name": "filter", "params": {"p": 0.5, "kind": "bandpass", "min_hz": 200, "max_hz": 4000}},
                        {"name": "time_stretch", "params": {"p": 0.5}}, {"name": "pitch_shift", "params": {"p": 0.5}}],
}


def make_data(waveform: bool, device):
    """Generated inputs: ``WaveData`` of N 1-s recordings, or ``WindowData`` of N 64 x 63 log-mels."""
    g = torch.Generator().manual_seed(0)
    if waveform:
        grid = np.column_stack([np.arange(N), np.zeros(N)])
        data = WaveData((0.1 * torch.randn(N * SR, generator=g)).to(device), np.arange(N + 1) * SR, grid,
                        {"sample_rate": SR, "clip_seconds": 1.0, "pad": "zero"}, N)
    else:
        data = WindowData((torch.randn(N, 1, 64, 63, generator=g) * 10 - 40).to(device), torch.zeros(N, 0, device=device),
                          np.arange(N), np.arange(N), np.ones(N, int), {"spec_shape": [1, 64, 63], "n_scalars": 0,
                                                                        "sample_rate": SR, "hop_length": 256})
    data.target = torch.randint(0, 2, (N, 1), generator=g).float().to(device)
    return data


def bench(cfg: dict, data, device, batch_size: int, steps: int) -> float:
    """Training samples/s of ``steps`` steps (after 3 of warm-up) of ``cfg`` on ``data``."""
    model = build_model(cfg["model"], data.manifest if cfg.get("frontend") is None else {"sample_rate": SR},
                        1, 0, cfg.get("frontend"))
    if model.frontend is not None:  # per-band statistics of a few crops, as train_fold sets them
        with torch.no_grad():
            y = model.frontend.transform(data.batch(data.windows_of(np.arange(64))[0], torch.device("cpu"))[0].cpu())
        model.frontend.set_normalisation(y.mean((0, 3))[..., None], y.std((0, 3))[..., None])
    forward = place_model(model, device)
    opt = OPTIMIZERS.build(cfg["optimizer"], params=model.parameters())
    loss_fn = build_loss(cfg["loss"], "binary").to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    wave_augment = WaveAugmenter(cfg["augment"]["waveform"], seed=0, sample_rate=SR)
    augment = Augmenter(cfg["augment"], seed=0)
    rng = np.random.default_rng(0)
    model.train()

    def step():
        items = data.sample_windows(rng.choice(N, batch_size), rng)
        spec, scalars, target = training_batch(data, items, device, model, wave_augment, augment)
        return train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device)[0]

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss)
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, then CUDA too when available")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per row (default %(default)s)")
    args = p.parse_args()
    keep_freed_memory()  # as every stage runs (lib.cli.run)
    root = Path(__file__).resolve().parents[1]
    cached, wave = load_experiment(root / "configs/cnn_small.yaml"), load_experiment(root / "configs/wave_cnn.yaml")
    assert cached["model"] == wave["model"], "the rows must compare the same CNN"
    rows = [("cached", cached, False), ("waveform", wave, True)]
    for label, extra in EXTRA.items():
        cfg = copy.deepcopy(wave)
        cfg["augment"]["waveform"] += extra
        rows.append((label, cfg, True))
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else \
        ["cpu"] if args.device == "auto" else [args.device]
    for name in devices:
        device = get_device(name)
        what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        amp = "bf16" if device.type == "cuda" or cpu_bf16() else "off"
        print(f"\n{what}; batch {args.batch_size}; {args.steps} steps; training amp {amp}")
        print(f"{'inputs':<18} {'train samples/s':>15} {'vs cached':>9}")
        base = None
        for label, cfg, waveform in rows:
            rate = bench(cfg, make_data(waveform, device), device, args.batch_size, args.steps)
            base = base or rate
            print(f"{label:<18} {rate:>15.0f} {rate / base:>9.2f}")


if __name__ == "__main__":
    main()
