#!/usr/bin/env python3
"""Prediction speed: PyTorch eager against ONNX Runtime, per model or per bundle.

    python bench/onnx.py [--models CFG ...] [--data-dir ../shared/data/breathing] [--clips 512] [--threads 2]
                         [--batch 256] [--repeats 5] [--profile] [--int8] [--weights FOLD.pt]
    python bench/onnx.py BUNDLE --data-dir ../shared/data/breathing [--recordings 600] [--threads 2]

Without BUNDLE (models; default ``configs/wave_cnn.yaml configs/cnn_small.yaml``): each
experiment's network with fresh weights (seed 0; speed does not depend on them) and input
statistics from the clips, on N 1-s clips: the audio files found under ``--data-dir`` (sorted,
at 16 kHz) or, without it, generated audio (chirps in pink noise). A waveform model takes the
clips; a cached-feature model their features (the experiment's feature set, computed once, not
timed). Three engines predict every clip in batches of ``--batch`` (256, as
:func:`lib.inference.predict.predict_logits`), each with ``--threads`` threads, the engines taking
turns within each of ``--repeats`` rounds (median time): PyTorch eager (float32,
``torch.set_num_threads``), ``onnx plain`` (the model as ``torch.onnx.export`` writes it: ONNX's
``STFT`` operator, ``ceil_mode`` poolings, a fixed window; the export of before) and ``onnx``
(:func:`lib.shipping.onnx_export.export_onnx`). Prints samples/s, the speed-up over eager and the
largest |probability| and |logit| differences from eager (sigmoid or softmax of the logits) and
the share of decisions (p > 0.5, or the most probable class) that differ; ``--int8`` adds the
export with its convolutions quantised to int8 (:func:`_int8`; measured, not shipped),
``--weights FOLD.pt`` predicts with a trained fold model of the one ``--models`` config instead of
fresh weights (what quantisation does to a trained model's probabilities); ``--profile`` adds ONNX Runtime's time per operator type for each graph (its profiler, one
batch, after the timing).

With BUNDLE (made by ``05_bundle.py --onnx``): for each experiment of the bundle the test
features of the first N recordings are computed once as ``predict_bundle.py`` does (stage 01's
code, into a temporary folder; timed apart), then every fold model predicts every window of them
with the experiment's test-time augmentation: PyTorch eager (float32,
``torch.set_num_threads(threads)``) and the bundle's ONNX graphs with ONNX Runtime
(``intra_op_num_threads = threads``). Prints recordings per second and per CPU core, the models'
speed-up, the largest difference of the two engines' recording probabilities, and what fits in a
BirdCLEF-style budget: 600 one-minute recordings in 90 minutes on 4 CPU cores, from the seconds
of audio each engine predicts per second per core (features included). Nothing is written
outside the temporary folder.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/: this file would shadow `onnx`
from lib.core.utils import keep_freed_memory, load_tensors_only
from lib.core.paths import Outputs
from lib.data.prepare import prepare_test
from lib.inputs import load_inputs
from lib.features.cache import build_feature_set
from lib.inference.infer import load_checkpoints, predict_folds
from lib.shipping.bundle import load_bundle, member_config
from lib.components import load_experiment
from lib.data.audio import fix_length, load
from lib.features import FEATURES
from lib.models import build_model
from lib.shipping.onnx_export import OnnxModel, export_onnx

BUDGET = {"recordings": 600, "seconds_each": 60.0, "minutes": 90, "cores": 4}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="a bundle of 05_bundle.py --onnx (default: the --models)")
    p.add_argument("--data-dir", help="the competition folder: its test audio (BUNDLE, required) or its audio "
                                      "files (models; default: generated audio)")
    p.add_argument("--recordings", type=int, default=600,
                   help="BUNDLE: test recordings to predict (default: %(default)s)")
    p.add_argument("--models", nargs="+", default=["configs/wave_cnn.yaml", "configs/cnn_small.yaml"],
                   help="experiment configs to time without a bundle (default: %(default)s)")
    p.add_argument("--clips", type=int, default=512, help="models: 1-s clips to predict (default: %(default)s)")
    p.add_argument("--batch", type=int, default=256, help="models: batch size (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="models: timed rounds, median taken (default: %(default)s)")
    p.add_argument("--profile", action="store_true", help="models: ONNX Runtime's time per operator type")
    p.add_argument("--int8", action="store_true", help="models: also the export quantised to int8 (static, "
                                                         "calibrated on the first 256 clips; not shipped)")
    p.add_argument("--weights", help="models: a fold checkpoint (fold<k>.pt) of the (one) --models config to "
                                     "load instead of fresh weights")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for each engine (default: %(default)s)")
    args = p.parse_args()
    if (args.weights or args.int8) and args.bundle:
        p.error("--weights and --int8 apply to the models mode, not to a BUNDLE")
    if args.weights and len(args.models) != 1:
        p.error("--weights loads one fold checkpoint: give exactly one --models config")
    keep_freed_memory()  # as every stage runs (lib.cli.run)
    torch.set_num_threads(args.threads)
    if args.bundle is None:
        bench_models(args)
        return
    if args.data_dir is None:
        p.error("a BUNDLE needs --data-dir (the competition folder with the test audio)")
    bundle = Path(args.bundle)
    manifest, comp, _ = load_bundle(bundle)
    comp["data_dir"] = str(Path(args.data_dir).resolve())
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
            cfg = member_config(bundle, manifest, exp)
            folds = manifest["folds"][exp]
            if not folds:
                print(f"{exp}: weight 0 in the blend, no fold models in the bundle; skipped")
                continue
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
                             "models x torch": round(result["torch_s"] / result[engine + "_s"], 2),
                             "max |p diff|": float(np.abs(result["onnx"] - result["torch"]).max())})
    print(f"{len(table)} recordings ({audio_s:.0f} s of audio), {args.threads} threads per engine, "
          f"{torch.get_num_threads()} torch threads")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"BirdCLEF budget: minutes to predict {BUDGET['recordings']} x {BUDGET['seconds_each']:.0f} s of audio on "
          f"{BUDGET['cores']} cores at the measured seconds of audio per second per core (limit {BUDGET['minutes']})")


SAMPLE_RATE = 16000


def clips(data_dir: str | None, n: int, seconds: float = 1.0, seed: int = 0) -> tuple[np.ndarray, str]:
    """``(n, seconds * 16000)`` float32 clips and where they came from: the first ``n`` audio files
    (``.wav``, ``.flac``, ``.ogg``; sorted paths) under ``data_dir`` at 16 kHz, each cut or
    zero-padded to ``seconds``; without ``data_dir`` (or files in it), generated audio: a linear
    chirp (random band within 100-6000 Hz) in pink noise (random level, 10-30 dB below it) at a
    random gain (-30 to 0 dB)."""
    samples = int(round(seconds * SAMPLE_RATE))
    files = sorted(f for ext in ("wav", "flac", "ogg") for f in Path(data_dir).rglob(f"*.{ext}")) if data_dir else []
    if files:
        audio = np.stack([fix_length(load(f, SAMPLE_RATE)[0], samples) for f in files[:n]])
        return audio, f"{len(audio)} files of {data_dir}"
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    out = []
    for _ in range(n):
        f0, f1 = np.sort(rng.uniform(100, 6000, 2))
        chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
        spectrum = np.fft.rfft(rng.standard_normal(samples)) / np.sqrt(np.arange(samples // 2 + 1) + 1.0)
        pink = np.fft.irfft(spectrum, samples)
        pink *= 10 ** (-rng.uniform(10, 30) / 20) / pink.std() * chirp.std()
        out.append(10 ** (-rng.uniform(0, 30) / 20) * 0.5 * (chirp + pink))
    return np.stack(out).astype(np.float32), "generated audio (chirps in pink noise)"


def _model_and_inputs(cfg: dict, audio: np.ndarray) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """The experiment's network (fresh weights, seed 0, eval mode) with input statistics from
    ``audio``, its manifest, and its inputs: the clips, or their features."""
    if cfg["features"]["name"] == "waveform":
        manifest = {"kind": "waveform", "spec_shape": None, "n_scalars": 0, "sample_rate": SAMPLE_RATE,
                    "clip_seconds": audio.shape[1] / SAMPLE_RATE, "hop_length": None}
        x = torch.from_numpy(audio)
    else:
        feature = FEATURES.build(cfg["features"])
        x = torch.from_numpy(np.stack([feature(y, SAMPLE_RATE)[0] for y in audio]).astype(np.float32))
        manifest = {"kind": "spectrogram", "spec_shape": list(x.shape[1:]), "n_scalars": 0, "sample_rate": SAMPLE_RATE,
                    "clip_seconds": audio.shape[1] / SAMPLE_RATE, "hop_length": feature.hop_length}
    torch.manual_seed(0)
    model = build_model(cfg["model"], manifest, 1, 0, cfg.get("frontend"), pretrained=False).eval()
    with torch.no_grad():
        if model.frontend is not None:  # per band, as training sets them (lib.training.loop)
            spec = model.frontend.transform(x)
            mean, std = spec.mean(dim=(0, 3))[..., None], spec.std(dim=(0, 3))[..., None]
            model.frontend.set_normalisation(mean, std.clamp_min(1e-6))
        elif x.dim() == 4:
            model.set_normalisation(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))
    return model, manifest, x


def _plain_export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """``model`` as ``torch.onnx.export(dynamo=True)`` writes it (the export of before
    :func:`export_onnx`'s changes): batch dynamic, window fixed, ``torch.stft`` as ONNX's ``STFT``."""
    from lib.shipping.onnx_export import Logits

    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model).eval(), (x[:2], torch.zeros(2, 0)), str(path), input_names=["x", "scalars"],
                          output_names=["logits"], dynamic_shapes=({0: batch}, {0: batch}), dynamo=True,
                          opset_version=18, external_data=False)


def _probs(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _decisions(logits: np.ndarray) -> np.ndarray:
    """p > 0.5 for one output, the most probable class for several."""
    return logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(1)


def _int8(path: Path, calibration: torch.Tensor, dest: Path) -> None:
    """The graph at ``path`` with its convolutions (and their ReLUs) in int8, written to ``dest``:
    ONNX Runtime's static quantisation (QDQ format, per-channel int8 weights, uint8 activations
    with min-max ranges over ``calibration`` inputs in batches of 32). Everything before the second
    convolution stays float32: the front end's STFT, filterbank and dB (8 bits cannot hold the
    waveform's dynamic range) and the first convolution (in int8 too it changed more decisions,
    0.59% against 0.39%, for no measured speed)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": b.numpy(), "scalars": np.zeros((len(b), 0), np.float32)}
                                 for b in calibration.split(32)])

        def get_next(self):
            return next(self.batches, None)

    pre = dest.with_suffix(".pre.onnx")
    quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
    graph = onnx.load(str(pre)).graph
    nodes = [n.name for op in ("Conv", "Relu") for n in [n for n in graph.node if n.op_type == op][1:]]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(pre), str(dest), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                        op_types_to_quantize=["Conv", "Relu"])


