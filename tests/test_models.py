import pytest
import torch

from lib.core.errors import ConfigError
from lib.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize("name,spec_shape,n_scalars,params", [
    ("cnn", [1, 64, 63], 0, (0.05e6, 0.5e6)),
    ("cnn8", [9, 128, 63], 36, (1.5e6, 2.9e6)),   # the seed's CNN8: 2.43 M with its own head
    ("vgg", [9, 128, 63], 36, (7.5e6, 8.8e6)),    # the seed's VGG: about 8.15 M
])
def test_forward_shapes_and_sizes(name, spec_shape, n_scalars, params):
    manifest = {"spec_shape": spec_shape, "n_scalars": n_scalars}
    model = build_model({"name": name, "params": {}}, manifest, n_outputs=3).eval()
    x, s = torch.randn(2, *spec_shape), torch.randn(2, n_scalars)
    out = model(x, s)
    assert out["logits"].shape == (2, 3) and out["embedding"].shape[0] == 2
    lo, hi = params
    assert lo < count_parameters(model) < hi


def test_normalisation_is_applied_and_saved():
    model = build_model({"name": "cnn", "params": {}}, {"spec_shape": [2, 16, 16], "n_scalars": 2}, 1).eval()
    x, s = torch.randn(4, 2, 16, 16), torch.randn(4, 2)
    before = model(x, s)["logits"]
    model.set_normalisation([10.0, -3.0], [2.0, 5.0], [1.0, 1.0], [3.0, 3.0])
    shifted = model(x * torch.tensor([2.0, 5.0]).view(1, 2, 1, 1) + torch.tensor([10.0, -3.0]).view(1, 2, 1, 1), s * 3 + 1)["logits"]
    torch.testing.assert_close(before, shifted, atol=1e-4, rtol=1e-4)
    assert "spec_mean" in model.state_dict() and "scalar_std" in model.state_dict()


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="known: cnn, cnn14, cnn8, esc_cnn4, .*; did you mean 'resnet'"):
        MODELS.get("resnt")


def test_cpu_precision_and_memory_format():
    """Training autocasts to bfloat16 on the CPU exactly when it computes bfloat16 natively;
    predictions stay float32; models and CPU batches are channels-last."""
    import numpy as np

    from lib.inputs import WindowData
    from lib.inference.predict import predict_logits
    from lib.core.device import autocast, cpu_bf16, place_model

    cpu = torch.device("cpu")
    model = build_model({"name": "cnn", "params": {"channels": [8, 16]}}, {"spec_shape": [1, 16, 20], "n_scalars": 0}, 2)
    forward = place_model(model, cpu)
    kernels = [p for p in model.parameters() if p.ndim == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    x = torch.randn(4, 1, 16, 20).contiguous(memory_format=torch.channels_last)
    with autocast(cpu):
        assert forward(x, torch.zeros(4, 0))["logits"].dtype == (torch.bfloat16 if cpu_bf16() else torch.float32)
    with autocast(cpu, enabled=False):
        assert forward(x, torch.zeros(4, 0))["logits"].dtype == torch.float32

    data = WindowData.__new__(WindowData)  # just what batch() reads
    data.spec, data.scalars = torch.randn(6, 1, 16, 20), torch.zeros(6, 0)
    data.use_scalars, data.meta = False, None
    spec, _ = data.batch(np.arange(4), cpu)
    assert spec.is_contiguous(memory_format=torch.channels_last)
    logits = predict_logits(model, data, np.arange(6), batch_size=4)[0]  # the one (unshifted) copy
    assert logits.dtype == torch.float32 and logits.shape == (6, 2)
    model.eval()
    with torch.no_grad():  # the float32 forward (up to batching); bfloat16 would differ by ~1e-3
        torch.testing.assert_close(logits, model(*data.batch(np.arange(6), cpu))["logits"], rtol=1e-5, atol=1e-6)


def test_a_waveform_model_refuses_inputs_that_are_not_a_batch_of_mono_waveforms():
    """A model with a front end took any input that was not 2-D as a finished spectrogram: one
    clip without its batch axis, or a stereo batch, gave logits without the front end, unsaid."""
    model = build_model({"name": "cnn", "params": {"channels": [4, 8], "convs_per_block": 1}},
                        {"sample_rate": 16000}, 1, 0, {"name": "log_mel", "params": {"n_mels": 16}}).eval()
    y = torch.randn(16000)
    with torch.no_grad():
        assert model(y[None])["logits"].shape == (1, 1)
        assert model(model.to_spec(y[None]))["logits"].shape == (1, 1)  # a finished spectrogram stack passes
        for bad in (y, torch.randn(1, 2, 16000)):
            with pytest.raises(ValueError, match=r"expected a waveform batch \(batch, samples\).*y\[None\]"):
                model(bad)


def test_cnn_head_hidden_takes_a_list_as_the_zoo_says():
    """zoo.md: head_hidden an int or a list of widths, [] one linear layer; cnn refused a list at load (probe)."""
    from conftest import ROOT

    from lib.components import load_experiment

    manifest = {"spec_shape": [1, 32, 31], "n_scalars": 0}
    for widths, linears in (([64, 32], 3), ([], 1)):
        cfg = load_experiment(ROOT / "configs/cnn_small.yaml", [f"model.params.head_hidden={widths}"])
        model = build_model(cfg["model"], manifest, n_outputs=3)
        assert sum(isinstance(m, torch.nn.Linear) for m in model.head.modules()) == linears
        assert model(torch.randn(2, 1, 32, 31), torch.zeros(2, 0))["logits"].shape == (2, 3)
