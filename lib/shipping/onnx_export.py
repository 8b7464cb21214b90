"""ONNX export of fold models and ONNX Runtime inference (CPU notebooks with a time limit).

:func:`export_onnx` writes a fold model as an ONNX graph ``(x, scalars) -> logits`` with a
dynamic batch size, exported by ``torch.onnx.export(dynamo=True)`` (opset 18); a model that
computes its spectrogram from the waveform keeps its front end inside the graph (the STFT, the
mel filterbank, the dB scale and the normalisation are ONNX operators). The window length is
fixed, as the pipeline predicts fixed windows. The export is checked against PyTorch on random
inputs before it is kept (:data:`ATOL`). :class:`OnnxModel` runs such a graph with ONNX Runtime
behind the interface of :class:`lib.models.base.AudioClassifier` (``model(x, scalars)["logits"]``),
so :func:`lib.inference.predict.predict_recordings` uses it unchanged. The scikit-learn members
(``hgb``, ``logreg``) are not networks and stay as they are.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.utils import atomic_path

ATOL = 1e-4
"""Largest accepted |logit difference| between the ONNX graph and the PyTorch model (float32)."""


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, scalars):
        return self.model(x, scalars)["logits"]


def example_inputs(manifest: dict, n_scalars: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random model inputs of the shapes a fold model takes: ``x`` a waveform window ``(batch,
    samples)`` (``kind: waveform`` feature sets) or a spectrogram ``(batch, C, F, T)``, and
    ``scalars (batch, n_scalars)``."""
    g = torch.Generator().manual_seed(seed)
    if manifest.get("kind") == "waveform":
        shape = (batch, int(round(manifest["clip_seconds"] * manifest["sample_rate"])))
    else:
        shape = (batch, *manifest["spec_shape"])
    return 0.1 * torch.randn(shape, generator=g), torch.randn(batch, n_scalars, generator=g)


def export_onnx(model: torch.nn.Module, manifest: dict, n_scalars: int, path: str | Path) -> float:
    """Export ``model`` (eval mode, CPU, float32) to ``path`` and check it: returns the largest
    |logit difference| from PyTorch on random inputs of another batch size than the export's.
    Raises ``RuntimeError`` when it exceeds :data:`ATOL` (nothing is kept then)."""
    model = model.float().cpu().eval()
    x, scalars = example_inputs(manifest, n_scalars)
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(model).eval(), (x, scalars), str(tmp), input_names=["x", "scalars"],
                          output_names=["logits"], dynamic_shapes=({0: batch}, {0: batch}), dynamo=True,
                          opset_version=18, external_data=False)
        diff = max_difference(model, tmp, manifest, n_scalars)
        if not diff <= ATOL:
            raise RuntimeError(f"ONNX export of {type(model).__name__} differs from PyTorch by {diff:.2e} > {ATOL}")
    return diff


def max_difference(model: torch.nn.Module, path: str | Path, manifest: dict, n_scalars: int, batch: int = 5) -> float:
    """Largest |logit difference| between ``model`` and the ONNX graph at ``path`` on random inputs."""
    x, scalars = example_inputs(manifest, n_scalars, batch=batch, seed=1)
    with torch.no_grad():
        ref = model(x, scalars)["logits"].float().numpy()
    out = OnnxModel(path, model.n_outputs)(x, scalars)["logits"].numpy()
    return float(np.abs(out - ref).max())


class OnnxModel(torch.nn.Module):
    """An ONNX graph of :func:`export_onnx` run by ONNX Runtime (CPU), called like a fold model:
    ``model(x, scalars) -> {"logits": (batch, n_outputs)}`` (float32 on the CPU). ``threads``:
    ONNX Runtime's intra-op threads (``None``: its default, every core)."""

    def __init__(self, path: str | Path, n_outputs: int, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.n_outputs = n_outputs
        self.register_buffer("_device", torch.zeros(0))  # predict_logits reads the device from a buffer

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feed = {"x": x.float().cpu().numpy(),
                "scalars": (scalars if scalars is not None else torch.zeros(len(x), 0)).float().cpu().numpy()}
        return {"logits": torch.from_numpy(self.session.run(None, {k: feed[k] for k in self.inputs})[0])}
