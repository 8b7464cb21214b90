"""ONNX export of fold models and ONNX Runtime inference (CPU notebooks with a time limit).

:func:`export_onnx` writes a fold model as an ONNX graph ``(x, scalars) -> logits`` with a
dynamic batch size, exported by ``torch.onnx.export(dynamo=True)`` (opset 18); a model that
computes its spectrogram from the waveform keeps its front end inside the graph (the STFT, the
mel filterbank, the dB scale and the normalisation are ONNX operators). The window length (the
time axis: samples of a waveform, frames of a spectrogram) is dynamic too where the model allows
it (a trunk that pools over time: every :class:`lib.models.base.AudioClassifier`), fixed where the
export specialises it (e.g. ``pcen``'s loop over frames). The export is checked against PyTorch
on random inputs (at a second window length when it is dynamic) before it is kept (:data:`ATOL`).
:class:`OnnxModel` runs such a graph with ONNX Runtime behind the interface of
:class:`lib.models.base.AudioClassifier` (``model(x, scalars)["logits"]``), so
:func:`lib.inference.predict.predict_recordings` uses it unchanged. The scikit-learn members
(``hgb``, ``logreg``) are not networks and stay as they are.

What makes the graph fast in ONNX Runtime (measured: bench/README.md, ``onnx.py``): the front
end's STFT as matrix products with a fixed DFT basis (:meth:`lib.models.frontend._MelFrontEnd.use_matmul_stft`;
ONNX Runtime's ``STFT`` operator was 28 % of ``wave_cnn``'s time), and ``ceil_mode`` pooling
rewritten as its equivalent with end padding (:func:`_pools_without_ceil`), which ONNX Runtime's
blocked-layout (NCHWc) optimiser accepts, so the feature maps no longer leave that layout around
every pooling. The PyTorch model itself is not changed (a copy is exported).
"""
from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.utils import atomic_path

ATOL = 1e-4
"""Largest accepted |logit difference| between the ONNX graph and the PyTorch model (float32)."""


class Logits(torch.nn.Module):
    """A fold model seen as ONNX exports it: ``forward(x, scalars)`` returns only the model's
    ``"logits"`` ``(batch, n_outputs)`` for ``x`` (a waveform ``(batch, samples)`` or a spectrogram
    ``(batch, C, F, T)``) and ``scalars (batch, n_scalars)``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, scalars):
        return self.model(x, scalars)["logits"]


def example_inputs(manifest: dict, n_scalars: int, batch: int = 2, seed: int = 0,
                   length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random model inputs of the shapes a fold model takes: ``x`` a waveform window ``(batch,
    samples)`` (``kind: waveform`` feature sets) or a spectrogram ``(batch, C, F, T)``, and
    ``scalars (batch, n_scalars)``. ``length``: the time axis (samples or frames) if not the
    manifest's."""
    g = torch.Generator().manual_seed(seed)
    if manifest.get("kind") == "waveform":
        shape = (batch, length or int(round(manifest["clip_seconds"] * manifest["sample_rate"])))
    else:
        shape = (batch, *manifest["spec_shape"][:-1], length or manifest["spec_shape"][-1])
    return 0.1 * torch.randn(shape, generator=g), torch.randn(batch, n_scalars, generator=g)


def _time_axis(manifest: dict) -> int:
    """The time axis of a model input: 1 of a waveform ``(batch, samples)``, 3 of a spectrogram ``(batch, C, F, T)``."""
    return 1 if manifest.get("kind") == "waveform" else 3


def _other_length(manifest: dict) -> int:
    """A second window length for the check of a dynamic time axis: 1.37 times the manifest's,
    plus 7 (not a multiple of a hop)."""
    n = example_inputs(manifest, 0, batch=1)[0].shape[_time_axis(manifest)]
    return int(1.37 * n) + 7


