#!/usr/bin/env python3
"""Prediction speed of a bundle's fold models: PyTorch eager against ONNX Runtime, on real test audio.

    python bench/onnx.py BUNDLE --data-dir ../shared/data/breathing [--recordings 600] [--threads 2]

BUNDLE: made by ``05_bundle.py --onnx``. For each experiment of the bundle the test features of
the first N recordings are computed once as ``predict_bundle.py`` does (stage 01's code, into a
temporary folder; timed apart), then every fold model predicts every window of them with the
experiment's test-time augmentation: PyTorch eager (float32, ``torch.set_num_threads(threads)``)
and the bundle's ONNX graphs with ONNX Runtime (``intra_op_num_threads = threads``). Prints
recordings per second and per CPU core, the largest difference of the two engines' recording
probabilities, and what fits in a BirdCLEF-style budget: 600 one-minute recordings in 90
minutes on 4 CPU cores, from the seconds of audio each engine predicts per second per core
(features included). Nothing is written outside the temporary folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.core.paths import Outputs
from lib.data.prepare import prepare_test
from lib.inputs import load_inputs
from lib.features.cache import build_feature_set
from lib.inference.infer import load_checkpoints, predict_folds
from lib.shipping.bundle import load_bundle
from lib.shipping.onnx_export import OnnxModel

BUDGET = {"recordings": 600, "seconds_each": 60.0, "minutes": 90, "cores": 4}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--data-dir", required=True, help="the competition folder with the test audio")
    p.add_argument("--recordings", type=int, default=600, help="test recordings to predict (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for each engine (default: %(default)s)")
    args = p.parse_args()
    bundle = Path(args.bundle)
    manifest, comp, _ = load_bundle(bundle)
    comp["data_dir"] = str(Path(args.data_dir).resolve())
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        table = pd.read_csv(Path(comp["data_dir"]) / comp["test"]["csv"], dtype=str).head(args.recordings)
        table.to_csv(Path(tmp) / "bench_test.csv", index=False)
        comp["test"] = dict(comp["test"], csv=str(Path(tmp) / "bench_test.csv"))
        prepare_test(comp, tmp)
        work = Outputs(Path(tmp))
        table = work.load_split("test")
        audio_s = float(table["duration_s"].sum())
        for exp in manifest["experiments"]:
            cfg = yaml.safe_load((bundle / "models" / exp / "config.yaml").read_text())
            folds = manifest["folds"][exp]
            if not all((bundle / "models" / exp / f"fold{k}.onnx").exists() for k in folds):
                print(f"{exp}: no ONNX models in the bundle (05_bundle.py --onnx); skipped")
                continue
            t0 = time.perf_counter()
            build_feature_set(work, cfg["features"], workers=args.threads, splits=("test",))
            features_s = time.perf_counter() - t0
            data = load_inputs(work, cfg, "test", table, comp, torch.device("cpu"))
            models = load_checkpoints(bundle / "models" / exp, folds, torch.device("cpu"))
            onnx = [(c, OnnxModel(bundle / "models" / exp / f"fold{k}.onnx", m.n_outputs, args.threads))
                    for k, (c, m) in zip(folds, models)]
            result = {}
            for engine, ms in (("torch", models), ("onnx", onnx)):
                predict_folds(ms[:1], data, table.head(8), comp, cfg.get("tta"), "warm-up")  # first-call costs
                t0 = time.perf_counter()
                result[engine] = predict_folds(ms, data, table, comp, cfg.get("tta"), engine)
                result[engine + "_s"] = time.perf_counter() - t0
            for engine in ("torch", "onnx"):
                total = features_s + result[engine + "_s"]
                per_core = audio_s / total / args.threads  # seconds of audio per second per core
                need = BUDGET["recordings"] * BUDGET["seconds_each"] / (per_core * BUDGET["cores"]) / 60
                rows.append({"experiment": exp, "engine": engine, "fold models": len(folds),
                             "features s": round(features_s, 1), "models s": round(result[engine + "_s"], 1),
                             "recordings/s": round(len(table) / total, 1),
                             "per core": round(len(table) / total / args.threads, 1),
                             "BirdCLEF budget min": round(need, 1),
                             "max |p diff|": float(np.abs(result["onnx"] - result["torch"]).max())})
    print(f"{len(table)} recordings ({audio_s:.0f} s of audio), {args.threads} threads per engine, "
          f"{torch.get_num_threads()} torch threads")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"BirdCLEF budget: minutes to predict {BUDGET['recordings']} x {BUDGET['seconds_each']:.0f} s of audio on "
          f"{BUDGET['cores']} cores at the measured seconds of audio per second per core (limit {BUDGET['minutes']})")


if __name__ == "__main__":
    main()
