#!/usr/bin/env python3
"""Training and inference throughput of each model family, with forward FLOPs per sample.

    python bench/train.py                       # CPU, and CUDA when there is a GPU
    python bench/train.py --device cuda --compile --batch-size 128
    python bench/train.py configs/cnn_small.yaml --no-amp --profile   # where a training step's time goes

For each experiment config it builds the model for that config's input shape (from the feature
set's output on a silent 1-s clip at 16 kHz, the breathing data's format), then times full
training steps (autocast forward, backward, gradient clipping, AdamW step: ``lib.training.loop.train_step``,
the function stage 02 uses) and inference batches on random inputs already on the device. The
forward FLOPs per sample come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add
counts 2); a training step costs about 3x the forward. The achieved FLOP rate
(3 x forward FLOPs x samples/s for training) can be set against the hardware's peak.
Prints one table; nothing is written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.core.utils import keep_freed_memory
from lib.components import load_experiment
from lib.core.device import get_device
from lib.features import FEATURES
from lib.models import build_model, count_parameters
from lib.training.loop import train_step
from lib.training.losses import build_loss
from lib.training.optim import OPTIMIZERS
from lib.core.device import autocast, cpu_bf16, place_model, training_amp

CONFIGS = ["configs/cnn_mel4k.yaml", "configs/cnn_small.yaml", "configs/cnn8.yaml", "configs/vgg.yaml"]


def input_shape(cfg: dict) -> tuple[list[int], int]:
    """``([channels, freq, frames], n_scalars)`` of a config's feature set on a 1-s clip at 16 kHz."""
    spec, scalars = FEATURES.build(cfg["features"])(np.zeros(16000, np.float32), 16000)
    return list(spec.shape), len(scalars)


def check_config(path: str) -> None:
    """Exit with status 2 and a message, before any timing, when ``path``'s feature set is not one this benchmark
    can compute on a silent clip (a spectrogram set computed from audio alone)."""
    cfg = load_experiment(path)
    feats = FEATURES.build(cfg["features"])
    kind = getattr(feats, "kind", "spectrogram")
    if kind != "spectrogram" or cfg["features"]["name"] == "hf_embeddings":
        print(f"bench/train.py: {path}: feature set '{cfg['features']['name']}' gives {kind} inputs"
                 f"{' from a local model folder' if kind == 'spectrogram' else ''}; this benchmark times "
                 f"models on spectrograms computed from audio (log_mel, seed9). For the waveform path run "
                 f"bench/waveform.py", file=sys.stderr)
        sys.exit(2)


def forward_flops(model, spec, scalars) -> float:
    """Forward FLOPs of one sample (counted on a batch of 2 in eval mode, halved)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(spec[:2], scalars[:2])
    return counter.get_total_flops() / 2


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def op_profile(step, steps: int, device, top: int = 8) -> str:
    """``torch.profiler``'s self time per operator over ``steps`` calls of ``step`` (CPU time; on
    CUDA, device time): the total in ms a step and the ``top`` largest shares."""
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the profiler's note that it clears its events each cycle)
        prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))
        with prof:
            for _ in range(steps):
                step()
            sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, key))
    total = sum(getattr(e, key) for e in events)
    return (f"{total / steps / 1000:.0f} ms a step: "
            + ", ".join(f"{e.key} {100 * getattr(e, key) / total:.0f}%" for e in events[:top]))


def bench(path: str, device, batch_size: int, steps: int, compile: bool, amp: bool = True,
          profile: bool = False) -> dict:
    """Time ``steps`` training steps and as many inference batches of one config's model;
    ``profile``: also the training step's time per operator (:func:`op_profile`, ``"profile"``)."""
    cfg = load_experiment(path)
    shape, n_scalars = input_shape(cfg)
    model = build_model(cfg["model"], {"spec_shape": shape, "n_scalars": n_scalars}, n_outputs=1)
    spec = torch.randn(batch_size, *shape, device=device).contiguous(memory_format=torch.channels_last)
    scalars = torch.randn(batch_size, n_scalars, device=device)
    target = torch.randint(0, 2, (batch_size, 1), device=device).float()
    flops = forward_flops(model, spec.cpu(), scalars.cpu())
    forward = place_model(model, device, compile)
    amp = training_amp(device, amp, compile)
    opt = OPTIMIZERS.build(cfg["optimizer"], params=model.parameters())
    loss_fn = build_loss(cfg["loss"], "binary").to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    model.train()
    for _ in range(3):  # warm-up: cuDNN autotuning, compilation, allocator
        train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, amp)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, amp)
    float(loss)
    train_s = time.perf_counter() - t0
    ops = op_profile(lambda: train_step(forward, model, opt, loss_fn, scaler, spec, scalars, target, device, amp),
                     steps, device) if profile else None
    model.eval()
    with torch.no_grad():
        for _ in range(5):  # warm-up: oneDNN primitives for the inference shapes
            with autocast(device, training=False):  # as lib.inference.predict.predict_logits
                forward(spec, scalars)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with autocast(device, training=False):
                out = forward(spec, scalars)
        float(out["logits"].float().sum())
        infer_s = time.perf_counter() - t0
    train_rate, infer_rate = steps * batch_size / train_s, steps * batch_size / infer_s
    return {"config": Path(path).stem, "model": cfg["model"]["name"], "input": "x".join(map(str, shape)),
            "params_M": count_parameters(model) / 1e6, "fwd_GFLOP": flops / 1e9,
            "train_samples_s": train_rate, "infer_samples_s": infer_rate,
            "train_TFLOP_s": 3 * flops * train_rate / 1e12, "infer_TFLOP_s": flops * infer_rate / 1e12, "profile": ops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="*", default=CONFIGS)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, then CUDA too when available")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per model (default %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--no-amp", action="store_true", help="train in float32 (train.amp: false)")
    p.add_argument("--profile", action="store_true", help="also each model's training step by operator "
                                                          "(torch.profiler, after the timing)")
    args = p.parse_args()
    keep_freed_memory()  # as every stage runs (lib.cli.run)
    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else \
        ["cpu"] if args.device == "auto" else [args.device]
    for path in args.configs:
        check_config(path)
    for name in devices:
        device = get_device(name)
        what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        bf16 = training_amp(device, not args.no_amp, args.compile) and (device.type == "cuda" or cpu_bf16())
        amp = "bf16" if bf16 else "off"
        print(f"\n{what}; batch {args.batch_size}; {args.steps} steps; training amp {amp}, inference "
              f"{'bf16' if device.type == 'cuda' else 'float32'}; channels-last"
              f"{'; compiled' if args.compile else ''}")
        print(f"{'config':<12} {'model':<6} {'input':<10} {'params M':>8} {'fwd GFLOP':>9} "
              f"{'train/s':>8} {'infer/s':>8} {'train TFLOP/s':>13} {'infer TFLOP/s':>13}")
        profiles = []
        for path in args.configs:
            r = bench(path, device, args.batch_size, args.steps, args.compile, not args.no_amp, args.profile)
            profiles.append(r)
            print(f"{r['config']:<12} {r['model']:<6} {r['input']:<10} {r['params_M']:>8.2f} {r['fwd_GFLOP']:>9.3f} "
                  f"{r['train_samples_s']:>8.0f} {r['infer_samples_s']:>8.0f} {r['train_TFLOP_s']:>13.3f} "
                  f"{r['infer_TFLOP_s']:>13.3f}")
        for r in profiles if args.profile else ():  # (after the table)
            print(f"{r['config']}: {r['profile']}")


if __name__ == "__main__":
    main()
