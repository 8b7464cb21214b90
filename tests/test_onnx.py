"""ONNX export of every network family: ONNX Runtime gives PyTorch's logits within ATOL, at another
batch size than the export's, front ends (STFT, mel, MFCC, PCEN) inside the graph."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt has it)")
pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx's exporter) is not installed")

from conftest import ROOT, stage  # noqa: E402

from lib.components import load_experiment
from lib.models import build_model  # noqa: E402
from lib.shipping.onnx_export import ATOL, OnnxModel, export_onnx, max_difference  # noqa: E402

SPEC = {"kind": "spectrogram", "spec_shape": [1, 64, 63], "n_scalars": 0, "sample_rate": 16000, "clip_seconds": 1.0,
        "hop_length": 256}
WAVE = {"kind": "waveform", "spec_shape": None, "n_scalars": 0, "sample_rate": 16000, "clip_seconds": 1.0,
        "hop_length": None}
CASES = {  # family: (experiment config, manifest, scalar inputs, overrides of the model section)
    "cnn": ("configs/cnn_small.yaml", SPEC, 0, {}),
    "cnn+scalars+attention": ("configs/cnn_small.yaml", SPEC, 5, {"pooling": "attention"}),
    "cnn8+seed9": ("configs/cnn8.yaml", dict(SPEC, spec_shape=[9, 128, 63]), 36, {}),
    "vgg": ("configs/vgg.yaml", dict(SPEC, spec_shape=[9, 128, 63]), 36, {}),
    "resnet": ("configs/zoo/resnet.yaml", SPEC, 0, {}),
    "mini_resnet": ("configs/zoo/mini_resnet.yaml", SPEC, 3, {}),
    "esc_cnn4": ("configs/zoo/esc_cnn4.yaml", SPEC, 0, {}),
    "esc_cnn8": ("configs/zoo/esc_cnn8.yaml", SPEC, 0, {}),
    "wavenet": ("configs/zoo/wavenet.yaml", SPEC, 0, {}),
    "timm efficientnet_b0": ("configs/zoo/efficientnet_b0.yaml", SPEC, 0, {}),
    "log_mel front end": ("configs/wave_cnn.yaml", WAVE, 0, {}),
    "mfcc front end": ("configs/wave_cnn.yaml", WAVE, 0, "mfcc"),
    "pcen front end": ("configs/wave_cnn.yaml", WAVE, 0, "pcen"),
    "cnn14 (its own PANNs front end)": ("configs/zoo/cnn14.yaml", dict(WAVE, sample_rate=16000), 0, {}),
}


def _model(case):
    path, manifest, n_scalars, extra = CASES[case]
    cfg = load_experiment(ROOT / path)
    frontend = cfg.get("frontend")
    if isinstance(extra, str):  # another front end of the waveform path
        frontend = {"name": extra, "params": {}}
    model_cfg = dict(cfg["model"], params={**(cfg["model"].get("params") or {}), **(extra if isinstance(extra, dict) else {})})
    torch.manual_seed(0)
    model = build_model(model_cfg, manifest, 1, n_scalars, frontend, pretrained=False).eval()
    with torch.no_grad():  # non-trivial normalisation statistics, as after training
        for name, buf in model.named_buffers():
            if name.endswith("mean") and buf.dtype.is_floating_point:
                buf.normal_(0, 0.5)
            elif name.endswith("std") and buf.dtype.is_floating_point:
                buf.uniform_(0.5, 2.0)
    return model, manifest, n_scalars


@pytest.mark.parametrize("case", list(CASES))
def test_every_family_exports_and_matches_pytorch(case, tmp_path):
    model, manifest, n_scalars = _model(case)
    diff = export_onnx(model, manifest, n_scalars, tmp_path / "m.onnx")
    assert diff <= ATOL and max_difference(model, tmp_path / "m.onnx", manifest, n_scalars, batch=1) <= ATOL
    onnx = OnnxModel(tmp_path / "m.onnx", model.n_outputs, threads=1)
    x = torch.randn(7, *(model_input := (manifest["sample_rate"],) if manifest["kind"] == "waveform"
                         else manifest["spec_shape"])) * 0.1
    out = onnx(x, torch.randn(7, n_scalars))["logits"]
    assert out.shape == (7, 1) and torch.isfinite(out).all() and len(model_input) in (1, 3)
    if case == "pcen front end":  # a front end that fixes its length (PCEN's smoother loops over the
        assert _input_dims(tmp_path / "m.onnx") == ["batch", 16000]  # export's 63 frames) keeps a fixed window


def test_a_bad_export_is_refused(tmp_path, monkeypatch):
    from lib.shipping import onnx_export

    model, manifest, n_scalars = _model("cnn")
    monkeypatch.setattr(onnx_export, "max_difference", lambda *a, **k: 1.0)  # as if the graph computed otherwise
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_onnx(model, manifest, n_scalars, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.iterdir())  # nothing half-kept
    np.testing.assert_equal(len(list(tmp_path.glob("*.tmp*"))), 0)


# --- the waveform front end in the graph: STFT as matrix products, dynamic window, real clips ---

def _audio(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    """``(n, samples)`` generated 16-kHz audio: a linear chirp (random band in 100-6000 Hz) in
    pink noise 10-30 dB below it, at a random gain of -30 to 0 dB (quiet bands, as real clips have)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    out = []
    for _ in range(n):
        f0, f1 = np.sort(rng.uniform(100, 6000, 2))
        chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))
        spectrum = np.fft.rfft(rng.standard_normal(samples)) / np.sqrt(np.arange(samples // 2 + 1) + 1.0)
        pink = np.fft.irfft(spectrum, samples)
        pink *= 10 ** (-rng.uniform(10, 30) / 20) * chirp.std() / pink.std()
        out.append(10 ** (-rng.uniform(0, 30) / 20) * 0.5 * (chirp + pink))
    return torch.tensor(np.stack(out), dtype=torch.float32)


@pytest.mark.parametrize("params", [
    {},  # wave_cnn's: n_fft 512 = 2 x hop 256 (frames from a reshape)
    {"n_fft": 256, "hop_length": 80},  # frames gathered
    {"n_fft": 256, "hop_length": 40, "fmin": 20, "fmax": 2000, "n_mels": 16},  # most bins unused by the filterbank
    {"n_fft": 1024, "hop_length": 320, "fmin": 50, "fmax": 14000, "pad_mode": "reflect"},  # PANNs' front end
    {"n_fft": 255, "hop_length": 100},  # odd n_fft: no radix-2 step
    {"power": 1.0},  # magnitude
])
def test_matmul_stft_gives_torch_stft_mel(params):
    from lib.models.frontend import LogMelFrontEnd

    ref = LogMelFrontEnd(32000 if params.get("n_fft") == 1024 else 16000, **params).eval()
    fe = LogMelFrontEnd(32000 if params.get("n_fft") == 1024 else 16000, **params).eval()
    fe.use_matmul_stft()
    for samples in (16000, 23457):
        x = _audio(3, samples)
        with torch.no_grad():
            a, b = ref.mel(x), fe.mel(x)
        frames = 1 + (samples + 2 * (ref.n_fft // 2) - ref.n_fft) // ref.hop_length  # torch.stft's, centred
        assert a.shape == b.shape == (3, ref.mel_basis.shape[0], frames)
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())  # float32 rounding: measured 2e-7 to 7e-7
    assert fe.state_dict().keys() == ref.state_dict().keys()  # the bases are not in checkpoints


def _input_dims(path) -> list:
    import onnx

    return [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]


def _differences(model, path, x) -> tuple[float, float]:
    """Largest |probability| (sigmoid) and |logit| differences of the graph at ``path`` from ``model`` on ``x``."""
    with torch.no_grad():
        ref = model(x)["logits"]
    out = OnnxModel(path, model.n_outputs, threads=2)(x, torch.zeros(len(x), 0))["logits"]
    return float((torch.sigmoid(out) - torch.sigmoid(ref)).abs().max()), float((out - ref).abs().max())


def test_wave_cnn_graph_has_a_dynamic_window_and_no_stft(tmp_path):
    import onnx

    model, manifest, _ = _model("log_mel front end")
    export_onnx(model, manifest, 0, tmp_path / "m.onnx")
    assert _input_dims(tmp_path / "m.onnx") == ["batch", "samples"]
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert "STFT" not in {n.op_type for n in graph.node}
    pools = [n for n in graph.node if n.op_type == "AveragePool"]
    assert pools and all(a.i == 0 for n in pools for a in n.attribute if a.name == "ceil_mode")
    for samples in (16000, 40037):  # 1 s (63 frames) and about 2.5 s (157 frames: odd widths in every pooling)
        p_diff, logit_diff = _differences(model, tmp_path / "m.onnx", _audio(6, samples, seed=samples))
        assert logit_diff <= ATOL and p_diff <= ATOL / 4, (samples, p_diff, logit_diff)


def test_wave_cnn_matches_pytorch_on_real_clips(tmp_path):
    from conftest import BREATHING
    from lib.data.audio import fix_length, load

    files = sorted((BREATHING / "train").glob("*.wav"))[:24]
    if not files:
        pytest.skip(f"real-data folder {BREATHING / 'train'} is absent: the check on real breathing clips is skipped")
    x = torch.tensor(np.stack([fix_length(load(f, 16000)[0], 16000) for f in files]))
    model, manifest, _ = _model("log_mel front end")
    with torch.no_grad():  # per-band statistics of these clips, as training sets them
        spec = model.frontend.transform(x)
        model.frontend.set_normalisation(spec.mean(dim=(0, 3))[..., None], spec.std(dim=(0, 3))[..., None])
    export_onnx(model, manifest, 0, tmp_path / "m.onnx")
    p_diff, logit_diff = _differences(model, tmp_path / "m.onnx", x)
    assert logit_diff <= ATOL and p_diff <= ATOL / 4, (p_diff, logit_diff)


def test_onnx_benchmark_refuses_a_config_at_another_rate_before_timing():
    """bench/onnx.py built every model for its 16-kHz clips: wave_long (2 kHz) was timed at the
    wrong rate and its export check failed with a traceback; now one line before any work."""
    r = stage("bench/onnx.py", "--models", "configs/cnn_small.yaml", "configs/wave_long.yaml", "--clips", "4",
              check=False)
    assert r.returncode == 2 and "configs/wave_long.yaml: its features run at 2000 Hz" in r.stderr
    assert "samples/s" not in r.stdout