def export_onnx(model: torch.nn.Module, manifest: dict, n_scalars: int, path: str | Path) -> float:
    """Export ``model`` (eval mode, CPU, float32) to ``path`` and check it: returns the largest
    |logit difference| from PyTorch on random inputs of another batch size than the export's
    and, when the graph's time axis is dynamic, also at a second window length
    (:func:`_other_length`). A model whose dynamic graph fails there (``pcen`` unrolls its loop
    over frames for the export's length) is exported again with a fixed window. A copy of
    ``model`` is exported, with its front end's STFT as matrix products and its ``ceil_mode``
    poolings rewritten (module docstring); ``model`` is left as it is. Raises ``RuntimeError``
    when the difference exceeds :data:`ATOL` (nothing is kept then)."""
    model = model.float().cpu().eval()
    graph_model = copy.deepcopy(model)
    for m in graph_model.modules():
        if hasattr(m, "use_matmul_stft"):
            m.use_matmul_stft()
    x, scalars = example_inputs(manifest, n_scalars)
    with atomic_path(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        other = 0.0
        if _export(graph_model, x, scalars, _time_axis(manifest), True, tmp):
            try:
                other = max_difference(model, tmp, manifest, n_scalars, length=_other_length(manifest))
            except Exception:  # ONNX Runtime's own error types: shapes the graph fixed for the export's length
                other = float("inf")
            if not other <= ATOL:
                _export(graph_model, x, scalars, _time_axis(manifest), False, tmp)
                other = 0.0
        diff = max(max_difference(model, tmp, manifest, n_scalars), other)
        if not diff <= ATOL:
            raise RuntimeError(f"ONNX export of {type(model).__name__} differs from PyTorch by {diff:.2e} > {ATOL}")
    return diff


def _export(model: torch.nn.Module, x: torch.Tensor, scalars: torch.Tensor, time_axis: int, dynamic_time: bool,
            path: Path) -> bool:
    """Export ``model`` at the example inputs to ``path``, batch dynamic, the time axis dynamic
    where ``dynamic_time`` and the model allow it (``Dim.AUTO``: static where the export
    specialises it); ``ceil_mode`` poolings rewritten (:func:`_pools_without_ceil`). Returns
    whether the graph's time axis is dynamic (named ``samples`` or ``frames``)."""
    import onnx

    batch = torch.export.Dim("batch", min=1)
    time = torch.export.Dim.AUTO if dynamic_time else torch.export.Dim.STATIC
    program = torch.onnx.export(Logits(model).eval(), (x, scalars), input_names=["x", "scalars"],
                                output_names=["logits"], dynamic_shapes=({0: batch, time_axis: time}, {0: batch}),
                                dynamo=True, opset_version=18)
    length = program.model.graph.inputs[0].shape[time_axis]
    if not isinstance(length, int):
        program.rename_axes({length: "samples" if time_axis == 1 else "frames"})
    onnx.save_model(_pools_without_ceil(program.model_proto), str(path))  # weights inside: one file
    return not isinstance(length, int)


def _pools_without_ceil(proto):
    """Rewrite every ``AveragePool``/``MaxPool`` with ``ceil_mode=1``, no padding and kernel equal
    to stride (PyTorch's ``AvgPool2d(2, ceil_mode=True)``) as ``ceil_mode=0`` with ``stride - 1``
    padding at the end of each spatial axis, and for ``AveragePool`` ``count_include_pad=0``.
    Same output size (``ceil((n - k) / s) + 1 == floor((n + s - 1 - k) / s) + 1``) and the same
    values for every input size: a window that reaches past the input averages (or takes the
    maximum of) its elements inside it, as PyTorch's ``ceil_mode`` does with ``padding=0``.
    ONNX Runtime 1.32 runs the rewritten form in its blocked layout (NCHWc) and the
    ``ceil_mode=1`` form only in plain NCHW, with a reorder before and after (measured: the four
    poolings and reorders of ``wave_cnn`` took 13-15 % of its time, 3-4 % after). Returns ``proto``,
    changed in place."""
    import onnx

    for node in proto.graph.node:
        if node.op_type not in ("AveragePool", "MaxPool"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel, strides = list(attrs["kernel_shape"]), list(attrs.get("strides", []))
        if (not attrs.get("ceil_mode") or kernel != strides or any(attrs.get("pads", []))
                or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" or any(d != 1 for d in attrs.get("dilations", []))):
            continue
        attrs.update(ceil_mode=0, pads=[0] * len(kernel) + [s - 1 for s in strides])
        if node.op_type == "AveragePool":
            attrs["count_include_pad"] = 0
        del node.attribute[:]
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in sorted(attrs.items()))
    return proto


def max_difference(model: torch.nn.Module, path: str | Path, manifest: dict, n_scalars: int, batch: int = 5,
                   length: int | None = None) -> float:
    """Largest |logit difference| between ``model`` and the ONNX graph at ``path`` on random inputs
    (time axis ``length``, default the manifest's: :func:`example_inputs`). Raises ONNX Runtime's
    errors for inputs the graph cannot take (a window length it fixed)."""
    x, scalars = example_inputs(manifest, n_scalars, batch=batch, seed=1, length=length)
    with torch.no_grad():
        ref = model(x, scalars)["logits"].float().numpy()
    out = OnnxModel(path, model.n_outputs, quiet=True)(x, scalars)["logits"].numpy()
    return float(np.abs(out - ref).max())


class OnnxModel(torch.nn.Module):
    """An ONNX graph of :func:`export_onnx` run by ONNX Runtime (CPU), called like a fold model:
    ``model(x, scalars) -> {"logits": (batch, n_outputs)}`` (float32 on the CPU). ``threads``:
    ONNX Runtime's intra-op threads (``None``: its default, every core). ``quiet``: ONNX Runtime
    logs nothing (its errors still raise)."""

    def __init__(self, path: str | Path, n_outputs: int, threads: int | None = None, quiet: bool = False):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # (its default)
        if threads:
            options.intra_op_num_threads = threads
        if quiet:
            options.log_severity_level = 4  # fatal only
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.n_outputs = n_outputs
        self.register_buffer("_device", torch.zeros(0))  # predict_logits reads the device from a buffer

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        feed = {"x": x.float().cpu().numpy(),
                "scalars": (scalars if scalars is not None else torch.zeros(len(x), 0)).float().cpu().numpy()}
        return {"logits": torch.from_numpy(self.session.run(None, {k: feed[k] for k in self.inputs})[0])}
