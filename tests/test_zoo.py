"""The model families of issue 11: shapes for several inputs, a step that lowers the loss, CNN14
with PANNs' names, front end and checkpoint format, timm from a local weights file."""
import librosa
import numpy as np
import pytest
import torch

from lib.core.errors import ConfigError
from lib.models import build_model, count_parameters
from lib.models.panns import VARIANTS
from lib.training.optim import build_optimizer

FAMILIES = [  # (name, params): small widths, so that the test is fast
    ("esc_cnn4", {"channels": [8, 16, 16, 32]}),
    ("esc_cnn8", {"channels": [8, 16, 16, 32]}),
    ("resnet", {"widths": [8, 16, 16, 32]}),
    ("resnet", {"depth": 34, "widths": [8, 8, 16], "stem_stride": 1}),
    ("mini_resnet", {"widths": [16, 24], "stem_channels": 8}),
    ("wavenet", {"blocks": 1, "layers": 3, "channels": 16, "skip_channels": 16}),
    ("wavenet", {"blocks": 3, "layers": 2, "channels": 8, "skip_channels": 8, "causal": True, "pooling": "attention"}),
    ("timm", {"arch": "mobilenetv2_050"}),
    ("timm", {"arch": "resnet10t", "pooling": "gem"}),
]


TESTED_ELSEWHERE = {  # families with tests of their own, where they need other inputs or weights
    "cnn": "test_models.py", "cnn8": "test_models.py", "vgg": "test_models.py", "cnn14": "the CNN14 tests below",
    "hgb": "test_safe_loading.py, test_end_to_end.py", "logreg": "test_safe_loading.py, test_training_options.py",
    "hf_audio": "test_hf_audio.py"}


def test_every_registered_family_is_tested():
    """docs/contributing.md's step 4: a new family goes into ``FAMILIES`` (or, with tests of its
    own, ``TESTED_ELSEWHERE``); registered but in neither, it would go untested (probe)."""
    from lib.models import MODELS

    untested = set(MODELS.names()) - {name for name, _ in FAMILIES} - set(TESTED_ELSEWHERE)
    assert not untested, f"model families without a test: {sorted(untested)}: add them to FAMILIES"


def _manifest(shape, n_scalars):
    return {"spec_shape": list(shape), "n_scalars": n_scalars, "sample_rate": 16000}


@pytest.mark.parametrize("name,params", FAMILIES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FAMILIES)])
@pytest.mark.parametrize("shape,n_scalars", [((1, 64, 63), 0), ((3, 40, 101), 5), ((2, 32, 17), 2)])
def test_forward_shapes(name, params, shape, n_scalars):
    model = build_model({"name": name, "params": params}, _manifest(shape, n_scalars), n_outputs=4).eval()
    out = model(torch.randn(3, *shape), torch.randn(3, n_scalars))
    assert out["logits"].shape == (3, 4) and out["embedding"].shape[0] == 3
    assert torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("name,params", FAMILIES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FAMILIES)])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(name, params):
    torch.manual_seed(0)
    model = build_model({"name": name, "params": {**params, "dropout": 0.0}}, _manifest((1, 32, 40), 3), n_outputs=3)
    x, s, y = torch.randn(8, 1, 32, 40), torch.randn(8, 3), torch.arange(8) % 3
    opt = build_optimizer({"name": "adam", "params": {"lr": 1e-3}}, model.param_groups())
    losses = []
    for _ in range(4):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x, s)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        assert float(torch.nn.functional.cross_entropy(model(x, s)["logits"], y)) < losses[0]


