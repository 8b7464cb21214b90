"""ONNX export of every network family: ONNX Runtime gives PyTorch's logits within ATOL, at another
batch size than the export's, front ends (STFT, mel, MFCC, PCEN) inside the graph."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt has it)")
pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx's exporter) is not installed")

from conftest import ROOT  # noqa: E402

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


def test_a_bad_export_is_refused(tmp_path, monkeypatch):
    from lib.shipping import onnx_export

    model, manifest, n_scalars = _model("cnn")
    monkeypatch.setattr(onnx_export, "max_difference", lambda *a, **k: 1.0)  # as if the graph computed otherwise
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_onnx(model, manifest, n_scalars, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.iterdir())  # nothing half-kept
    np.testing.assert_equal(len(list(tmp_path.glob("*.tmp*"))), 0)