def _op_profile(path: Path, x: torch.Tensor, threads: int, top: int = 8) -> str:
    """ONNX Runtime's kernel time per operator type on one batch ``x`` (its profiler; after a
    warm-up run): the total in ms and the largest shares."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy(), "scalars": np.zeros((len(x), 0), np.float32)}
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    for _ in range(2):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 2 / 1000  # ms per run
    total = sum(per_op.values())
    shares = ", ".join(f"{op} {100 * ms / total:.0f}%" for op, ms in per_op.most_common(top))
    return f"{total:.0f} ms per batch: {shares}"


def bench_models(args) -> None:
    """The models mode (module docstring): prints one row per experiment and engine. Exits with
    status 2 and a message, before any timing, for a config whose feature set runs at another
    rate than the clips' 16 kHz (wave_long at 2 kHz, cnn14 at 32 kHz: time their bundle)."""
    for config in args.models:
        rate = (load_experiment(config)["features"].get("params") or {}).get("sample_rate")
        if rate not in (None, SAMPLE_RATE):
            print(f"bench/onnx.py: {config}: its features run at {rate} Hz, these clips at {SAMPLE_RATE} Hz; time "
                  f"its bundle on its own data instead (bench/onnx.py BUNDLE --data-dir DIR)", file=sys.stderr)
            sys.exit(2)
    audio, source = clips(args.data_dir, args.clips)
    rows, profiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.models:
            cfg = load_experiment(config)
            exp = Path(config).stem
            model, manifest, x = _model_and_inputs(cfg, audio)
            if args.weights:
                try:
                    model.load_state_dict(load_tensors_only(args.weights)["state_dict"])
                except (KeyError, RuntimeError) as exc:  # another config, outputs or scalars than this bench builds
                    sys.exit(f"bench/onnx.py: --weights {args.weights} does not fit {config} with one output and "
                             f"no scalars ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            _plain_export(model, x, Path(tmp) / f"{exp}.plain.onnx")
            export_onnx(model, manifest, 0, Path(tmp) / f"{exp}.onnx")
            graphs = [("onnx plain", f"{exp}.plain.onnx"), ("onnx", f"{exp}.onnx")]
            if args.int8:
                _int8(Path(tmp) / f"{exp}.onnx", x[:256], Path(tmp) / f"{exp}.int8.onnx")
                graphs.append(("onnx int8", f"{exp}.int8.onnx"))
            engines = {"torch": model}
            for name, file in graphs:
                engines[name] = OnnxModel(Path(tmp) / file, model.n_outputs, args.threads)
            batches = [x[i:i + args.batch] for i in range(0, len(x), args.batch)]
            scalars = [torch.zeros(len(b), 0) for b in batches]

            def predict(engine):
                with torch.no_grad():
                    return torch.cat([engine(b, s)["logits"].float() for b, s in zip(batches, scalars)]).numpy()

            logits = {name: predict(engine) for name, engine in engines.items()}  # also the warm-up
            seconds = {name: [] for name in engines}
            for _ in range(args.repeats):
                for name, engine in engines.items():
                    t0 = time.perf_counter()
                    predict(engine)
                    seconds[name].append(time.perf_counter() - t0)
            eager = float(np.median(seconds["torch"]))
            for name in engines:
                s = float(np.median(seconds[name]))
                rows.append({"experiment": exp, "engine": name, "samples/s": round(len(x) / s, 1),
                             "per core": round(len(x) / s / args.threads, 1), "x torch": round(eager / s, 2),
                             "spread %": round(100 * (max(seconds[name]) - min(seconds[name])) / s),
                             "max |p diff|": float(np.abs(_probs(logits[name]) - _probs(logits["torch"])).max()),
                             "decisions changed %": round(100 * float(np.mean(
                                 _decisions(logits[name]) != _decisions(logits["torch"]))), 2),
                             "max |logit diff|": float(np.abs(logits[name] - logits["torch"]).max())})
            if args.profile:
                for name, file in graphs:
                    profiles.append(f"{exp} {name}: " + _op_profile(Path(tmp) / file, batches[0], args.threads))
    print(f"{len(audio)} clips ({source}), batches of {args.batch}, {args.threads} threads per engine, median of "
          f"{args.repeats} rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; torch "
          f"{torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}; "
          f"{'weights of ' + args.weights if args.weights else 'fresh weights (seed 0)'}")
    print(pd.DataFrame(rows).to_string(index=False))
    for line in profiles:
        print(line)


if __name__ == "__main__":
    main()