def test_reference_sizes():
    one = _manifest((1, 64, 63), 0)
    assert 11.0e6 < count_parameters(build_model({"name": "resnet", "params": {}}, one, 2)) < 11.5e6  # ResNet18
    assert 21.1e6 < count_parameters(build_model({"name": "resnet", "params": {"depth": 34}}, one, 2)) < 21.6e6
    assert 1.6e6 < count_parameters(build_model({"name": "mini_resnet", "params": {}}, one, 2)) < 1.8e6
    mini = build_model({"name": "mini_resnet", "params": {}}, _manifest((1, 64, 63), 2), 6)
    assert mini.trunk[0].out_channels == 128 and mini.trunk[0].kernel_size == (7, 7)
    assert [m.out_features for m in mini.head if isinstance(m, torch.nn.Linear)] == [64, 32, 6]
    assert mini.head[1].in_features == 2 * 256 + 64  # pooled features joined with the metadata branch
    with pytest.raises(ConfigError, match="depth=50"):
        build_model({"name": "resnet", "params": {"depth": 50}}, one, 2)


# --- PANNs CNN14 ---------------------------------------------------------------------------------

WIDTHS = (1, 64, 128, 256, 512, 1024, 2048)


def panns_state_dict(sample_rate=32000, classes=527, seed=0) -> dict:
    """A state dict of PANNs' ``Cnn14`` (qiuqiangkong/audioset_tagging_cnn pytorch/models.py) written
    from its definition, not from our code: torchlibrosa front end, bn0, six ConvBlocks, fc1,
    fc_audioset; random weights, the real mel filterbank."""
    g = torch.Generator().manual_seed(seed)
    v = VARIANTS[sample_rate]
    n_bins = v["n_fft"] // 2 + 1

    def bn(prefix, c):
        return {f"{prefix}.weight": torch.rand(c, generator=g) + 0.5, f"{prefix}.bias": torch.randn(c, generator=g) * 0.1,
                f"{prefix}.running_mean": torch.randn(c, generator=g), f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(1000)}

    sd = {"spectrogram_extractor.stft.conv_real.weight": torch.randn(n_bins, 1, v["n_fft"], generator=g),
          "spectrogram_extractor.stft.conv_imag.weight": torch.randn(n_bins, 1, v["n_fft"], generator=g),
          "logmel_extractor.melW": torch.tensor(librosa.filters.mel(sr=sample_rate, n_fft=v["n_fft"], n_mels=64,
                                                                    fmin=v["fmin"], fmax=v["fmax"]).T),
          **bn("bn0", 64)}
    for i in range(1, 7):
        c_in, c = WIDTHS[i - 1], WIDTHS[i]
        sd[f"conv_block{i}.conv1.weight"] = torch.randn(c, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5
        sd[f"conv_block{i}.conv2.weight"] = torch.randn(c, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
        sd.update(bn(f"conv_block{i}.bn1", c) | bn(f"conv_block{i}.bn2", c))
    sd["fc1.weight"], sd["fc1.bias"] = torch.randn(2048, 2048, generator=g) * 0.02, torch.zeros(2048)
    sd["fc_audioset.weight"], sd["fc_audioset.bias"] = torch.randn(classes, 2048, generator=g) * 0.02, torch.zeros(classes)
    return sd


@pytest.fixture(scope="module")
def panns_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("panns") / "Cnn14_mAP=0.431.pth"
    sd = panns_state_dict()
    torch.save({"iteration": 660000, "model": sd}, path)  # the layout of PANNs' released checkpoints
    return path, sd


def _cnn14(params=None, sample_rate=32000, n_scalars=0):
    return build_model({"name": "cnn14", "params": params or {}},
                       {"kind": "waveform", "n_scalars": n_scalars, "sample_rate": sample_rate}, n_outputs=3)


def test_cnn14_names_match_panns(panns_checkpoint):
    _, sd = panns_checkpoint
    model = _cnn14()
    panns = {k for k in sd if not k.startswith(("spectrogram_extractor.", "logmel_extractor.", "fc_audioset."))}
    assert set(model.trunk.state_dict()) == panns
    assert all(model.trunk.state_dict()[k].shape == sd[k].shape for k in panns)
    assert 79.6e6 < count_parameters(model) < 79.8e6


def test_cnn14_loads_a_panns_checkpoint_and_hears_panns_log_mel(panns_checkpoint):
    path, sd = panns_checkpoint
    model = _cnn14({"pretrained": str(path)}, n_scalars=2).eval()
    for k, v in model.trunk.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    # the front end is PANNs' (torchlibrosa): reflect-padded Hann STFT, power, Slaney mel, 10 log10, no floor
    y = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    power = np.abs(librosa.stft(y, n_fft=1024, hop_length=320, window="hann", center=True, pad_mode="reflect")) ** 2
    ref = 10 * np.log10(np.maximum(sd["logmel_extractor.melW"].numpy().T @ power, 1e-10))
    ours = model.frontend(torch.from_numpy(y)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    out = model(torch.from_numpy(y)[None].repeat(2, 1), torch.randn(2, 2))
    assert out["logits"].shape == (2, 3) and out["embedding"].shape == (2, 2048 + 64)
    # prediction builds the architecture without the pretrained file (the fold checkpoint has the weights)
    again = build_model({"name": "cnn14", "params": {"pretrained": "/nowhere.pth"}},
                        {"kind": "waveform", "n_scalars": 2, "sample_rate": 32000}, 3, pretrained=False)
    again.load_state_dict(model.state_dict())


def test_cnn14_errors(panns_checkpoint, tmp_path):
    path, _ = panns_checkpoint
    with pytest.raises(ConfigError, match="Nothing is downloaded.*Cnn14_mAP=0.431.pth"):
        _cnn14({"pretrained": str(tmp_path / "missing.pth")})
    with pytest.raises(ConfigError, match="is not PANNs' 16000 Hz one"):  # the 32 kHz checkpoint on 16 kHz audio
        _cnn14({"pretrained": str(path)}, sample_rate=16000)
    with pytest.raises(ConfigError, match="32000 and 16000 Hz.*features.params.sample_rate"):
        _cnn14(sample_rate=22050)
    bad = tmp_path / "other.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ConfigError, match="not a PANNs Cnn14 checkpoint"):
        _cnn14({"pretrained": str(bad)})
    narrow = tmp_path / "Cnn10_like.pth"  # PANNs' format, tensors of other shapes (a RuntimeError traceback before)
    torch.save({"model": {"fc1.weight": torch.zeros(512, 512), "fc1.bias": torch.zeros(512)}}, narrow)
    with pytest.raises(ConfigError, match=r"Cnn10_like.pth: not a PANNs Cnn14 checkpoint: size mismatch for fc1"):
        _cnn14({"pretrained": str(narrow)})
    with pytest.raises(ConfigError, match="own front end"):
        build_model({"name": "cnn14", "params": {}}, {"spec_shape": [1, 64, 101], "n_scalars": 0, "sample_rate": 32000}, 2)


def test_cnn14_freezing_and_learning_rate_groups(panns_checkpoint):
    path, _ = panns_checkpoint
    model = _cnn14({"pretrained": str(path), "freeze_blocks": 2, "backbone_lr": 0.1, "layer_decay": 0.5})
    frozen = [model.trunk.bn0, model.trunk.conv_block1, model.trunk.conv_block2]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.trunk.conv_block3.parameters())
    model.train()
    assert not any(m.training for m in frozen) and model.trunk.conv_block3.training
    opt = build_optimizer({"name": "adamw", "params": {"lr": 1e-3}}, model.param_groups())
    lrs = [g["lr"] for g in opt.param_groups]  # conv_block3..6, fc1 (5 pretrained parts left), then the head
    np.testing.assert_allclose(lrs, [1e-4 * 0.5 ** k for k in (4, 3, 2, 1, 0)] + [1e-3])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


# --- timm ----------------------------------------------------------------------------------------

def test_timm_loads_a_local_file_for_any_channel_count(tmp_path):
    import timm

    ref = timm.create_model("resnet10t", num_classes=1000)
    path = tmp_path / "resnet10t.pth"
    torch.save(ref.state_dict(), path)
    rgb = ref.state_dict()
    for channels in (3, 1):
        model = build_model({"name": "timm", "params": {"arch": "resnet10t", "pretrained": str(path)}},
                            _manifest((channels, 64, 63), 0), 2)
        sd = model.trunk.backbone.state_dict()
        torch.testing.assert_close(sd["layer4.0.conv2.weight"], rgb["layer4.0.conv2.weight"], rtol=0, atol=0)
        stem = rgb["conv1.0.weight"]
        expected = stem if channels == 3 else stem.sum(dim=1, keepdim=True)  # timm's adapt_input_conv
        torch.testing.assert_close(sd["conv1.0.weight"], expected)
        assert "fc.weight" not in sd
    frozen = build_model({"name": "timm", "params": {"arch": "resnet10t", "freeze_blocks": 1, "backbone_lr": 0.5}},
                         _manifest((1, 64, 63), 0), 2)
    assert not any(p.requires_grad for p in frozen.trunk.backbone.conv1.parameters())
    assert all(p.requires_grad for p in frozen.trunk.backbone.layer1.parameters())
    scales = [g["lr_scale"] for g in frozen.param_groups()]
    assert scales == [0.5] * (len(scales) - 1) + [1.0]


def test_timm_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown timm architecture 'efficientnet_b9x'.*did you mean"):
        build_model({"name": "timm", "params": {"arch": "efficientnet_b9x"}}, _manifest((1, 64, 63), 0), 2)
    with pytest.raises(ConfigError, match="Nothing is downloaded"):
        build_model({"name": "timm", "params": {"arch": "resnet10t", "pretrained": str(tmp_path / "no.pth")}},
                    _manifest((1, 64, 63), 0), 2)
    # weights timm cannot load (another network's; a truncated file) and an architecture that gives
    # no feature map were tracebacks, the last at the first training step
    import timm

    other = tmp_path / "efficientnet.pth"
    torch.save(timm.create_model("efficientnet_b0", num_classes=0).state_dict(), other)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(other.read_bytes()[:5000])
    for path in (other, truncated):
        with pytest.raises(ConfigError, match=f"model.params.pretrained: {path}: not weights timm can load into resnet10t"):
            build_model({"name": "timm", "params": {"arch": "resnet10t", "pretrained": str(path)}},
                        _manifest((1, 64, 63), 0), 2)
    vit = {"name": "timm", "params": {"arch": "vit_tiny_patch16_224"}}
    with pytest.raises(ConfigError, match=r"model.params.arch: timm 'vit_tiny_patch16_224' returns \(1, 17, 192\)"):
        build_model({**vit, "params": {**vit["params"], "model_args": {"dynamic_img_size": True}}},
                    _manifest((1, 64, 63), 0), 2)
    fixed = build_model(vit, _manifest((1, 64, 63), 0), 2)  # fixed 224 x 224: said at the first batch
    with pytest.raises(ConfigError, match=r"timm 'vit_tiny_patch16_224' cannot take a spectrogram of \(64, 63\)"):
        fixed(torch.zeros(2, 1, 64, 63))


@pytest.mark.parametrize("name,params", [FAMILIES[2], FAMILIES[4], FAMILIES[5], FAMILIES[7]],
                         ids=["resnet", "mini_resnet", "wavenet", "timm"])
def test_families_hear_the_waveform_through_a_front_end(name, params):
    frontend = {"name": "log_mel", "params": {"n_mels": 32, "n_fft": 256, "hop_length": 128, "deltas": True}}
    model = build_model({"name": name, "params": params}, {"kind": "waveform", "n_scalars": 2, "sample_rate": 8000},
                        n_outputs=3, frontend=frontend).eval()
    assert model.frontend.channels == 3
    out = model(torch.randn(2, 8000), torch.randn(2, 2))
    assert out["logits"].shape == (2, 3) and torch.isfinite(out["logits"]).all()
